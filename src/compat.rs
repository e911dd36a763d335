//! Opt-in repairs of memU answers that real clients cannot parse. Off by default: the proxy is
//! transparent unless told otherwise.
//!
//! `fill_null_timestamps`: the self-hosted memU server sends `created_at: null` and
//! `updated_at: null` in every memory, and the official SDK (memu-py) requires datetimes there, so
//! any non-empty retrieval fails to parse (memu-api.md §4). The repair fills each null (or
//! missing) one from the same memory's `happened_at`. Pure.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use serde_json::Value;

use crate::upstream::Buffered;

const FILLED: [&str; 2] = ["created_at", "updated_at"];

/// Returns `answer` with null memory timestamps filled from `happened_at`; unchanged (same
/// bytes) when nothing needed filling or the body is not JSON.
pub fn fill_null_timestamps(mut answer: Buffered) -> Buffered {
    let Ok(mut body) = serde_json::from_slice::<Value>(&answer.body) else {
        return answer;
    };
    if !fill(&mut body) {
        return answer;
    }
    let bytes = Bytes::from(body.to_string());
    answer
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    answer.body = bytes;
    answer
}

/// Fills every memory-shaped object (one with a string `happened_at`) below `value`; true if
/// anything changed.
fn fill(value: &mut Value) -> bool {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| fill(item) | changed),
        Value::Object(map) => {
            let mut changed = false;
            if let Some(happened) = map
                .get("happened_at")
                .and_then(Value::as_str)
                .map(str::to_owned)
            {
                for field in FILLED {
                    if map.get(field).is_none_or(Value::is_null) {
                        map.insert(field.to_owned(), Value::String(happened.clone()));
                        changed = true;
                    }
                }
            }
            map.values_mut()
                .fold(changed, |changed, item| fill(item) | changed)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};
    use serde_json::json;

    fn answer(body: Value) -> Buffered {
        Buffered {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn memory(created: Value) -> Value {
        json!({"memory_id": "m", "category": "c", "content": "x", "happened_at": "2026-11-24T00:00:00",
               "created_at": created, "updated_at": null})
    }

    const WHEN: &str = "2026-11-24T00:00:00";

    #[test]
    fn nulls_are_filled_in_every_retrieval_shape() {
        let repaired = memory(json!(WHEN)).as_object().cloned().map(|mut m| {
            m.insert("updated_at".into(), json!(WHEN));
            Value::Object(m)
        });
        let repaired = repaired.unwrap();
        let cases = [
            (
                json!({"related_memories": [{"memory": memory(Value::Null), "similarity_score": 0.6}], "query": "q", "total_found": 1, "search_params": {}}),
                json!({"related_memories": [{"memory": repaired, "similarity_score": 0.6}], "query": "q", "total_found": 1, "search_params": {}}),
            ),
            (
                json!({"categories": [{"name": "profile", "memories": [memory(Value::Null)], "memory_items": {"memories": [memory(Value::Null)]}}], "total_categories": 1}),
                json!({"categories": [{"name": "profile", "memories": [repaired], "memory_items": {"memories": [repaired]}}], "total_categories": 1}),
            ),
            (
                json!({"clustered_categories": [{"name": "pets", "similarity_score": 0.3, "memories": [memory(Value::Null)]}]}),
                json!({"clustered_categories": [{"name": "pets", "similarity_score": 0.3, "memories": [repaired]}]}),
            ),
        ];
        for (input, want) in cases {
            let out = fill_null_timestamps(answer(input));
            assert_eq!(serde_json::from_slice::<Value>(&out.body).unwrap(), want);
            assert_eq!(
                out.headers[header::CONTENT_LENGTH],
                out.body.len().to_string()
            );
        }
    }

    #[test]
    fn present_timestamps_and_non_json_are_left_alone() {
        let kept = answer(
            json!({"related_memories": [{"memory": {"happened_at": WHEN, "created_at": "2020-01-01T00:00:00", "updated_at": "2021-01-01T00:00:00"}}]}),
        );
        let before = kept.body.clone();
        assert_eq!(fill_null_timestamps(kept).body, before);
        let html = Buffered {
            body: Bytes::from_static(b"<html>"),
            ..answer(Value::Null)
        };
        assert_eq!(&fill_null_timestamps(html).body[..], b"<html>");
        let no_happened = answer(json!({"memory": {"created_at": null}}));
        let before = no_happened.body.clone();
        assert_eq!(fill_null_timestamps(no_happened).body, before);
    }
}
