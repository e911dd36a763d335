//! Word lists and small text rules for the near-duplicate judgement. Data, not logic: every list
//! says what may differ between two queries without changing what they ask.

/// Request frames and hesitations cut from the start of a segment (checked longest first).
pub const LEADING: &[&str] = &[
    // English request frames.
    "can you please tell me",
    "could you please tell me",
    "can you tell me",
    "could you tell me",
    "can you remind me",
    "could you remind me",
    "please tell me",
    "tell me",
    "remind me",
    "do you know",
    "do you remember",
    "can you remember",
    "you know",
    "i wonder",
    "remember",
    "um",
    "uh",
    "so",
    "like",
    "well",
    // Chinese request frames and hesitations.
    "你还记得",
    "你记得",
    "你能告诉我",
    "你可以告诉我",
    "能告诉我",
    "可以告诉我",
    "请告诉我",
    "告诉我",
    "请问",
    "你知道",
    "那个",
    "就是",
    "然后",
    "记得",
    "呃",
    "嗯",
    "啊",
    // Japanese hesitations.
    "えーっと",
    "えっと",
    "ええと",
    "えーと",
    "あのー",
    "あの",
    "そのー",
    "まあ",
    "なんか",
    "うーん",
    "うん",
];

/// Frames and endings cut from the end of a segment (checked longest first).
pub const TRAILING: &[&str] = &[
    "can you remember",
    "do you remember",
    "do you know",
    "you know",
    "right",
    "please",
    "again",
    "你还记得吗",
    "你记得吗",
    "来着",
    "か教えてください",
    "を教えてください",
    "教えてください",
    "か教えて",
    "を教えて",
    "教えて",
    "か覚えてる",
    "って覚えてますか",
    "って覚えてる",
    "を覚えてる",
    "覚えてますか",
    "覚えてる",
    "か知ってる",
    "でしたっけ",
    "だったっけ",
    "だっけ",
    "っけ",
    "ですか",
    "ですね",
    "かな",
    "よね",
    "ですかね",
    "かね",
    "覚えて",
];

/// English words that never change the question.
pub const EN_FILLERS: &[&str] = &[
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
    "just",
    "actually",
    "basically",
    "anyway",
    "a",
    "an",
    "the",
    "is",
    "are",
    "am",
    "be",
    "do",
    "does",
    "did",
];

/// English words that shape a sentence but name nothing.
pub const EN_FUNCTION: &[&str] = &[
    "was", "were", "been", "of", "to", "in", "on", "at", "for", "with", "about", "can", "could",
    "would", "will", "that", "it", "there", "again", "like",
];

/// Chinese and Japanese single characters that never change the question.
pub const CJK_FILLERS: &[char] = &[
    '呀', '啊', '呢', '吧', '嘛', '哦', '啦', '嗯', '呃', '哈', '哎', '诶', '欸', '喔', '噢', '呗',
    '咯', '哟', '的', '了', '吗', // Japanese particles an ASR engine drops or swaps.
    'は', 'を', 'が', 'も', 'の', 'ね', 'よ', 'か',
];

/// Chinese characters that shape a sentence but name nothing.
pub const ZH_FUNCTION: &[char] = &['是', '请', '就', '都', '也', '还', '在'];

/// Japanese negative endings; each occurrence is a content token, so a negation never matches.
pub const JA_NEGATIONS: &[&str] = &["なかった", "ない", "ません"];

/// English number words, as digits.
pub fn en_number(word: &str) -> Option<u32> {
    const CARDINALS: &[&str] = &[
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    const ORDINALS: &[&str] = &[
        "zeroth",
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
        "ninth",
        "tenth",
        "eleventh",
        "twelfth",
        "thirteenth",
        "fourteenth",
        "fifteenth",
        "sixteenth",
        "seventeenth",
        "eighteenth",
        "nineteenth",
        "twentieth",
    ];
    if let Some(n) = CARDINALS.iter().chain(ORDINALS).position(|w| *w == word) {
        return Some((n % CARDINALS.len()) as u32);
    }
    // 12th, 1st, 2nd, 3rd.
    let digits = word
        .strip_suffix("th")
        .or_else(|| word.strip_suffix("st"))
        .or_else(|| word.strip_suffix("nd"))
        .or_else(|| word.strip_suffix("rd"))?;
    digits.parse().ok()
}

/// Rewrites runs of Chinese/Japanese numerals as digits: 三点 → 3点, 五月十二号 → 5月12号.
pub fn cjk_numerals_to_digits(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once('\0')) {
        if cjk_digit(c).is_some() || matches!(c, '十' | '百' | '千') {
            run.push(c);
            continue;
        }
        if !run.is_empty() {
            match parse_cjk_number(&run) {
                Some(n) => out.push_str(&n.to_string()),
                None => out.push_str(&run),
            }
            run.clear();
        }
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

fn cjk_digit(c: char) -> Option<u32> {
    "零一二三四五六七八九"
        .chars()
        .position(|d| d == c)
        .map(|n| n as u32)
        .or(match c {
            '〇' => Some(0),
            '两' => Some(2),
            _ => None,
        })
}

/// 十二 → 12, 二十 → 20, 一百零五 → 105, 三 → 3; digit strings 一九 → 19. `None` if malformed.
fn parse_cjk_number(run: &str) -> Option<u32> {
    let chars: Vec<char> = run.chars().collect();
    if chars.iter().all(|c| cjk_digit(*c).is_some()) {
        return chars
            .iter()
            .try_fold(0u32, |n, c| n.checked_mul(10)?.checked_add(cjk_digit(*c)?));
    }
    let (mut total, mut digit) = (0u32, None::<u32>);
    for c in chars {
        let unit = match c {
            '十' => 10,
            '百' => 100,
            '千' => 1000,
            _ => {
                digit = Some(cjk_digit(c)?);
                continue;
            }
        };
        total += digit.take().unwrap_or(1) * unit;
    }
    Some(total + digit.unwrap_or(0))
}

/// Words written without their apostrophe by chat users and ASR.
pub fn apostrophe_less(word: &str) -> Option<&'static str> {
    Some(match word {
        "whats" => "what's",
        "hows" => "how's",
        "wheres" => "where's",
        "whos" => "who's",
        "thats" => "that's",
        "dont" => "don't",
        "doesnt" => "doesn't",
        "didnt" => "didn't",
        "isnt" => "isn't",
        "arent" => "aren't",
        "wasnt" => "wasn't",
        "cant" => "can't",
        "wont" => "won't",
        "im" => "i'm",
        "ive" => "i've",
        "youre" => "you're",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerals_become_digits() {
        for (text, want) in [
            ("三点", "3点"),
            ("五月十二号", "5月12号"),
            ("二十岁", "20岁"),
            ("一百零五", "105"),
            ("十", "10"),
            ("两只猫", "2只猫"),
            ("午後三時", "午後3時"),
            ("没有", "没有"),
        ] {
            assert_eq!(cjk_numerals_to_digits(text), want, "{text}");
        }
        assert_eq!(en_number("three"), Some(3));
        assert_eq!(en_number("twelfth"), Some(12));
        assert_eq!(en_number("12th"), Some(12));
        assert_eq!(en_number("cat"), None);
    }
}
