//! The decisions, table-tested: judgement, shapes, repairs, admission, what a waiter answers.

use super::*;
use crate::routes::table;
use crate::upstream::tls::TlsRejection;
use bytes::Bytes;
use http::HeaderMap;

fn buffered(status: u16, body: &'static str) -> Buffered {
    Buffered {
        status: StatusCode::from_u16(status).unwrap(),
        headers: HeaderMap::new(),
        body: Bytes::from_static(body.as_bytes()),
    }
}

const V1: ReadRoute = ReadRoute(&table::V1_RELATED);

#[test]
fn judgement_table() {
    use FallbackReason as F;
    let answer = |status, body| Ok(buffered(status, body));
    type Case = (
        Result<Buffered, UpstreamError>,
        Option<FallbackReason>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (answer(200, r#"{"related_memories":[]}"#), None, true),
        (
            answer(200, "<html>oops</html>"),
            Some(F::InvalidJson),
            false,
        ),
        (answer(200, ""), Some(F::InvalidJson), false),
        (answer(422, r#"{"detail":[]}"#), None, false),
        (answer(404, r#"{"detail":"Not Found"}"#), None, false),
        (
            answer(500, r#"{"detail":"boom"}"#),
            Some(F::Upstream5xx),
            false,
        ),
        (answer(503, ""), Some(F::Upstream5xx), false),
        (answer(201, "{}"), Some(F::InvalidShape), false),
        (answer(204, ""), Some(F::InvalidShape), false),
        (answer(200, "[]"), Some(F::InvalidShape), false),
        (answer(200, "null"), Some(F::InvalidShape), false),
        (answer(200, "{}"), Some(F::InvalidShape), false),
        (
            answer(200, r#"{"related_memories":null}"#),
            Some(F::InvalidShape),
            false,
        ),
        (
            answer(200, r#"{"related_memories":{}}"#),
            Some(F::InvalidShape),
            false,
        ),
        (
            Err(UpstreamError::Timeout(Duration::from_secs(2))),
            Some(F::Timeout),
            false,
        ),
        (
            Err(UpstreamError::Tls(TlsRejection::Certificate(
                rustls::CertificateError::UnknownIssuer,
            ))),
            Some(F::Tls),
            false,
        ),
        (
            Err(UpstreamError::TooLarge(1)),
            Some(F::UpstreamError),
            false,
        ),
        (
            Err(UpstreamError::RequestTooLarge),
            Some(F::UpstreamError),
            false,
        ),
        (
            Err(UpstreamError::CircuitOpen(Duration::from_secs(1))),
            Some(F::CircuitOpen),
            false,
        ),
    ];
    for (result, want_fallback, want_cacheable) in cases {
        let shown = format!("{result:?}");
        match judge(result, V1) {
            Judgement::Fallback(reason) => assert_eq!(Some(reason), want_fallback, "{shown}"),
            Judgement::Answer { cacheable, .. } => {
                assert_eq!(want_fallback, None, "{shown}");
                assert_eq!(cacheable, want_cacheable, "{shown}");
            }
        }
    }
}

#[test]
fn each_route_stores_only_answers_of_its_shape() {
    use table::*;
    let cases: &[(&'static crate::routes::ReadRow, &str, bool)] = &[
        (
            &V3_RETRIEVE,
            r#"{"categories":[],"items":[{"id":"m"}],"resources":[],"next_step_query":null}"#,
            true,
        ),
        (
            &V3_RETRIEVE,
            r#"{"categories":[],"items":null,"resources":[]}"#,
            false,
        ),
        (&V3_RETRIEVE, r#"{"categories":[],"items":[]}"#, false),
        (&V3_CATEGORIES, r#"{"categories":[{"name":"todo"}]}"#, true),
        (&V3_CATEGORIES, r#"[{"name":"todo"}]"#, false),
        (&V4_LIST, r#"{"recall_files":[],"next_cursor":null}"#, true),
        (&V4_LIST, r#"{"categories":[]}"#, false),
        (
            &V4_SEARCH,
            r#"{"segments":[],"files":[],"resources":[]}"#,
            true,
        ),
        (
            &V4_SEARCH,
            r#"{"segments":[],"files":null,"resources":[]}"#,
            false,
        ),
        (
            &SERVER_RETRIEVE,
            r#"{"status":"success","result":{"categories":[],"items":[],"resources":[]}}"#,
            true,
        ),
        (
            &SERVER_RETRIEVE,
            r#"{"categories":[],"items":[],"resources":[]}"#,
            false,
        ),
        (
            &SERVER_CATEGORIES,
            r#"{"status":"success","result":{"categories":[]}}"#,
            true,
        ),
        (
            &V1_CATEGORIES,
            r#"{"categories":[],"total_categories":0}"#,
            true,
        ),
        (&V1_CLUSTERED, r#"{"clustered_categories":[]}"#, true),
    ];
    for (row, body, cacheable) in cases {
        let judged = judge(Ok(buffered(200, body)), ReadRoute(row));
        let stored = matches!(
            judged,
            Judgement::Answer {
                cacheable: true,
                ..
            }
        );
        assert_eq!(stored, *cacheable, "{} {body}", row.name);
        if !cacheable {
            assert!(matches!(
                judged,
                Judgement::Fallback(FallbackReason::InvalidShape)
            ));
        }
    }
}

#[test]
fn repairs_apply_only_to_cacheable_answers_when_on() {
    let null = r#"{"related_memories":[{"memory":{"happened_at":"2026-01-01T00:00:00","created_at":null,"updated_at":null}}]}"#;
    let repaired = |cacheable, on| match repair(
        Judgement::Answer {
            answer: buffered(200, null),
            cacheable,
        },
        V1,
        on,
    ) {
        Judgement::Answer { answer, .. } => answer.body != null.as_bytes(),
        Judgement::Fallback(_) => panic!("an answer stays an answer"),
    };
    assert!(repaired(true, true));
    assert!(!repaired(true, false));
    assert!(!repaired(false, true));
    let v3 = repair(
        Judgement::Answer {
            answer: buffered(200, null),
            cacheable: true,
        },
        ReadRoute(&table::V3_RETRIEVE),
        true,
    );
    assert!(
        matches!(v3, Judgement::Answer { answer, .. } if answer.body == null.as_bytes()),
        "v1/v2 only"
    );
}

#[test]
fn admission_table() {
    let g = |scope, user| Generations {
        scope,
        user,
        all: 0,
    };
    // (started, current, purge marks, a newer answer is stored, admitted)
    let none = g(0, 0);
    let cases = [
        (g(0, 0), g(0, 0), none, false, true),
        (g(0, 0), g(0, 0), none, true, true),
        (g(0, 0), g(1, 0), none, false, true),
        (g(0, 0), g(1, 0), none, true, false),
        (g(0, 0), g(0, 1), none, true, false),
        // A delete since the fetch started: never stored, even with nothing newer there.
        (g(0, 0), g(1, 0), g(1, 0), false, false),
        (g(0, 0), g(0, 2), g(0, 1), false, false),
        // A memorize after a delete the fetch saw: stored as stale-only.
        (g(2, 0), g(3, 0), g(2, 0), false, true),
    ];
    for (started, current, purges, newer, want) in cases {
        assert_eq!(
            admit(started, current, purges, || newer),
            want,
            "{started:?} {current:?} {purges:?} {newer}"
        );
    }
}

#[test]
fn what_a_waiter_answers() {
    use FallbackReason as F;
    let ms = Duration::from_millis;
    let ok = buffered(200, "{}");
    let done = |fetched| Waited::Done(Arc::new(fetched));
    let answered = done(Fetched::Answer {
        answer: ok.clone(),
        stored: true,
        upstream: ms(7),
    });
    assert!(matches!(
        waiter_answer(&answered),
        WaiterAnswer::Answer { answer, stored: true, upstream } if answer.body == ok.body && upstream == ms(7)
    ));
    let stale_or_empty = |reason, upstream| WaiterAnswer::StaleOrEmpty { reason, upstream };
    let cases = [
        (
            done(Fetched::Failed {
                reason: F::Upstream5xx,
                upstream: ms(3),
            }),
            stale_or_empty(F::Upstream5xx, Some(ms(3))),
        ),
        (Waited::Abandoned, stale_or_empty(F::UpstreamError, None)),
        (
            Waited::OutOfTime {
                budget: true,
                waited: ms(500),
            },
            stale_or_empty(F::Budget, Some(ms(500))),
        ),
        (
            Waited::OutOfTime {
                budget: false,
                waited: ms(2000),
            },
            stale_or_empty(F::Timeout, Some(ms(2000))),
        ),
    ];
    for (waited, want) in cases {
        assert_eq!(waiter_answer(&waited), want, "{waited:?}");
    }
}
