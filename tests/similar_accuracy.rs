//! Measured accuracy of the near-duplicate judgement on the labelled set
//! `tests/data/similar_queries.tsv` (zh, en, ja; paraphrases, ASR variants, hard negatives).
//!
//! Precision must be at least 0.98 at the shipped threshold (0.9): a wrong match would serve one
//! question's memories for another. Recall is reported (`cargo test --test similar_accuracy --
//! --nocapture` prints the table).

use std::collections::BTreeMap;

use memu_proxy::cache::similar::similarity;

const SHIPPED_THRESHOLD: f64 = 0.9;

struct Pair {
    lang: String,
    same: bool,
    a: String,
    b: String,
    kind: String,
}

fn pairs() -> Vec<Pair> {
    let text = include_str!("data/similar_queries.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 5, "malformed line: {line}");
            Pair {
                lang: f[0].into(),
                same: f[1] == "1",
                a: f[2].into(),
                b: f[3].into(),
                kind: f[4].into(),
            }
        })
        .collect()
}

#[derive(Default, Debug)]
struct Tally {
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
}

impl Tally {
    fn add(&mut self, same: bool, matched: bool) {
        match (same, matched) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (true, false) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
}

#[test]
fn precision_at_the_shipped_threshold_is_at_least_098() {
    let pairs = pairs();
    assert!(
        pairs.len() >= 200,
        "the labelled set has {} pairs",
        pairs.len()
    );
    let mut total = Tally::default();
    let mut by_lang: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_kind: BTreeMap<String, Tally> = BTreeMap::new();
    let mut wrong_matches = Vec::new();
    let mut missed = Vec::new();
    for p in &pairs {
        let score = similarity(&p.a, &p.b);
        let matched = score >= SHIPPED_THRESHOLD;
        total.add(p.same, matched);
        by_lang
            .entry(p.lang.clone())
            .or_default()
            .add(p.same, matched);
        by_kind
            .entry(p.kind.clone())
            .or_default()
            .add(p.same, matched);
        if matched && !p.same {
            wrong_matches.push(format!(
                "{} {:.3} {} | {} ({})",
                p.lang, score, p.a, p.b, p.kind
            ));
        }
        if !matched && p.same {
            missed.push(format!(
                "{} {:.3} {} | {} ({})",
                p.lang, score, p.a, p.b, p.kind
            ));
        }
    }
    println!(
        "pairs {}: precision {:.3}, recall {:.3} at threshold {SHIPPED_THRESHOLD}",
        pairs.len(),
        total.precision(),
        total.recall()
    );
    for (name, t) in by_lang.iter().chain(by_kind.iter()) {
        println!(
            "  {name:<14} precision {:.3} recall {:.3}  {t:?}",
            t.precision(),
            t.recall()
        );
    }
    println!("missed positives ({}):", missed.len());
    for m in &missed {
        println!("  {m}");
    }
    assert!(total.tp > 0, "the matcher matched nothing");
    assert!(
        total.recall() >= 0.85,
        "recall {:.3} fell below 0.85",
        total.recall()
    );
    assert!(
        total.precision() >= 0.98,
        "precision {:.3} < 0.98; wrong matches:\n{}",
        total.precision(),
        wrong_matches.join("\n")
    );
}
