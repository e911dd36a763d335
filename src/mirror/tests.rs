//! The mirror: what it takes from answers, what a purge does to it, and how it ranks (zh, ja, en).

use serde_json::json;

use super::rank::{rank, terms, Query};
use super::*;
use crate::cache::{read_key, tenant_of};

const GEN: Generations = Generations {
    scope: 0,
    user: 0,
    all: 0,
};

fn scope(user: &str) -> Scope {
    Scope {
        tenant: None,
        user: user.into(),
        agent: Some("a".into()),
    }
}

fn memory(id: &str, content: &str) -> serde_json::Value {
    json!({"memory_id": id, "category": "activity", "content": content,
           "happened_at": "2026-11-24T00:00:00", "created_at": null, "updated_at": null})
}

fn related(memories: &[(&str, &str)]) -> Vec<u8> {
    let related: Vec<_> = memories
        .iter()
        .map(|(id, content)| json!({"memory": memory(id, content), "similarity_score": 0.5}))
        .collect();
    json!({"related_memories": related, "query": "q", "total_found": related.len(),
           "search_params": {}})
    .to_string()
    .into_bytes()
}

fn items(texts: &[&str]) -> Vec<Item> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| Item {
            kind: Kind::Memory,
            id: i.to_string().into(),
            text: (*text).into(),
            json: memory(&i.to_string(), text),
            terms: terms(text),
        })
        .collect()
}

/// The texts `query` ranks, best first.
fn ranked<'a>(texts: &[&'a str], query: &str, top_k: usize, min: f64) -> Vec<&'a str> {
    let query = Query {
        text: query,
        vector: None,
        top_k,
        min_similarity: min,
    };
    rank(&items(texts), &[], &query)
        .into_iter()
        .map(|r| texts[r.index])
        .collect()
}

#[test]
fn ranking_finds_the_memory_a_question_is_about_in_each_language() {
    let memories = [
        "Alice loves her black cat named Mochi.",
        "Alice works at a bakery in Osaka.",
        "我最喜欢的颜色是蓝色。",
        "我的生日是三月五日。",
        "私はラーメンが大好きです。",
        "毎朝七時に起きます。",
    ];
    let cases = [
        (
            "What is the name of Alice's cat?",
            "Alice loves her black cat named Mochi.",
        ),
        (
            "Where does Alice work?",
            "Alice works at a bakery in Osaka.",
        ),
        ("我喜欢什么颜色？", "我最喜欢的颜色是蓝色。"),
        ("我的生日是几月？", "我的生日是三月五日。"),
        ("私の好きな食べ物はラーメン？", "私はラーメンが大好きです。"),
        ("何時に起きますか", "毎朝七時に起きます。"),
    ];
    for (query, want) in cases {
        let got = ranked(&memories, query, 1, 0.0);
        assert_eq!(got, [want], "{query}");
    }
}

#[test]
fn numerals_match_whatever_their_script() {
    let memories = ["我3月5日去东京。", "I have 2 dogs."];
    assert_eq!(ranked(&memories, "三月五日去哪里？", 1, 0.0), [memories[0]]);
    assert_eq!(
        ranked(&memories, "how many dogs, two?", 1, 0.0),
        [memories[1]]
    );
}

#[test]
fn top_k_and_min_similarity_are_honoured() {
    let memories = [
        "I like green tea.",
        "I like black tea.",
        "My cat is called Mochi.",
    ];
    assert_eq!(ranked(&memories, "which tea do I like?", 5, 0.0).len(), 2);
    assert_eq!(ranked(&memories, "which tea do I like?", 1, 0.0).len(), 1);
    assert!(ranked(&memories, "which tea do I like?", 5, 1.01).is_empty());
    assert!(ranked(&memories, "what is the weather tomorrow?", 5, 0.0).is_empty());
}

#[test]
fn a_match_on_a_common_word_alone_is_not_returned_beside_the_subject() {
    let memories = [
        "My cat is called Mochi.",
        "My favourite food is ramen.",
        "My sister lives in Leeds.",
    ];
    // "my" is in every memory; "food" in one: only that one comes back, even with room for 3.
    assert_eq!(
        ranked(&memories, "what is my favourite food?", 3, 0.0),
        [memories[1]]
    );
    // With nothing but the common word to go on, every memory sharing it stays a candidate.
    assert_eq!(ranked(&memories, "tell me about my life", 3, 0.0).len(), 3);
}

#[test]
fn an_item_with_a_vector_ranks_by_cosine_and_one_without_keeps_its_lexical_score() {
    let texts = [
        "My cat is called Mochi.",
        "I live in Leeds.",
        "I like green tea.",
    ];
    let unit = |v: &[f32]| -> Option<Vector> { Some(v.into()) };
    // The tea memory has no vector yet.
    let vectors = [unit(&[1.0, 0.0]), unit(&[0.0, 1.0]), None];
    let query = Query {
        text: "any pets, or tea?",
        vector: Some(&[0.8, 0.6]),
        top_k: 3,
        min_similarity: 0.5,
    };
    let got: Vec<(&str, f64)> = rank(&items(&texts), &vectors, &query)
        .into_iter()
        .map(|r| (texts[r.index], (r.score * 100.0).round() / 100.0))
        .collect();
    // "tea" is the only asked word some item has: the tea memory covers all of that weight.
    assert_eq!(got, [(texts[2], 1.0), (texts[0], 0.8), (texts[1], 0.6)]);
    // A vector of another dimension is no vector: lexical again.
    let query = Query {
        vector: Some(&[1.0, 0.0, 0.0]),
        ..query
    };
    let got: Vec<&str> = rank(&items(&texts), &vectors, &query)
        .into_iter()
        .map(|r| texts[r.index])
        .collect();
    assert_eq!(got, [texts[2]]);
}

#[test]
fn every_v1_answer_feeds_the_mirror_and_scopes_never_mix() {
    let mirror = Mirror::new(1 << 20, None);
    let categories = json!({"categories": [{"name": "profile", "memories": [memory("p1", "Alice lives in Osaka")]}]});
    let clustered = json!({"clustered_categories": [{"name": "pets", "memories": [memory("e1", "Alice has a cat")]}]});
    let route = ReadRoute::V1_RELATED;
    mirror.observe(
        route,
        &scope("alice"),
        &related(&[("a1", "Alice bakes bread")]),
        GEN,
        &GEN,
    );
    mirror.observe(
        route,
        &scope("alice"),
        categories.to_string().as_bytes(),
        GEN,
        &GEN,
    );
    mirror.observe(
        route,
        &scope("alice"),
        clustered.to_string().as_bytes(),
        GEN,
        &GEN,
    );
    mirror.observe(
        route,
        &scope("alice"),
        &related(&[("a1", "Alice bakes bread")]),
        GEN,
        &GEN,
    );
    let set = mirror.items(route, &scope("alice"), &GEN).unwrap();
    let ids: Vec<&str> = set.items.iter().map(|i| &*i.id).collect();
    assert_eq!(
        ids,
        ["p1", "e1", "a1"],
        "deduplicated by id, most recent last"
    );
    assert!(mirror.items(route, &scope("bob"), &GEN).is_none());
    let other_agent = Scope {
        agent: None,
        ..scope("alice")
    };
    assert!(mirror.items(route, &other_agent, &GEN).is_none());
}

#[test]
fn a_purge_empties_the_scope_and_an_answer_from_before_it_does_not_refill_it() {
    let mirror = Mirror::new(1 << 20, None);
    let route = ReadRoute::V1_RELATED;
    let alice = scope("alice");
    mirror.observe(
        route,
        &alice,
        &related(&[("a1", "Alice lives at 12 Elm St")]),
        GEN,
        &GEN,
    );
    let purged = Generations { scope: 2, ..GEN };
    assert!(mirror.items(route, &alice, &purged).is_none());
    // A fetch that started before the purge.
    mirror.observe(
        route,
        &alice,
        &related(&[("a1", "Alice lives at 12 Elm St")]),
        GEN,
        &purged,
    );
    assert!(mirror.items(route, &alice, &purged).is_none());
    // One after it.
    mirror.observe(
        route,
        &alice,
        &related(&[("a2", "Alice moved")]),
        purged,
        &purged,
    );
    let set = mirror.items(route, &alice, &purged).unwrap();
    assert_eq!(set.items.len(), 1);
    assert_eq!(&*set.items[0].id, "a2");
}

#[test]
fn the_local_answer_has_the_routes_exact_shape() {
    let body = br#"{"user_id":"alice","agent_id":"a","query":"What is my cat called?","top_k":3,"min_similarity":0.3,"include_categories":null}"#;
    let read = read_key(ReadRoute::V1_RELATED, "/p", tenant_of(None), body).unwrap();
    let set = ScopeItems {
        since: GEN,
        items: items(&["My cat is called Mochi.", "I work in Osaka."]),
    };
    let asked = Asked {
        query: read.raw_query.as_deref(),
        vector: None,
        vectors: &[],
    };
    let answer =
        local_answer(ReadRoute::V1_RELATED, &read.key, &asked, &set).expect("the cat memory ranks");
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["query"], "What is my cat called?");
    assert_eq!(answer["total_found"], 1);
    assert_eq!(
        answer["related_memories"][0]["memory"],
        memory("0", "My cat is called Mochi.")
    );
    assert!(
        answer["related_memories"][0]["similarity_score"]
            .as_f64()
            .unwrap()
            >= 0.3
    );
    assert_eq!(
        answer["search_params"],
        json!({"query": "What is my cat called?", "top_k": 3, "min_similarity": 0.3, "include_categories": null})
    );
}
