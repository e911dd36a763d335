//! Which mirrored items answer a query, and how well: lexical, for Chinese, Japanese and English
//! alike, with no model and no word list of topics. Pure.
//!
//! A text's terms are the content tokens the near-duplicate matcher finds in it (`similar/`:
//! NFKC and case folded, numerals as digits, Latin words with contractions expanded, single CJK
//! characters; fillers and function words dropped) and each pair of adjacent ones. A term's weight
//! is its inverse document frequency among the scope's own items (BM25's), so what every memory
//! of the user says ("my", "I") weighs little and what one says weighs much. An item's score is
//! the share of the query's weight it covers, counting only the terms some item has: in [0, 1],
//! the proxy's own scale for `min_similarity`. A match scoring under half the best one is not
//! returned: what it covers is what every memory of the user says, not the subject.
//!
//! With embeddings (`embed.rs`), an item that has a vector, asked by a query that has one, is
//! scored by their cosine instead: memU's own scale, as memU ranks. The others keep their lexical
//! score, so an item that arrived a moment ago still answers before its vector does.

use crate::cache::normalize::normalize_query;
use crate::cache::similar::Shape;

use super::embed::{cosine, Vector};
use super::{Item, Kind};

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

/// A lexical match below this share of the best one of its kind is dropped: what it shares with the query
/// is a common word ("my", "I"), not the subject the best match shares.
const NEAR_BEST: f64 = 0.5;

/// What is asked: the query's text, its vector if it came in time, and the answer's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub text: &'a str,
    pub vector: Option<&'a [f32]>,
    pub top_k: usize,
    pub min_similarity: f64,
}

/// The items that answer `query`, best first: at most `top_k`, each scoring at least
/// `min_similarity` and above 0. `vectors` holds each item's vector, if it has one, by index.
pub fn rank(items: &[Item], vectors: &[Option<Vector>], query: &Query<'_>) -> Vec<Ranked> {
    let lexical = lexical(items, query.text);
    // The best lexical score of each kind (memories, categories, …: lists of their own).
    let mut best: Vec<(Kind, f64)> = Vec::new();
    for (item, &score) in items.iter().zip(&lexical) {
        match best.iter_mut().find(|(kind, _)| *kind == item.kind) {
            Some((_, top)) => *top = top.max(score),
            None => best.push((item.kind, score)),
        }
    }
    let best_of = |kind: Kind| best.iter().find(|(k, _)| *k == kind).map_or(0.0, |b| b.1);
    let mut ranked: Vec<Ranked> = lexical
        .into_iter()
        .enumerate()
        .filter_map(|(index, lexical)| {
            let vector = vectors.get(index).and_then(Option::as_deref);
            let score = match query.vector.zip(vector).and_then(|(q, v)| cosine(q, v)) {
                Some(cosine) => cosine,
                None if lexical >= NEAR_BEST * best_of(items[index].kind) => lexical,
                None => return None,
            };
            Some(Ranked { index, score })
        })
        .filter(|r| r.score > 0.0 && r.score >= query.min_similarity)
        .collect();
    // Best first; among equals, the most recently seen first.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.index.cmp(&a.index)));
    ranked.truncate(query.top_k);
    ranked
}

/// Each item's lexical score for `query`, by index.
fn lexical(items: &[Item], query: &str) -> Vec<f64> {
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
    items
        .iter()
        .map(|item| {
            if total <= 0.0 {
                return 0.0;
            }
            let covered: f64 = asked
                .iter()
                .zip(&weights)
                .filter(|(term, _)| has(item, term))
                .map(|(_, weight)| weight)
                .sum();
            covered / total
        })
        .collect()
}

fn has(item: &Item, term: &str) -> bool {
    item.terms.binary_search_by(|t| (**t).cmp(term)).is_ok()
}
