//! The retrieval path's decisions, as pure functions: what an upstream result means
//! ([`judge`]), whether a finished fetch may be stored ([`admit`]), and what a client waiting on
//! a fetch answers ([`waiter_answer`]). Plain values in, plain values out: table-tested here
//! without sockets or clocks; `fetch.rs` and `handlers/read.rs` act on them.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::cache::Generations;
use crate::fallback::FallbackReason;
use crate::upstream::{Buffered, UpstreamError};

/// The shared result of one upstream fetch, as every waiter sees it.
#[derive(Debug)]
pub enum Fetched {
    /// memU answered; `stored` says whether the answer was admitted to the cache.
    Answer {
        answer: Buffered,
        stored: bool,
        upstream: Duration,
    },
    /// No usable answer: the reader gets a stale answer or the fallback.
    Failed {
        reason: FallbackReason,
        upstream: Duration,
    },
}

/// What an upstream result means for a retrieval.
#[derive(Debug)]
pub enum Judgement {
    /// Pass memU's answer on; store it when `cacheable`.
    Answer {
        answer: Buffered,
        cacheable: bool,
    },
    Fallback(FallbackReason),
}

/// Classifies an upstream result: 200 JSON is cacheable, other non-5xx answers pass through,
/// 5xx, non-JSON 200s and transport failures fall back.
pub fn judge(result: Result<Buffered, UpstreamError>) -> Judgement {
    match result {
        Err(UpstreamError::Timeout(_)) => Judgement::Fallback(FallbackReason::Timeout),
        Err(UpstreamError::Connect(_)) => Judgement::Fallback(FallbackReason::Connect),
        Err(UpstreamError::Tls(_)) => Judgement::Fallback(FallbackReason::Tls),
        Err(
            UpstreamError::Exchange(_)
            | UpstreamError::TooLarge(_)
            | UpstreamError::RequestTooLarge,
        ) => Judgement::Fallback(FallbackReason::UpstreamError),
        Err(UpstreamError::CircuitOpen(_)) => Judgement::Fallback(FallbackReason::CircuitOpen),
        Ok(answer) if answer.status.is_server_error() => {
            Judgement::Fallback(FallbackReason::Upstream5xx)
        }
        Ok(answer) if answer.status == StatusCode::OK => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&answer.body).is_ok() {
                Judgement::Answer {
                    answer,
                    cacheable: true,
                }
            } else {
                Judgement::Fallback(FallbackReason::InvalidJson)
            }
        }
        Ok(answer) => Judgement::Answer {
            answer,
            cacheable: false,
        },
    }
}

/// Applies the opt-in compat repairs to an answer that will be served and stored (so a hit costs
/// no repair).
pub fn repair(judgement: Judgement, fill_null_timestamps: bool) -> Judgement {
    match judgement {
        Judgement::Answer { answer, cacheable } if cacheable && fill_null_timestamps => {
            Judgement::Answer {
                answer: crate::compat::fill_null_timestamps(answer),
                cacheable,
            }
        }
        other => other,
    }
}

/// Whether a cacheable answer whose fetch started under `started` is stored, now that the scope
/// is at `current`. A fetch that raced a write is stored (it may serve as stale-if-error, never as
/// a hit), unless a newer fetch already stored the answer valid now (`holds_current`, asked only
/// when it matters).
pub fn admit(
    started: Generations,
    current: Generations,
    holds_current: impl FnOnce() -> bool,
) -> bool {
    started == current || !holds_current()
}

/// How a client's wait on a fetch ended.
#[derive(Debug)]
pub enum Waited {
    /// The fetch published its result.
    Done(Arc<Fetched>),
    /// The fetch ended without publishing one (its task died).
    Abandoned,
    /// The client's time ran out first: its latency budget (`budget`) or the hard deadline.
    OutOfTime { budget: bool, waited: Duration },
}

/// What a waiting client answers.
#[derive(Debug, PartialEq)]
pub enum WaiterAnswer<'a> {
    /// memU's answer, as the fetch got it.
    Answer {
        answer: &'a Buffered,
        stored: bool,
        upstream: Duration,
    },
    /// A stale answer within the stale-if-error window if there is one, else the empty fallback.
    StaleOrEmpty {
        reason: FallbackReason,
        upstream: Option<Duration>,
    },
}

/// Decides a waiter's answer from how its wait ended.
pub fn waiter_answer(waited: &Waited) -> WaiterAnswer<'_> {
    match waited {
        Waited::Done(fetched) => match fetched.as_ref() {
            Fetched::Answer {
                answer,
                stored,
                upstream,
            } => WaiterAnswer::Answer {
                answer,
                stored: *stored,
                upstream: *upstream,
            },
            Fetched::Failed { reason, upstream } => WaiterAnswer::StaleOrEmpty {
                reason: *reason,
                upstream: Some(*upstream),
            },
        },
        Waited::Abandoned => WaiterAnswer::StaleOrEmpty {
            reason: FallbackReason::UpstreamError,
            upstream: None,
        },
        Waited::OutOfTime { budget, waited } => WaiterAnswer::StaleOrEmpty {
            reason: if *budget {
                FallbackReason::Budget
            } else {
                FallbackReason::Timeout
            },
            upstream: Some(*waited),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsRejection;
    use bytes::Bytes;
    use http::HeaderMap;

    fn buffered(status: u16, body: &'static str) -> Buffered {
        Buffered {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

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
            (answer(201, "{}"), None, false),
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
            match judge(result) {
                Judgement::Fallback(reason) => assert_eq!(Some(reason), want_fallback, "{shown}"),
                Judgement::Answer { cacheable, .. } => {
                    assert_eq!(want_fallback, None, "{shown}");
                    assert_eq!(cacheable, want_cacheable, "{shown}");
                }
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
            on,
        ) {
            Judgement::Answer { answer, .. } => answer.body != null.as_bytes(),
            Judgement::Fallback(_) => panic!("an answer stays an answer"),
        };
        assert!(repaired(true, true));
        assert!(!repaired(true, false));
        assert!(!repaired(false, true));
    }

    #[test]
    fn admission_table() {
        let g = |scope, user| Generations { scope, user };
        // (started, current, a newer answer is stored, admitted)
        let cases = [
            (g(0, 0), g(0, 0), false, true),
            (g(0, 0), g(0, 0), true, true),
            (g(0, 0), g(1, 0), false, true),
            (g(0, 0), g(1, 0), true, false),
            (g(0, 0), g(0, 1), true, false),
        ];
        for (started, current, newer, want) in cases {
            assert_eq!(
                admit(started, current, || newer),
                want,
                "{started:?} {current:?} {newer}"
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
}
