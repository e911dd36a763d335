//! Which mirrored items answer a query, and how well: lexical, for Chinese, Japanese and English
//! alike, with no model and no word list of topics. Pure.
//!
//! A text's terms are the content tokens the near-duplicate matcher finds in it (`similar/`:
//! NFKC and case folded, numerals as digits, Latin words with contractions expanded, single CJK
//! characters; fillers and function words dropped) and each pair of adjacent ones. A term's weight
//! is its inverse document frequency among the scope's own items (BM25's), so what every memory
//! of the user says ("my", "I") weighs little and what one says weighs much. An item's score is
//! the share of the query's weight it covers, counting only the terms some item has: in [0, 1],
//! the proxy's own scale for `min_similarity`.

use crate::cache::normalize::normalize_query;
use crate::cache::similar::Shape;

use super::Item;

/// The terms a text is found by.
pub fn terms(text: &str) -> Vec<Box<str>> {
    Shape::of(&normalize_query(text))
        .terms()
        .into_iter()
        .map(String::into_boxed_str)
        .collect()
}

/// An item of the scope and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    pub index: usize,
    pub score: f64,
}

/// The items that answer `query`, best first: at most `top_k`, each scoring at least
/// `min_similarity` and above 0.
pub fn rank(items: &[Item], query: &str, top_k: usize, min_similarity: f64) -> Vec<Ranked> {
    let asked = terms(query);
    let n = items.len() as f64;
    let weights: Vec<f64> = asked
        .iter()
        .map(|term| {
            let having = items.iter().filter(|i| has(i, term)).count() as f64;
            if having == 0.0 {
                0.0
            } else {
                (1.0 + (n - having + 0.5) / (having + 0.5)).ln()
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let mut ranked: Vec<Ranked> = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let covered: f64 = asked
                .iter()
                .zip(&weights)
                .filter(|(term, _)| has(item, term))
                .map(|(_, weight)| weight)
                .sum();
            Ranked {
                index,
                score: covered / total,
            }
        })
        .filter(|r| r.score > 0.0 && r.score >= min_similarity)
        .collect();
    // Best first; among equals, the most recently seen first.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.index.cmp(&a.index)));
    ranked.truncate(top_k);
    ranked
}

fn has(item: &Item, term: &str) -> bool {
    item.terms.binary_search_by(|t| (**t).cmp(term)).is_ok()
}
