//! Near-duplicate queries: answer a re-worded repeat from the cache, never a different question.
//!
//! Works for Chinese, Japanese and English without embeddings or models. A normalised query
//! (`normalize.rs`) is analysed into a [`Shape`] (`shape.rs`): request frames and hesitations are
//! cut ("can you tell me", "你还记得", "えっと"), numbers are written as digits (三/three → 3),
//! stutters are collapsed ("my my cat"), and the remaining tokens (Latin words with contractions
//! expanded, single CJK characters, digit runs) are classed by the word lists in `lexicon.rs`:
//!
//! - **filler**: noise that never changes the question (um, uh, please, is / 呀 啊 呢 吧 的 了 吗 /
//!   は を が の ね よ か); dropped;
//! - **function**: words that shape a sentence but name nothing (the, of, was / 是 在 / other
//!   hiragana); kept for similarity, free to differ;
//! - **content**: everything else, including negations (不 没 沒 別 别 ない ません not never no),
//!   numbers and person pronouns (我 你 I you my your 私 あなた).
//!
//! Two queries can match only when their **content tokens are equal, in order**: a differing or
//! swapped entity, number, negation or pronoun never matches, however close the strings. Then the
//! cosine similarity of their token unigrams and bigrams must reach the threshold. Candidates are
//! kept in an index (`index.rs`) keyed by scope, route, parameters and content set, so a lookup
//! is one hash probe and a few comparisons, whatever the number of cached queries.

mod index;
mod lexicon;
mod shape;

pub use index::SimilarIndex;
pub use shape::Shape;

use super::normalize::normalize_query;

/// Similarity in [0, 1] of two raw queries as the proxy judges them (1 when they normalise
/// alike, 0 when their content differs).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (normalize_query(a), normalize_query(b));
    if a == b {
        return 1.0;
    }
    Shape::of(&a).similarity(&Shape::of(&b))
}
