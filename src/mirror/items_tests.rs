//! The mirror for v3, v4 and memU-server: what each generation's answers give it (`items.rs`),
//! what a purge does to each generation's set, and each route's local answer (`shapes.rs`).

use serde_json::{json, Value};

use super::*;
use crate::cache::{read_key, tenant_of};
use crate::routes::{table, Generation, ReadRow};

const GEN: Generations = Generations {
    scope: 0,
    user: 0,
    all: 0,
};

fn scope(user: &str) -> Scope {
    Scope {
        tenant: tenant_of(Some(b"Bearer key-1")),
        user: user.into(),
        agent: Some("a".into()),
    }
}

/// A memu-py 1.x memory item, as v3 and memU-server send it.
fn memu_item(id: &str, summary: &str) -> Value {
    json!({"id": id, "resource_id": "r1", "memory_type": "profile", "summary": summary,
           "happened_at": null, "extra": {}, "created_at": "2026-11-24T08:00:00Z",
           "updated_at": "2026-11-24T08:00:00Z", "user_id": "u", "agent_id": "a", "score": 0.9})
}

fn recall_file(id: &str, name: &str, content: &str) -> Value {
    json!({"id": id, "created_at": "2026-11-24T08:00:00Z", "updated_at": "2026-11-24T08:00:00Z",
           "name": name, "track": "memory", "description": name, "content": content,
           "user_id": "default", "agent_id": "default"})
}

/// (kind, id, text) of each item.
fn found(generation: Generation, answer: &Value) -> Vec<(Kind, String, String)> {
    items_of(generation, answer)
        .into_iter()
        .map(|i| (i.kind, i.id.to_string(), i.text.to_string()))
        .collect()
}

#[test]
fn v3_answers_give_their_items_and_categories() {
    let retrieve = json!({"needs_retrieval": true, "original_query": "q", "rewritten_query": "q",
        "next_step_query": null, "resources": [{"id": "res1", "url": "x", "caption": "a photo"}],
        "categories": [{"id": "c1", "name": "pets", "summary": "Mochi is a cat", "description": "d"}],
        "items": [memu_item("i1", "My cat is Mochi"), json!({"id": "i2", "content": "I bake"}),
                  json!({"id": "i3"}), json!("not an object")]});
    assert_eq!(
        found(Generation::V3, &retrieve),
        [
            (Kind::Category, "c1".into(), "pets\nMochi is a cat".into()),
            (Kind::Memory, "i1".into(), "My cat is Mochi".into()),
            (Kind::Memory, "i2".into(), "I bake".into()),
        ],
        "no text, not an object, resources: not items"
    );
    let categories = json!({"categories": [{"id": "c1", "name": "pets", "description": "Pets"}]});
    assert_eq!(
        found(Generation::V3, &categories),
        [(Kind::Category, "c1".into(), "pets\nPets".into())]
    );
    let items = items_of(Generation::V3, &retrieve);
    assert_eq!(items[1].json, memu_item("i1", "My cat is Mochi"), "as sent");
}

#[test]
fn v4_answers_give_recall_files_and_segments() {
    let list =
        json!({"recall_files": [recall_file("f1", "cat", "My cat is Mochi")], "next_cursor": "c2"});
    assert_eq!(
        found(Generation::V4, &list),
        [(Kind::File, "f1".into(), "cat\ncat\nMy cat is Mochi".into())]
    );
    let search = json!({"files": [recall_file("f1", "cat", "My cat is Mochi")],
        "segments": [{"id": "s1", "recall_file_id": "f1", "track": "memory", "text": "Mochi", "score": 0.4}],
        "resources": []});
    let kinds: Vec<_> = found(Generation::V4, &search)
        .into_iter()
        .map(|(kind, id, _)| (kind, id))
        .collect();
    assert_eq!(
        kinds,
        [(Kind::File, "f1".into()), (Kind::Segment, "s1".into())]
    );
}

#[test]
fn server_answers_are_read_inside_result_and_categories_without_id_get_a_stable_one() {
    let retrieve = json!({"status": "success", "result": {"needs_retrieval": true,
        "categories": [], "items": [memu_item("i1", "My cat is Mochi")], "resources": []}});
    assert_eq!(
        found(Generation::Server, &retrieve),
        [(Kind::Memory, "i1".into(), "My cat is Mochi".into())]
    );
    let category = |agent: &str, summary: &str| {
        json!({"status": "success", "result": {"categories": [{"name": "personal_info",
            "description": "d", "user_id": "u", "agent_id": agent, "summary": summary}]}})
    };
    let id = |answer: &Value| found(Generation::Server, answer)[0].1.clone();
    let first = id(&category("a", "Has a cat"));
    assert!(first.starts_with('~'), "{first}");
    assert_eq!(
        first,
        id(&category("a", "Has a cat named Mochi")),
        "known by name, user and agent: a new summary replaces the old"
    );
    assert_ne!(first, id(&category("b", "Has a cat")));
    let unnamed = json!({"status": "success", "result": {"items": [{"summary": "I bake"}]}});
    assert_eq!(id(&unnamed), id(&unnamed), "derived from the text");
    assert!(found(Generation::Server, &json!({"detail": "x"})).is_empty());
}

fn observe(mirror: &Mirror, row: &'static ReadRow, scope: &Scope, answer: &Value, at: Generations) {
    let body = answer.to_string();
    mirror.observe(ReadRoute(row), scope, body.as_bytes(), at, &at);
}

#[test]
fn each_generation_has_its_own_set_and_a_purge_empties_it() {
    let mirror = Mirror::new(1 << 20, None);
    let alice = scope("alice");
    let v3 = json!({"items": [memu_item("i1", "My cat is Mochi")], "categories": []});
    let v4 =
        json!({"recall_files": [recall_file("f1", "cat", "My cat is Mochi")], "next_cursor": null});
    observe(&mirror, &table::V3_RETRIEVE, &alice, &v3, GEN);
    observe(&mirror, &table::V4_LIST, &alice, &v4, GEN);
    // Seen twice, kept once.
    observe(&mirror, &table::V3_RETRIEVE, &alice, &v3, GEN);
    let v3_items = mirror
        .items(ReadRoute(&table::V3_CATEGORIES), &alice, &GEN)
        .unwrap();
    assert_eq!(v3_items.items.len(), 1);
    assert_eq!(v3_items.items[0].kind, Kind::Memory);
    let v4_items = mirror
        .items(ReadRoute(&table::V4_SEARCH), &alice, &GEN)
        .unwrap();
    assert_eq!(v4_items.items[0].kind, Kind::File);
    assert!(mirror
        .items(ReadRoute(&table::SERVER_RETRIEVE), &alice, &GEN)
        .is_none());
    assert!(mirror
        .items(ReadRoute(&table::V3_RETRIEVE), &scope("bob"), &GEN)
        .is_none());
    let purged = Generations { user: 1, ..GEN };
    assert!(mirror
        .items(ReadRoute(&table::V3_RETRIEVE), &alice, &purged)
        .is_none());
    assert!(mirror
        .items(ReadRoute(&table::V4_SEARCH), &alice, &purged)
        .is_none());
}

#[test]
fn a_server_users_categories_are_read_by_retrieve_of_the_same_tenant_only() {
    let categories = ReadRoute(&table::SERVER_CATEGORIES);
    let body = br#"{"user_id":"u"}"#;
    let read = read_key(categories, "/categories", tenant_of(None), body).unwrap();
    assert_eq!(
        also_read_by(&read.key),
        Some(Scope::global(tenant_of(None)))
    );
    let retrieve = ReadRoute(&table::SERVER_RETRIEVE);
    let read = read_key(retrieve, "/retrieve", tenant_of(None), br#"{"query":"q"}"#).unwrap();
    assert_eq!(also_read_by(&read.key), None);
}

fn local(row: &'static ReadRow, body: &str, items: Vec<Item>) -> Option<Value> {
    let route = ReadRoute(row);
    let read = read_key(route, "/p?user_id=u", tenant_of(None), body.as_bytes()).unwrap();
    let set = ScopeItems { since: GEN, items };
    let asked = Asked {
        query: read.raw_query.as_deref(),
        vector: None,
        vectors: &[],
    };
    let answer = local_answer(route, &read.key, &asked, &set)?;
    Some(serde_json::from_slice(&answer).unwrap())
}

#[test]
fn each_generations_local_answer_has_its_routes_shape() {
    let v3 = items_of(
        Generation::V3,
        &json!({"items": [memu_item("i1", "My cat is called Mochi"), memu_item("i2", "I work in Osaka")],
                "categories": [{"id": "c1", "name": "pets", "summary": "A cat called Mochi"}]}),
    );
    let ask = r#"{"user_id":"u","agent_id":"a","query":"What is my cat called?"}"#;
    let answer = local(&table::V3_RETRIEVE, ask, v3.clone()).unwrap();
    assert_eq!(answer["items"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["items"][0]["summary"], "My cat is called Mochi");
    assert_ne!(answer["items"][0]["score"], 0.9, "the proxy's own score");
    assert_eq!(answer["categories"][0]["id"], "c1");
    assert_eq!(answer["resources"], json!([]));
    assert_eq!(answer["next_step_query"], Value::Null);
    assert_eq!(answer["original_query"], "What is my cat called?");
    let messages = r#"{"user_id":"u","agent_id":"a","query":[{"role":"user","content":{"text":"Where do I work?"}}]}"#;
    let answer = local(&table::V3_RETRIEVE, messages, v3.clone()).unwrap();
    assert_eq!(answer["items"][0]["summary"], "I work in Osaka");
    let server = local(
        &table::SERVER_RETRIEVE,
        r#"{"query":"Where do I work?"}"#,
        v3,
    )
    .unwrap();
    assert_eq!(server["status"], "success");
    assert_eq!(server["result"]["items"][0]["summary"], "I work in Osaka");
    assert_eq!(server["result"]["rewritten_query"], "Where do I work?");

    let v4 = items_of(
        Generation::V4,
        &json!({"recall_files": [recall_file("f1", "cat", "My cat is called Mochi")],
                "segments": [{"id": "s1", "text": "Mochi sleeps all day"}]}),
    );
    let search = r#"{"query":"What does Mochi do?","user_id":"default","agent_id":"default"}"#;
    let answer = local(&table::V4_SEARCH, search, v4).unwrap();
    assert_eq!(answer["segments"][0]["id"], "s1", "{answer}");
    assert_eq!(answer["files"][0]["id"], "f1", "{answer}");
    assert_eq!(answer["resources"], json!([]));
    assert!(answer["segments"][0]["score"].as_f64().unwrap() > 0.0);
}

#[test]
fn listings_and_categories_have_no_local_answer() {
    let items = items_of(
        Generation::V3,
        &json!({"items": [memu_item("i1", "My cat is called Mochi")]}),
    );
    assert!(local(&table::V3_CATEGORIES, r#"{"user_id":"u"}"#, items.clone()).is_none());
    assert!(local(&table::V4_LIST, "", items).is_none());
}
