//! The analysed form of a query: its content tokens (which must match exactly) and its
//! unigram/bigram features (compared by cosine). Pure.

use std::hash::{Hash, Hasher};

use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

use super::lexicon::{
    apostrophe_less, cjk_numerals_to_digits, en_number, CJK_FILLERS, EN_FILLERS, EN_FUNCTION,
    JA_NEGATIONS, LEADING, TRAILING, ZH_FUNCTION,
};

/// The analysed form of one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Order-independent identity of the content tokens (sorted, deduplicated): the index bucket.
    pub content: Vec<String>,
    /// The content tokens in order: two queries match only when these are equal, so a differing
    /// or swapped entity, number, negation or pronoun never matches.
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

impl Shape {
    /// Approximate heap size, for the index's byte weigher.
    pub fn heap_bytes(&self) -> usize {
        let strings = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        strings(&self.content) + strings(&self.sequence) + self.features.len() * 8
    }

    /// Analyses a query already normalised by `normalize_query`.
    pub fn of(normalized: &str) -> Shape {
        let text = cjk_numerals_to_digits(normalized);
        let mut tokens: Vec<(String, Class)> = Vec::new();
        for negation in JA_NEGATIONS {
            let count = text.matches(negation).count();
            if count > 0 {
                tokens.push((format!("<{negation}×{count}>"), Class::Content));
            }
        }
        for segment in text.split([',', '、', '。', '?', '!', ';', ':']) {
            for word in strip_frames(segment).split_whitespace() {
                tokenize_word(word, &mut tokens);
            }
        }
        let mut kept: Vec<(String, Class)> = tokens
            .into_iter()
            .filter(|(_, c)| *c != Class::Filler)
            .collect();
        collapse_repeats(&mut kept);
        let sequence: Vec<String> = kept
            .iter()
            .filter(|(_, c)| *c == Class::Content)
            .map(|(t, _)| t.clone())
            .collect();
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

    /// The terms a text is found by (`mirror/rank.rs`): its content tokens, and each pair of
    /// adjacent ones (so `黑猫` is found by `黑猫`, not only by `黑` and `猫`).
    pub fn terms(&self) -> Vec<String> {
        let mut terms = self.content.clone();
        terms.extend(
            self.sequence
                .windows(2)
                .map(|pair| format!("{} {}", pair[0], pair[1])),
        );
        terms.sort_unstable();
        terms.dedup();
        terms
    }

    /// Similarity in [0, 1]: 0 when the content tokens differ (a different question), else the
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

/// Cuts request frames and hesitations from both ends of a segment, repeatedly.
fn strip_frames(segment: &str) -> &str {
    let mut s = segment.trim();
    loop {
        let before = s;
        for frame in LEADING {
            if let Some(rest) = s.strip_prefix(frame) {
                if is_boundary(frame, rest.chars().next()) {
                    s = rest.trim_start();
                    break;
                }
            }
        }
        for frame in TRAILING {
            if let Some(rest) = s.strip_suffix(frame) {
                if is_boundary(frame, rest.chars().next_back()) {
                    s = rest.trim_end();
                    break;
                }
            }
        }
        if s == before {
            return s;
        }
    }
}

/// A Latin frame must end at a word boundary ("tell me" is not a prefix of "tell meg").
fn is_boundary(frame: &str, next: Option<char>) -> bool {
    !frame.is_ascii() || next.is_none_or(|c| !c.is_ascii_alphanumeric())
}

fn tokenize_word(word: &str, out: &mut Vec<(String, Class)>) {
    let mut latin = String::new();
    for c in word.chars() {
        if is_cjk(c) {
            flush_latin(&mut latin, out);
            out.push((c.to_string(), cjk_class(c)));
        } else if c.is_ascii_digit() {
            // Digits are their own run: 5月12号 → 5 月 12 号, 12th stays whole below.
            if latin.chars().last().is_some_and(|l| !l.is_ascii_digit()) {
                flush_latin(&mut latin, out);
            }
            latin.push(c);
        } else if c.is_alphanumeric() || matches!(c, '\'' | '’' | '.') {
            latin.push(if c == '’' { '\'' } else { c });
        } else if is_symbol(c) {
            // + - # $ % and emoji can change the question: each is content.
            flush_latin(&mut latin, out);
            out.push((c.to_string(), Class::Content));
        } else {
            flush_latin(&mut latin, out);
        }
    }
    flush_latin(&mut latin, out);
}

/// Ends a Latin/digit run: trims edge punctuation, expands contractions, classifies.
fn flush_latin(run: &mut String, out: &mut Vec<(String, Class)>) {
    let taken = std::mem::take(run);
    let word = taken.trim_matches(['\'', '.']);
    if word.is_empty() {
        return;
    }
    let word = apostrophe_less(word).unwrap_or(word);
    for part in expand_contraction(word) {
        let part = en_number(&part).map_or(part, |n| n.to_string());
        let class = latin_class(&part);
        out.push((part, class));
    }
}

/// `what's` → what, `don't` → do not, `cat's` → cat, `i'm` → i am …
fn expand_contraction(word: &str) -> Vec<String> {
    let split = |stem: &str, tail: &str| vec![stem.to_owned(), tail.to_owned()];
    match word {
        "can't" | "cannot" => return split("can", "not"),
        "won't" => return split("will", "not"),
        "shan't" => return split("shall", "not"),
        _ => {}
    }
    if let Some(stem) = word.strip_suffix("n't") {
        return split(stem, "not");
    }
    for (suffix, expansion) in [
        ("'re", "are"),
        ("'ve", "have"),
        ("'ll", "will"),
        ("'d", "would"),
        ("'m", "am"),
    ] {
        if let Some(stem) = word.strip_suffix(suffix) {
            return split(stem, expansion);
        }
    }
    // 's is "is" (a filler) or a possessive: either way only the stem matters.
    match word.strip_suffix("'s").or_else(|| word.strip_suffix("s'")) {
        Some(stem) => vec![stem.to_owned()],
        None => vec![word.to_owned()],
    }
}

fn latin_class(word: &str) -> Class {
    if EN_FILLERS.contains(&word) {
        Class::Filler
    } else if EN_FUNCTION.contains(&word) {
        Class::Function
    } else {
        Class::Content
    }
}

fn cjk_class(c: char) -> Class {
    if CJK_FILLERS.contains(&c) {
        Class::Filler
    } else if ZH_FUNCTION.contains(&c) || is_hiragana(c) {
        Class::Function
    } else {
        Class::Content
    }
}

/// Removes immediate repetitions of 1–4 tokens ("今天今天天气", "my my cat", "几点几点").
fn collapse_repeats(tokens: &mut Vec<(String, Class)>) {
    for width in 1..=4 {
        let mut i = 0;
        while i + 2 * width <= tokens.len() {
            if tokens[i..i + width] == tokens[i + width..i + 2 * width] {
                tokens.drain(i + width..i + 2 * width);
            } else {
                i += 1;
            }
        }
    }
}

fn is_symbol(c: char) -> bool {
    if c.is_ascii() {
        return matches!(
            c,
            '+' | '-' | '#' | '$' | '%' | '&' | '*' | '/' | '=' | '@' | '<' | '>' | '^' | '|'
        );
    }
    c.general_category_group() == GeneralCategoryGroup::Symbol
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
    // A fixed hasher: features are only compared with each other in this process.
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

#[cfg(test)]
mod tests {
    use super::super::similarity;

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
            ("do I like 🐱", "do I like 🐶"),
            ("um what about C++", "what about C"),
            ("is it -5 degrees", "is it 5 degrees"),
        ];
        for (a, b) in different {
            assert!(similarity(a, b) < 0.9, "{a} / {b}: {}", similarity(a, b));
        }
    }
}
