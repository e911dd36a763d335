//! Near-duplicate queries: answer a re-worded repeat from the cache, never a different question.
//!
//! Works for Chinese, Japanese and English without embeddings or models. A normalised query
//! (`normalize.rs`) is cut into tokens (Latin words with contractions expanded and possessives
//! dropped, single CJK characters, digit runs) and each token gets a class:
//!
//! - **filler**: ASR and chat noise that never changes the question (um, uh, please / 呀 啊 呢 吧
//!   嘛 哦 啦 嗯 呃 的 了 吗 / えっと あの まあ); dropped;
//! - **function**: words that shape a sentence but carry no entity (is, the, do, of / 是 / the
//!   hiragana of Japanese particles and endings); kept for similarity, free to differ;
//! - **content**: everything else, including negations (不 没 沒 別 别 ない ません not never no),
//!   numbers (digits, 一二三…, one two three…) and person pronouns (我 你 I you my your 私 あなた).
//!
//! Two queries can match only when their **content tokens are equal, in order** (the guard: a
//! differing or swapped entity, number, negation or pronoun never matches, however close the
//! strings), and then when the cosine similarity of their token unigrams and bigrams reaches the
//! threshold (function words). Because candidates must share the content set, the index is a hash map
//! from (scope, route, parameters, content set) to a short list of cached queries: a lookup costs
//! one hash probe and a few set comparisons, whatever the number of cached queries.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use quick_cache::sync::Cache;

use super::key::CacheKey;
use super::normalize::normalize_query;

/// Most cached queries remembered per (scope, route, parameters, content set).
const BUCKET_CAPACITY: usize = 8;

/// The analysed form of one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Order-independent identity of the content tokens (sorted, deduplicated): the index bucket.
    pub content: Vec<String>,
    /// The content tokens in order (an immediately repeated token, "my my cat", counted once):
    /// two queries match only when these are equal, so swapped entities never match.
    sequence: Vec<String>,
    /// Sorted, deduplicated hashes of unigram and bigram features.
    features: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Filler,
    Function,
    Content,
}

const EN_FILLERS: &[&str] = &[
    "um",
    "umm",
    "uh",
    "uhh",
    "uhm",
    "er",
    "erm",
    "hmm",
    "hm",
    "mm",
    "ah",
    "oh",
    "eh",
    "hey",
    "please",
    "ok",
    "okay",
    "well",
    "so",
    "like",
    "just",
    "actually",
    "basically",
    "anyway",
    "a",
    "an",
    "the",
];
const EN_FUNCTION: &[&str] = &[
    "is", "are", "am", "was", "were", "be", "been", "do", "does", "did", "of", "to", "in", "on",
    "at", "for", "with", "about", "can", "could", "would", "will", "tell", "know", "remember",
    "that", "it", "there", "again",
];
const EN_NUMBERS: &[&str] = &[
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "first", "second", "third", "once", "twice", "half", "dozen", "hundred",
    "thousand",
];
const ZH_FILLERS: &[char] = &[
    '呀', '啊', '呢', '吧', '嘛', '哦', '啦', '嗯', '呃', '哈', '哎', '诶', '欸', '喔', '噢', '呗',
    '咯', '哟', '的', '了', '吗',
];
const ZH_FUNCTION: &[char] = &['是', '请', '就', '都', '也', '还', '在'];
/// Japanese hesitation words, removed before tokenising.
const JA_FILLERS: &[&str] = &[
    "えっと",
    "ええと",
    "えーと",
    "えーっと",
    "あのー",
    "あの",
    "そのー",
    "まあ",
    "なんか",
];
/// Japanese negation endings; their presence is a content token of its own.
const JA_NEGATIONS: &[&str] = &["ない", "ません", "なかった", "ず", "ぬ"];

impl Shape {
    /// Analyses a query already normalised by [`normalize_query`].
    pub fn of(normalized: &str) -> Shape {
        let mut text = normalized.to_owned();
        for filler in JA_FILLERS {
            text = text.replace(filler, " ");
        }
        let mut tokens: Vec<(String, Class)> = Vec::new();
        if JA_NEGATIONS.iter().any(|n| text.contains(n)) {
            tokens.push(("<ja-negation>".to_owned(), Class::Content));
        }
        for word in text.split_whitespace() {
            tokenize_word(word, &mut tokens);
        }
        let kept: Vec<&(String, Class)> =
            tokens.iter().filter(|(_, c)| *c != Class::Filler).collect();
        let mut sequence: Vec<String> = kept
            .iter()
            .filter(|(_, c)| *c == Class::Content)
            .map(|(t, _)| t.clone())
            .collect();
        sequence.dedup();
        let mut content = sequence.clone();
        content.sort_unstable();
        content.dedup();
        let mut features: Vec<u64> = kept.iter().map(|(t, _)| feature(&[t])).collect();
        features.extend(
            kept.windows(2)
                .map(|pair| feature(&[&pair[0].0, &pair[1].0])),
        );
        features.sort_unstable();
        features.dedup();
        Shape {
            content,
            sequence,
            features,
        }
    }

    /// Similarity in [0, 1]: 0 when the content tokens differ (different meaning), else the
    /// cosine of the feature sets.
    pub fn similarity(&self, other: &Shape) -> f64 {
        if self.sequence != other.sequence {
            return 0.0;
        }
        if self.features.is_empty() || other.features.is_empty() {
            return f64::from(u8::from(self.features == other.features));
        }
        let common = intersection_size(&self.features, &other.features);
        common as f64 / ((self.features.len() * other.features.len()) as f64).sqrt()
    }
}

/// Similarity of two raw queries as the proxy judges them (1.0 when they normalise alike).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (normalize_query(a), normalize_query(b));
    if a == b {
        return 1.0;
    }
    Shape::of(&a).similarity(&Shape::of(&b))
}

fn tokenize_word(word: &str, out: &mut Vec<(String, Class)>) {
    let mut latin = String::new();
    for c in word.chars() {
        if is_cjk(c) {
            flush_latin(&mut latin, out);
            out.push((c.to_string(), cjk_class(c)));
        } else if c.is_alphanumeric() || c == '\'' || c == '’' || c == '.' || c == ',' {
            latin.push(if c == '’' { '\'' } else { c });
        } else {
            flush_latin(&mut latin, out);
        }
    }
    flush_latin(&mut latin, out);
}

/// Ends a Latin/digit run: trims edge punctuation, expands contractions, classifies.
fn flush_latin(run: &mut String, out: &mut Vec<(String, Class)>) {
    let word = std::mem::take(run);
    let word = word.trim_matches(|c: char| c == '\'' || c == '.' || c == ',');
    if word.is_empty() {
        return;
    }
    for part in expand_contraction(word) {
        let class = latin_class(&part);
        out.push((part, class));
    }
}

/// `what's` → what is, `don't` → do not, `cat's` → cat, `i'm` → i am …
fn expand_contraction(word: &str) -> Vec<String> {
    const IS_BEFORE: &[&str] = &[
        "what", "that", "it", "he", "she", "there", "who", "where", "how", "here", "when", "why",
    ];
    let special = match word {
        "can't" | "cannot" => Some(["can", "not"]),
        "won't" => Some(["will", "not"]),
        "shan't" => Some(["shall", "not"]),
        _ => None,
    };
    if let Some(parts) = special {
        return parts.iter().map(|p| (*p).to_owned()).collect();
    }
    if let Some(stem) = word.strip_suffix("n't") {
        return vec![stem.to_owned(), "not".to_owned()];
    }
    for (suffix, expansion) in [
        ("'re", "are"),
        ("'ve", "have"),
        ("'ll", "will"),
        ("'d", "would"),
        ("'m", "am"),
    ] {
        if let Some(stem) = word.strip_suffix(suffix) {
            return vec![stem.to_owned(), expansion.to_owned()];
        }
    }
    if let Some(stem) = word.strip_suffix("'s").or_else(|| word.strip_suffix("s'")) {
        return if IS_BEFORE.contains(&stem) {
            vec![stem.to_owned(), "is".to_owned()]
        } else {
            vec![stem.to_owned()]
        };
    }
    vec![word.to_owned()]
}

fn latin_class(word: &str) -> Class {
    if EN_FILLERS.contains(&word) {
        Class::Filler
    } else if EN_FUNCTION.contains(&word) && !EN_NUMBERS.contains(&word) {
        Class::Function
    } else {
        Class::Content
    }
}

fn cjk_class(c: char) -> Class {
    if ZH_FILLERS.contains(&c) {
        Class::Filler
    } else if ZH_FUNCTION.contains(&c) || is_hiragana(c) {
        Class::Function
    } else {
        Class::Content
    }
}

fn is_hiragana(c: char) -> bool {
    ('\u{3041}'..='\u{309f}').contains(&c)
}

fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30ff}'   // hiragana, katakana
        | '\u{3400}'..='\u{4dbf}' // CJK extension A
        | '\u{4e00}'..='\u{9fff}' // CJK unified ideographs
        | '\u{f900}'..='\u{faff}' // compatibility ideographs
        | '\u{ac00}'..='\u{d7af}' // hangul syllables
    )
}

fn feature(tokens: &[&String]) -> u64 {
    // A fixed hasher: features are compared across calls, never exposed.
    let mut h = std::hash::DefaultHasher::new();
    tokens.hash(&mut h);
    h.finish()
}

fn intersection_size(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// One cached query that later near-duplicates may be answered from.
#[derive(Debug, Clone)]
struct Candidate {
    key: CacheKey,
    shape: Arc<Shape>,
}

/// The near-duplicate index: (scope, route, parameters, content set) → recent cached queries.
/// Bounded: at most `capacity` buckets of at most [`BUCKET_CAPACITY`] queries each.
pub struct SimilarIndex {
    buckets: Cache<u64, Arc<[Candidate]>>,
    hasher: RandomState,
}

impl SimilarIndex {
    pub fn new(capacity: usize) -> Self {
        Self {
            buckets: Cache::new(capacity.max(16)),
            hasher: RandomState::new(),
        }
    }

    /// The bucket of `key` given its query's shape: every part of the key but the query text,
    /// plus the content set.
    fn bucket(&self, key: &CacheKey, shape: &Shape) -> u64 {
        self.hasher.hash_one((
            key.route,
            &key.path_and_query,
            &key.scope,
            &key.params,
            &shape.content,
        ))
    }

    /// Remembers a stored answer's key as a candidate for near-duplicates.
    pub fn insert(&self, key: &CacheKey) {
        let Some(query) = key.query.as_deref() else {
            return;
        };
        let shape = Shape::of(query);
        let bucket = self.bucket(key, &shape);
        let mut candidates: Vec<Candidate> = self
            .buckets
            .get(&bucket)
            .map(|c| c.iter().filter(|c| c.key != *key).cloned().collect())
            .unwrap_or_default();
        if candidates.len() >= BUCKET_CAPACITY {
            candidates.remove(0);
        }
        candidates.push(Candidate {
            key: key.clone(),
            shape: Arc::new(shape),
        });
        self.buckets.insert(bucket, candidates.into());
    }

    /// The keys of cached queries at least `threshold` similar to `key`'s, best first.
    pub fn find(&self, key: &CacheKey, threshold: f64) -> Vec<CacheKey> {
        let Some(query) = key.query.as_deref() else {
            return Vec::new();
        };
        let shape = Shape::of(query);
        let Some(candidates) = self.buckets.get(&self.bucket(key, &shape)) else {
            return Vec::new();
        };
        let mut scored: Vec<(f64, &Candidate)> = candidates
            .iter()
            .filter(|c| c.key != *key)
            .map(|c| (shape.similarity(&c.shape), c))
            .filter(|(score, _)| *score >= threshold)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, c)| c.key.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::read_key;
    use crate::routes::ReadRoute;

    #[test]
    fn near_duplicates_score_high() {
        let same: &[(&str, &str)] = &[
            ("今天天气怎么样", "今天天气怎么样呀"),
            ("what's my cat's name", "what is my cat's name?"),
            ("嗯，我的猫叫什么名字", "我的猫叫什么名字"),
            ("明天的天气", "明天天气"),
            ("um what's my cat's name", "what's my cat's name"),
            (
                "えっと、私の好きな食べ物は何ですか",
                "私の好きな食べ物は何ですか",
            ),
            ("I don't like coffee", "I do not like coffee"),
        ];
        for (a, b) in same {
            assert!(similarity(a, b) >= 0.9, "{a} / {b}: {}", similarity(a, b));
        }
    }

    #[test]
    fn different_meanings_never_match() {
        let different: &[(&str, &str)] = &[
            ("我喜欢猫", "我不喜欢猫"),
            ("我喜欢猫", "我没喜欢猫"),
            ("I like coffee", "I don't like coffee"),
            ("I like coffee", "I never like coffee"),
            ("猫が好きです", "猫が好きではない"),
            ("猫が好きです", "猫が好きじゃありません"),
            ("3点开会", "4点开会"),
            ("I have two cats", "I have three cats"),
            ("meeting at 10", "meeting at 11"),
            ("我的猫叫什么名字", "你的猫叫什么名字"),
            ("what's my cat's name", "what's your cat's name"),
            ("私の名前は何ですか", "あなたの名前は何ですか"),
            (
                "我昨天在公园里看到了一只很可爱的小猫",
                "我昨天在公园里看到了一只很可爱的小狗",
            ),
            (
                "what did I eat for dinner yesterday with my sister at home",
                "what did I eat for lunch yesterday with my sister at home",
            ),
            ("我喜欢猫不喜欢狗", "我喜欢狗不喜欢猫"),
        ];
        for (a, b) in different {
            assert!(similarity(a, b) < 0.9, "{a} / {b}: {}", similarity(a, b));
        }
    }

    fn key(query: &str) -> CacheKey {
        let body = serde_json::json!({"user_id": "u", "agent_id": "a", "query": query, "top_k": 3});
        read_key(
            ReadRoute::RelatedMemoryItems,
            "/p",
            None,
            body.to_string().as_bytes(),
        )
        .unwrap()
        .key
    }

    #[test]
    fn the_index_finds_near_duplicates_within_the_same_scope_and_parameters_only() {
        let index = SimilarIndex::new(1000);
        index.insert(&key("今天天气怎么样"));
        assert_eq!(
            index.find(&key("今天天气怎么样呀"), 0.9),
            vec![key("今天天气怎么样")]
        );
        assert!(index.find(&key("明天天气怎么样呀"), 0.9).is_empty());
        let other_user = serde_json::json!({"user_id": "v", "agent_id": "a", "query": "今天天气怎么样呀", "top_k": 3});
        let other_user = read_key(
            ReadRoute::RelatedMemoryItems,
            "/p",
            None,
            other_user.to_string().as_bytes(),
        )
        .unwrap()
        .key;
        assert!(index.find(&other_user, 0.9).is_empty());
        let other_top_k = serde_json::json!({"user_id": "u", "agent_id": "a", "query": "今天天气怎么样呀", "top_k": 4});
        let other_top_k = read_key(
            ReadRoute::RelatedMemoryItems,
            "/p",
            None,
            other_top_k.to_string().as_bytes(),
        )
        .unwrap()
        .key;
        assert!(index.find(&other_top_k, 0.9).is_empty());
    }

    #[test]
    fn buckets_stay_bounded() {
        let index = SimilarIndex::new(16);
        for i in 0..1000 {
            index.insert(&key(&format!("question number {i}")));
        }
        assert!(index.len() <= 16 * 2, "{}", index.len());
    }
}
