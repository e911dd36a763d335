//! Query normalisation: the text part of a cache key.
//!
//! Two queries that differ only in Unicode form, case, white space, or sentence punctuation at the
//! edges of words are the same question: `"Hello,  World!"` ≡ `"hello world"`, `"你好！"` ≡
//! `"你好"`, `"好吗～"` ≡ `"好吗"`. Words and digits are kept (`"3点"` ≠ `"4点"`), and so is
//! punctuation *inside* a word (`"what's"`, `"3.5"`) and every symbol that can carry meaning
//! (`"C++"` ≠ `"C"`, `"-5"` ≠ `"5"`, `"50%"`, `"🐱"` ≠ `"🐶"`). Pure; no allocation beyond the
//! result.

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// Returns the normalised form of a retrieval query: NFKC, case folded, words separated by one
/// space, and sentence punctuation, quotes, brackets and invisible format characters removed at
/// both ends of each word.
pub fn normalize_query(raw: &str) -> String {
    let folded: String = if raw.is_ascii() {
        raw.to_ascii_lowercase()
    } else {
        // NFKC first (full-width forms to ASCII, compatibility characters to their base), then
        // full case folding, then NFKC again because folding can denormalise (NFKC_Casefold).
        raw.nfkc().default_case_fold().nfkc().collect()
    };
    let mut out = String::with_capacity(folded.len());
    for word in folded
        .split(is_separator)
        .map(|w| w.trim_matches(is_edge_noise))
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace()
}

/// Sentence punctuation, quotes, brackets, the wave dash and format characters (zero-width space,
/// BOM…). Not symbols: `+ - # $ % & * / = @` and emoji can change the question.
fn is_edge_noise(c: char) -> bool {
    if c.is_ascii() {
        return matches!(
            c,
            '!' | '"'
                | '\''
                | '('
                | ')'
                | ','
                | '.'
                | ':'
                | ';'
                | '?'
                | '['
                | ']'
                | '{'
                | '}'
                | '~'
                | '`'
        ) || c.is_ascii_control();
    }
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Punctuation | GeneralCategoryGroup::Other
    )
}

#[cfg(test)]
mod tests {
    use super::normalize_query;

    #[test]
    fn equivalent_queries_normalise_alike() {
        let same: &[(&str, &str)] = &[
            ("Hello,  World!", "hello world"),
            ("  hello\tworld\n", "hello world"),
            ("HELLO WORLD?!", "hello world"),
            ("你好！", "你好"),
            ("你好。", "你好"),
            ("「你好」", "你好"),
            ("今天天气怎么样？", "今天天气怎么样"),
            ("今天天气怎么样~", "今天天气怎么样"),
            ("今天天气怎么样～", "今天天气怎么样"),
            ("今天天气怎么样……", "今天天气怎么样"),
            ("ｈｅｌｌｏ　ｗｏｒｌｄ", "hello world"),
            ("Straße", "strasse"),
            ("ΌΣΟΣ", "όσοσ"),
            ("\u{200b}hello\u{feff}", "hello"),
            ("What pets do I like?", "what pets do i like"),
            ("﻿ｶﾀｶﾅ", "カタカナ"),
            ("", ""),
            ("?!。", ""),
        ];
        for (a, b) in same {
            assert_eq!(normalize_query(a), normalize_query(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn different_questions_stay_different() {
        let different: &[(&str, &str)] = &[
            ("3点", "4点"),
            ("what's my cat's name", "whats my cats name"),
            ("3.5", "35"),
            ("what do I know about C++", "what do I know about C"),
            ("C#", "C"),
            ("-5 degrees", "5 degrees"),
            ("+1", "1"),
            ("$5", "5"),
            ("50%", "50"),
            ("do I like 🐱", "do I like 🐶"),
            ("do I like 🐱", "do I like"),
            ("I like cats", "I like dogs"),
            ("你好", "您好"),
        ];
        for (a, b) in different {
            assert_ne!(normalize_query(a), normalize_query(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn exact_forms() {
        assert_eq!(normalize_query("  Hello,  World!  "), "hello world");
        assert_eq!(normalize_query("3点了吗？"), "3点了吗");
        assert_eq!(normalize_query("what's up?"), "what's up");
    }
}
