//! Local answers ranked by embeddings (`[local_answers] embeddings_url`): a question that shares
//! no word with its memory still gets it when the endpoint's vectors say they are close; a query
//! vector that is late, or an endpoint that is down, leaves the lexical ranking answering; the
//! key comes from its environment variable; forgetting stays final.

mod support;

use std::time::Duration;

use memu_proxy::config::Settings;
use serde_json::{json, Value};
use support::embeddings::Embeddings;
use support::*;

const CAT: &str = "My cat is called Mochi.";
const WORK: &str = "I work at a bakery in Osaka.";
/// Shares no content word with [`CAT`]: only a vector can find it.
const PET: &str = "Any pets at home?";
const LOCAL_BUDGET: &str = "memu-proxy; fwd=miss; detail=budget; local";
const EMPTY_BUDGET: &str = "memu-proxy; fwd=miss; detail=budget";

/// The stand-in model: the cat memory and the pet question point the same way (cosine 0.8),
/// the work memory elsewhere, anything else a third way.
fn model(text: &str) -> Vec<f32> {
    match text {
        CAT => vec![1.0, 0.0, 0.0],
        PET => vec![0.8, 0.0, 0.6],
        WORK => vec![0.0, 1.0, 0.0],
        _ => vec![0.0, 0.0, 1.0],
    }
}

fn ask(question: &str) -> Value {
    related_body("u", Some("a"), question)
}

/// memU knows two facts of (u, a); the proxy has seen them once and, with `embeddings`, has
/// their vectors; then memU is slower than the budget.
async fn seen_once(
    embeddings: Option<&Embeddings>,
    tweak: impl FnOnce(&mut Settings),
) -> (MemU, Proxy) {
    let memu = MemU::start().await;
    memu.seed("u", "a", CAT);
    memu.seed("u", "a", WORK);
    let url = embeddings.map(Embeddings::url);
    let proxy = Proxy::start(&memu.url(), |s| {
        s.cache.local_answers = true;
        s.latency.budget_ms = 300;
        s.local_answers.embeddings_url = url;
        tweak(s);
    })
    .await;
    let first = assert_next_read_misses(&proxy, &ask("tell me about myself")).await;
    assert!(first.text().contains("Mochi"));
    if embeddings.is_some() {
        wait_until("the items' vectors", 5, || async {
            metric(&proxy.metrics().await, "memu_proxy_embeddings_vectors") >= 2.0
        })
        .await;
    }
    memu.set_latency(Duration::from_secs(2));
    (memu, proxy)
}

fn contents(reply: &Reply) -> Vec<String> {
    let answer = reply.json();
    answer["related_memories"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|r| {
            r["memory"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_question_sharing_no_word_with_its_memory_is_answered_by_its_vector() {
    let embeddings = Embeddings::start(model).await;
    let (_memu, proxy) = seen_once(Some(&embeddings), |_| {}).await;
    let reply = post(&proxy.url(RELATED), &ask(PET)).await;
    assert_eq!(reply.cache_status(), LOCAL_BUDGET);
    assert_eq!(contents(&reply), [CAT]);
    let score = reply.json()["related_memories"][0]["similarity_score"]
        .as_f64()
        .unwrap();
    assert!(
        (score - 0.8).abs() < 1e-3,
        "the cosine, memU's scale: {score}"
    );
    let metrics = proxy.metrics().await;
    let asked = r#"memu_proxy_embeddings_query_requests_total{result="ok"}"#;
    assert!(metric(&metrics, asked) >= 1.0, "{metrics}");
}

#[tokio::test]
async fn without_embeddings_the_same_question_gets_the_empty_answer() {
    let (_memu, proxy) = seen_once(None, |_| {}).await;
    let reply = post(&proxy.url(RELATED), &ask(PET)).await;
    assert_eq!(reply.cache_status(), EMPTY_BUDGET);
    assert_eq!(reply.json()["related_memories"], json!([]));
}

#[tokio::test]
async fn min_similarity_is_honoured_on_the_cosine_scale() {
    let embeddings = Embeddings::start(model).await;
    let (_memu, proxy) = seen_once(Some(&embeddings), |_| {}).await;
    let mut body = ask(PET);
    body["min_similarity"] = json!(0.85);
    let reply = post(&proxy.url(RELATED), &body).await;
    assert_eq!(reply.cache_status(), EMPTY_BUDGET, "0.8 is below 0.85");
}

#[tokio::test]
async fn a_query_vector_later_than_the_budget_leaves_the_lexical_ranking_answering() {
    let embeddings = Embeddings::start(model).await;
    let (_memu, proxy) = seen_once(Some(&embeddings), |_| {}).await;
    embeddings.set_delay(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let reply = post(&proxy.url(RELATED), &ask("What is my cat called?")).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "never waits for the vector"
    );
    assert_eq!(reply.cache_status(), LOCAL_BUDGET);
    assert_eq!(contents(&reply), [CAT]);
    // The pet question has no word in common and its vector is late: nothing to answer with.
    let reply = post(&proxy.url(RELATED), &ask(PET)).await;
    assert_eq!(reply.cache_status(), EMPTY_BUDGET);
}

#[tokio::test]
async fn an_endpoint_that_is_down_changes_nothing_but_the_ranking() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/embeddings", closed.local_addr().unwrap());
    drop(closed);
    let (_memu, proxy) = seen_once(None, |s| s.local_answers.embeddings_url = Some(url)).await;
    let reply = post(&proxy.url(RELATED), &ask("Where do I work?")).await;
    assert_eq!(reply.cache_status(), LOCAL_BUDGET);
    assert_eq!(contents(&reply), [WORK]);
    let failed = r#"memu_proxy_embeddings_item_requests_total{result="failed"}"#;
    wait_until("the failed batch counted", 5, || async {
        metric(&proxy.metrics().await, failed) >= 1.0
    })
    .await;
}

#[tokio::test]
async fn the_key_is_sent_from_its_environment_variable() {
    // A variable of this test's own: no other test reads it.
    std::env::set_var("MEMU_PROXY_TEST_EMBEDDINGS_KEY", "sk-test-embed");
    let embeddings = Embeddings::start(model).await;
    let (_memu, _proxy) = seen_once(Some(&embeddings), |s| {
        s.local_answers.embeddings_key_env = "MEMU_PROXY_TEST_EMBEDDINGS_KEY".into();
    })
    .await;
    assert_eq!(
        embeddings.last_authorization().as_deref(),
        Some("Bearer sk-test-embed")
    );
}

#[tokio::test]
async fn after_a_delete_no_vector_brings_a_memory_back() {
    let embeddings = Embeddings::start(model).await;
    let (memu, proxy) = seen_once(Some(&embeddings), |_| {}).await;
    memu.set_latency(Duration::ZERO);
    let deleted = post(
        &proxy.url(DELETE),
        &json!({"user_id": "u", "agent_id": "a"}),
    )
    .await;
    assert_eq!(deleted.status, 200);
    memu.set_latency(Duration::from_secs(2));
    let reply = post(&proxy.url(RELATED), &ask(PET)).await;
    assert_eq!(reply.cache_status(), EMPTY_BUDGET);
    assert!(!reply.text().contains("Mochi"));
}

#[tokio::test]
async fn another_scope_never_gets_these_memories_by_their_vectors() {
    let embeddings = Embeddings::start(model).await;
    let (_memu, proxy) = seen_once(Some(&embeddings), |_| {}).await;
    let reply = post(&proxy.url(RELATED), &related_body("v", Some("a"), PET)).await;
    assert_eq!(reply.cache_status(), EMPTY_BUDGET);
    assert!(!reply.text().contains("Mochi"));
}
