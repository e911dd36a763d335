//! Canonical JSON text for cache keys: object keys sorted, numbers by value, `null` fields
//! dropped, strings escaped by serde_json, so equivalent bodies from different clients (key order,
//! spacing, `\u` escapes, `0.5` vs `0.50`) give the same text and different ones never collide.
//! Pure.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Canonical text of the remaining top-level fields; `null` fields are dropped (≡ absent).
pub fn canonical_fields(fields: &Map<String, Value>) -> String {
    let mut out = String::new();
    for (name, value) in sorted(fields).into_iter().filter(|(_, v)| !v.is_null()) {
        write_string(name, &mut out);
        out.push(':');
        write_canonical(value, &mut out);
        out.push(',');
    }
    out
}

/// Object entries by key. serde_json's map is ordered unless a crate in the build turns on its
/// `preserve_order` feature; sorting here keeps keys canonical either way.
fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// Writes a JSON value with sorted object keys and numbers by value.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for item in items {
                write_canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (name, item) in sorted(map) {
                write_string(name, out);
                out.push(':');
                write_canonical(item, out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

/// Integers exactly; other numbers as the shortest text of their f64 value, with integral values
/// written as integers, so `0.5` ≡ `0.50` and `10` ≡ `10.0`.
fn write_number(n: &serde_json::Number, out: &mut String) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        if f.fract() == 0.0 && f.abs() < EXACT {
            let _ = write!(out, "{}", f as i64);
        } else {
            let _ = write!(out, "{f:?}");
        }
    }
}

pub fn write_string(s: &str, out: &mut String) {
    // serde_json's escaping is deterministic, and keeps `"a,b"` apart from two fields.
    out.push_str(&Value::from(s).to_string());
}
