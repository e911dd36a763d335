//! Property tests (proptest) of the pure code that sees untrusted input: query normalisation, cache
//! keys for every read row, route classification, the near-duplicate shaper and the request header
//! parsers. Each property runs on generated input through the public API only; none opens a
//! socket. Case counts are kept small enough for the whole file to run in a few seconds in a
//! debug build (`scripts/test.sh --fast`).
//!
//! Generated JSON bodies are written by this file's own writer ([`render`]), which varies what the
//! canonicalisation documents as irrelevant (key order, white space, `\u` escapes, `3` / `3.0` /
//! `3e0`), so "same request, same key" is tested on the bytes clients really send.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use proptest::prelude::*;
use serde_json::{Map, Value};

use memu_proxy::cache::normalize::normalize_query;
use memu_proxy::cache::similar::{similarity, Shape};
use memu_proxy::cache::{read_key, tenant_of, CacheKey, Tenant};
use memu_proxy::headers::{client_cache, request_budget, strip_hop_by_hop, ClientCache};
use memu_proxy::routes::table::{self, ROUTES};
use memu_proxy::routes::{
    classify, PathPattern, ReadRoute, RequestPath, RouteClass, Row, ScopeSource,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A failure found here is kept as an explicit test below, not as a regressions file.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- generators -------------------------------------------------------------------------------

/// Characters that exercise normalisation: case, width, NFKC compatibility forms, final sigma,
/// combining marks, format characters, CJK punctuation, white space of several kinds, symbols.
const TRICKY: &[char] = &[
    'a',
    'Z',
    'e',
    '3',
    ' ',
    '\t',
    '\n',
    '\u{3000}',
    '\u{a0}',
    '!',
    '?',
    '.',
    ',',
    '\'',
    '"',
    '~',
    '(',
    '[',
    '+',
    '-',
    '#',
    '%',
    '/',
    '。',
    '！',
    '？',
    '、',
    '「',
    '」',
    '～',
    '…',
    'ｈ',
    'Ａ',
    '１',
    'ｶ',
    'ﾞ',
    'ß',
    'ẞ',
    'Σ',
    'ς',
    'σ',
    'İ',
    'ı',
    'ǅ',
    'ﬁ',
    '\u{301}',
    '\u{345}',
    '\u{200b}',
    '\u{200d}',
    '\u{feff}',
    '\u{ad}',
    '\u{0}',
    '\u{7f}',
    '你',
    '好',
    '三',
    '点',
    'は',
    'な',
    'い',
    '🐱',
    '\u{1f3fb}',
    '㍻',
    '①',
    'Ⅻ',
    '\u{fdfa}',
];

/// Short strings built mostly from [`TRICKY`], with arbitrary Unicode mixed in.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec(proptest::sample::select(TRICKY), 0..16)
            .prop_map(|cs| cs.into_iter().collect()),
        1 => any::<String>(),
        1 => "\\PC{0,24}",
    ]
}

/// Floats whose decimal and exponent spellings parse to the same `f64` in any correct parser: a
/// small integer over a small power of two.
fn exact_float() -> impl Strategy<Value = f64> {
    (-(1i32 << 20)..(1 << 20), 0u32..11).prop_map(|(k, m)| f64::from(k) / f64::from(1u32 << m))
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        exact_float().prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(field_name(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names: the ones the key builder looks at, and others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(vec![
            "user_id", "agent_id", "query", "category_query", "top_k", "min_similarity",
            "include_categories", "user", "cursor", "limit",
        ])
        .prop_map(str::to_owned),
        1 => text(),
    ]
}

/// A JSON object shaped like a retrieval body: the scope and query fields are usually present
/// (usually as strings), next to arbitrary other fields.
fn body_object() -> impl Strategy<Value = Map<String, Value>> {
    let scope_value = prop_oneof![4 => text().prop_map(Value::from), 1 => json()];
    (
        proptest::option::weighted(0.9, scope_value.clone()),
        proptest::option::weighted(0.7, scope_value.clone()),
        proptest::option::weighted(0.8, scope_value),
        proptest::option::weighted(0.3, categories()),
        proptest::collection::btree_map(field_name(), json(), 0..4),
    )
        .prop_map(|(user, agent, query, categories, extra)| {
            // Only `categories()` writes this field (see there).
            let mut fields: Map<String, Value> = extra
                .into_iter()
                .filter(|(name, _)| name != "include_categories")
                .collect();
            for (name, value) in [
                ("user_id", user),
                ("agent_id", agent),
                ("query", query),
                ("include_categories", categories),
            ] {
                if let Some(value) = value {
                    fields.insert(name.to_owned(), value);
                }
            }
            fields
        })
}

/// `include_categories`, drawn from a small pool so that duplicates and reorderings occur.
fn categories() -> impl Strategy<Value = Value> {
    let item = proptest::sample::select(vec![
        Value::from("a"),
        Value::from("b"),
        Value::from("profile"),
        Value::from(""),
        Value::Null,
        // Numbers are left out: see `include_categories_is_a_set_of_values_whatever_their_spelling`.
    ]);
    proptest::collection::vec(item, 0..5).prop_map(Value::Array)
}

/// Every read row of the route table, with a path it is requested on.
fn read_rows() -> Vec<(ReadRoute, String)> {
    ROUTES
        .iter()
        .filter_map(|row| match row {
            Row::Read(read) => {
                let path = match read.path {
                    PathPattern::Suffix(p) | PathPattern::Root(p) => p,
                    PathPattern::Task(p) | PathPattern::RootTask(p) => p,
                };
                Some((ReadRoute(read), path.to_owned()))
            }
            _ => None,
        })
        .collect()
}

fn read_row() -> impl Strategy<Value = (ReadRoute, String)> {
    proptest::sample::select(read_rows())
}

fn tenant() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(prop_oneof![
        proptest::sample::select(vec![b"Bearer k1".to_vec(), b"Bearer k2".to_vec(), vec![]]),
        proptest::collection::vec(any::<u8>(), 0..12),
    ])
}

// ---- a JSON writer that varies what must not matter --------------------------------------------

/// Choices for [`render`], consumed in turn (and again from the start when used up).
struct Choices<'a> {
    bytes: &'a [u8],
    next: usize,
}

impl Choices<'_> {
    fn pick(&mut self, n: usize) -> usize {
        if self.bytes.is_empty() {
            return 0;
        }
        let b = self.bytes[self.next % self.bytes.len()];
        self.next += 1;
        usize::from(b) % n
    }
}

/// Writes `value` as JSON text, varying key order, white space, string escapes and the spelling
/// of numbers (`3`, `3.0`, `3e0`, `30e-1`; `0.5`, `5e-1`) by `choices`.
fn render(value: &Value, choices: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    write_value(
        value,
        &mut Choices {
            bytes: choices,
            next: 0,
        },
        &mut out,
    );
    out.into_bytes()
}

fn space(c: &mut Choices, out: &mut String) {
    out.push_str(["", " ", "\n  ", "\t", "\r\n"][c.pick(5)]);
}

fn write_value(value: &Value, c: &mut Choices, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) => out.push_str(&value.to_string()),
        Value::Number(n) => write_number(n, c, out),
        Value::String(s) => write_string(s, c, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                space(c, out);
                write_value(item, c, out);
                space(c, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            // A permutation drawn from the choices.
            for i in (1..entries.len()).rev() {
                entries.swap(i, c.pick(i + 1));
            }
            out.push('{');
            for (i, (name, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                space(c, out);
                write_string(name, c, out);
                space(c, out);
                out.push(':');
                space(c, out);
                write_value(item, c, out);
                space(c, out);
            }
            out.push('}');
        }
    }
}

fn write_number(n: &serde_json::Number, c: &mut Choices, out: &mut String) {
    const EXACT: i64 = 1 << 53;
    match (n.as_i64(), n.as_f64()) {
        (Some(i), _) if i.abs() < EXACT => {
            let text = match c.pick(5) {
                0 => format!("{i}"),
                1 => format!("{i}.0"),
                2 => format!("{i}e0"),
                3 => format!("{i}0e-1"),
                _ => format!("{i}.000E+0"),
            };
            out.push_str(&text);
        }
        (None, Some(f)) if n.is_f64() => {
            let text = match c.pick(3) {
                0 => format!("{f:?}"),
                1 => format!("{f:e}"),
                _ => format!("{f:E}"),
            };
            out.push_str(&text);
        }
        _ => out.push_str(&n.to_string()),
    }
}

fn write_string(s: &str, c: &mut Choices, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        let must_escape = ch == '"' || ch == '\\' || u32::from(ch) < 0x20;
        match (must_escape, c.pick(4)) {
            (_, 0) => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            (false, 1) if ch == '/' => out.push_str("\\/"),
            (false, _) => out.push(ch),
            (true, _) => {
                out.push_str(&format!("\\u{:04X}", u32::from(ch)));
            }
        }
    }
    out.push('"');
}

fn key_of(route: ReadRoute, path: &str, tenant: Tenant, body: &[u8]) -> Option<CacheKey> {
    read_key(route, path, tenant, body).map(|read| read.key)
}

/// JSON values that no documented equivalence makes equal: structure equal, strings equal, numbers
/// equal as integers, or (when either is not an integer) as `f64`. `null` inside a value counts.
fn json_equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i128(), y.as_i128()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equivalent(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equivalent(v, w)))
        }
        _ => a == b,
    }
}

// ---- normalisation ----------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn normalize_query_is_idempotent(raw in text()) {
        let once = normalize_query(&raw);
        prop_assert_eq!(normalize_query(&once), once.clone(), "raw: {:?}", raw);
    }

    #[test]
    fn normalized_queries_are_single_spaced_and_trimmed(raw in text()) {
        let n = normalize_query(&raw);
        prop_assert!(!n.starts_with(' ') && !n.ends_with(' '), "{:?}", n);
        prop_assert!(!n.contains("  "), "{:?}", n);
        prop_assert!(!n.chars().any(|c| c.is_whitespace() && c != ' '), "{:?}", n);
    }

    #[test]
    fn case_spacing_and_edge_punctuation_never_change_an_ascii_query(
        words in proptest::collection::vec("[a-zA-Z0-9]{1,8}", 0..6),
        gaps in proptest::collection::vec(proptest::sample::select(vec![" ", "  ", "\t", " \n "]), 6),
        ends in proptest::collection::vec(proptest::sample::select(vec!["", "?", "!", ",", "...", "\"", "(", ")"]), 12),
    ) {
        let plain = words.join(" ").to_lowercase();
        let noisy: String = words
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{}{}{}{}", gaps[i % gaps.len()], ends[2 * i], w.to_uppercase(), ends[2 * i + 1]))
            .collect();
        prop_assert_eq!(normalize_query(&noisy), plain);
    }
}

// ---- cache keys -------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn read_key_never_panics_on_arbitrary_bytes(
        (route, path) in read_row(),
        query_string in "\\PC{0,40}",
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let path = format!("{path}?{query_string}");
        let _ = read_key(route, &path, None, &body);
        let _ = read_key(route, &query_string, None, &body);
    }

    #[test]
    fn read_key_never_panics_on_arbitrary_json((route, path) in read_row(), value in json()) {
        let body = serde_json::to_vec(&value).unwrap();
        let _ = read_key(route, &path, None, &body);
    }

    #[test]
    fn the_same_body_written_differently_gives_the_same_key(
        (route, path) in read_row(),
        fields in body_object(),
        auth in tenant(),
        first in proptest::collection::vec(any::<u8>(), 0..32),
        second in proptest::collection::vec(any::<u8>(), 1..32),
    ) {
        let value = Value::Object(fields);
        let tenant = tenant_of(auth.as_deref());
        let plain = serde_json::to_vec(&value).unwrap();
        let (a, b) = (render(&value, &first), render(&value, &second));
        let expected = key_of(route, &path, tenant, &plain);
        prop_assert_eq!(
            &key_of(route, &path, tenant, &a), &expected,
            "{} vs {}", String::from_utf8_lossy(&a), String::from_utf8_lossy(&plain)
        );
        prop_assert_eq!(
            &key_of(route, &path, tenant, &b), &expected,
            "{} vs {}", String::from_utf8_lossy(&b), String::from_utf8_lossy(&plain)
        );
    }

    #[test]
    fn changing_a_parameter_value_changes_the_key(
        params in proptest::collection::btree_map(
            field_name().prop_filter("not a scope, query or set field", |n| {
                !matches!(n.as_str(), "user_id" | "agent_id" | "query" | "include_categories")
            }),
            json().prop_filter("non-null", |v| !v.is_null()),
            1..5,
        ),
        pick in any::<proptest::sample::Index>(),
        other in json().prop_filter("non-null", |v| !v.is_null()),
        (route, path) in proptest::sample::select(vec![
            (ReadRoute(&table::V1_RELATED), "/api/v1/memory/retrieve/related-memory-items"),
            (ReadRoute(&table::V3_RETRIEVE), "/api/v3/memory/retrieve"),
            (ReadRoute(&table::V4_SEARCH), "/api/v4/memory/search"),
            (ReadRoute(&table::SERVER_RETRIEVE), "/retrieve"),
        ]),
    ) {
        let (name, old) = params.iter().nth(pick.index(params.len())).unwrap();
        prop_assume!(!json_equivalent(old, &other));
        let body = |params: &BTreeMap<String, Value>| {
            let mut fields: Map<String, Value> = params.clone().into_iter().collect();
            fields.insert("user_id".into(), "u".into());
            fields.insert("agent_id".into(), "a".into());
            fields.insert("query".into(), "what is my cat called".into());
            serde_json::to_vec(&fields).unwrap()
        };
        let mut changed = params.clone();
        changed.insert(name.clone(), other.clone());
        let (a, b) = (key_of(route, path, None, &body(&params)), key_of(route, path, None, &body(&changed)));
        prop_assert!(a.is_some() && b.is_some());
        prop_assert_ne!(a, b, "{} changed from {} to {}", name, old, other);
        // Adding a field no one sent before changes it too.
        let mut added = params.clone();
        added.insert(format!("{name}_new"), other);
        prop_assert_ne!(key_of(route, path, None, &body(&params)), key_of(route, path, None, &body(&added)));
    }

    #[test]
    fn the_key_query_is_the_normalised_query(a in text(), b in text()) {
        let route = ReadRoute(&table::V1_RELATED);
        let path = "/api/v1/memory/retrieve/related-memory-items";
        let key = |q: &str| {
            let body = serde_json::json!({"user_id": "u", "query": q}).to_string();
            key_of(route, path, None, body.as_bytes()).unwrap()
        };
        let (key_a, normal_a) = (key(&a), normalize_query(&a));
        prop_assert_eq!(key_a.query.as_deref(), Some(normal_a.as_str()));
        prop_assert_eq!(key(&a) == key(&b), normalize_query(&a) == normalize_query(&b));
    }
}

/// Percent-encodes `s` for a query string, each byte spelt as `choices` say: letters and digits
/// literally or as `%XX` (either case), a space as `+` or `%20`, everything else as `%XX`.
fn form_encode(s: &str, c: &mut Choices) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match (b, c.pick(3)) {
            (b' ', 0) => out.push('+'),
            (b, 0) if b.is_ascii_alphanumeric() => out.push(char::from(b)),
            (b, 1) => out.push_str(&format!("%{b:02x}")),
            (b, _) => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

proptest! {
    #![proptest_config(config(256))]

    /// A v4 list request is the same request whatever the order of its (distinct) parameters and
    /// however they are percent-encoded.
    #[test]
    fn the_same_query_string_written_differently_gives_the_same_key(
        params in proptest::collection::btree_map(
            prop_oneof![
                2 => proptest::sample::select(vec!["user_id", "agent_id", "cursor", "limit"]).prop_map(str::to_owned),
                1 => text(),
            ],
            text(),
            0..5,
        ),
        auth in tenant(),
        first in proptest::collection::vec(any::<u8>(), 1..32),
        second in proptest::collection::vec(any::<u8>(), 1..32),
    ) {
        let route = ReadRoute(&table::V4_LIST);
        let tenant = tenant_of(auth.as_deref());
        let write = |choices: &[u8]| {
            let mut c = Choices { bytes: choices, next: 0 };
            let mut pairs: Vec<_> = params.iter().collect();
            for i in (1..pairs.len()).rev() {
                pairs.swap(i, c.pick(i + 1));
            }
            let query: Vec<String> = pairs
                .into_iter()
                .map(|(n, v)| format!("{}={}", form_encode(n, &mut c), form_encode(v, &mut c)))
                .collect();
            format!("/api/v4/memory?{}", query.join("&"))
        };
        let (a, b) = (write(&first), write(&second));
        prop_assert!(key_of(route, &a, tenant, b"").is_some(), "{}", a);
        prop_assert_eq!(key_of(route, &a, tenant, b""), key_of(route, &b, tenant, b""), "{} vs {}", a, b);
    }
}

/// Found by `the_same_body_written_differently_gives_the_same_key`: the key builder removed
/// duplicates by `serde_json::Value` equality, which tells the integer `1` from the float `1.0`,
/// so `[1, 1.0]` and `[1]` (one set) got two keys. Duplicates are now removed by canonical text.
#[test]
fn include_categories_is_a_set_of_values_whatever_their_spelling() {
    let route = ReadRoute(&table::V1_RELATED);
    let path = "/api/v1/memory/retrieve/related-memory-items";
    let key = |body: &str| key_of(route, path, None, body.as_bytes()).unwrap();
    let set = key(r#"{"user_id":"u","query":"q","include_categories":[1]}"#);
    assert_eq!(
        key(r#"{"user_id":"u","query":"q","include_categories":[1,1]}"#),
        set
    );
    assert_eq!(
        key(r#"{"user_id":"u","query":"q","include_categories":[1,1.0]}"#),
        set
    );
}

/// Who a request acts for, as a client would send it.
#[derive(Debug, Clone)]
struct Sender {
    auth: Option<Vec<u8>>,
    user: String,
    agent: Option<String>,
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(vec!["", " ", "u1", " u1", "u1 ", "U1", "default", "a", "\u{0}"])
            .prop_map(str::to_owned),
        1 => text(),
    ]
}

fn sender() -> impl Strategy<Value = Sender> {
    (tenant(), id(), proptest::option::of(id())).prop_map(|(auth, user, agent)| Sender {
        auth,
        user,
        agent,
    })
}

/// The scope the README documents for each way a row names its user and agent: `None` when the
/// request is not cacheable.
fn documented_scope(
    source: ScopeSource,
    s: &Sender,
) -> Option<(Option<Vec<u8>>, String, Option<String>)> {
    let or_default = |id: Option<&str>| match id {
        Some(id) if !id.trim().is_empty() => id.to_owned(),
        _ => "default".to_owned(),
    };
    let (user, agent) = match source {
        ScopeSource::Body {
            blank_agent_is_none,
        } => (
            s.user.clone(),
            s.agent
                .clone()
                .filter(|a| !(blank_agent_is_none && a.is_empty())),
        ),
        ScopeSource::BodyOrDefault | ScopeSource::QueryOrDefault => (
            or_default(Some(&s.user)),
            Some(or_default(s.agent.as_deref())),
        ),
        ScopeSource::ServerBody => {
            let user = s.user.trim();
            if user.is_empty() {
                return None;
            }
            (user.to_owned(), s.agent.clone())
        }
        _ => unreachable!("not a per-user read"),
    };
    Some((s.auth.clone(), user, agent))
}

fn percent_encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The key of a read of `query` by `s` on a per-user row.
fn sender_key(route: ReadRoute, s: &Sender) -> Option<CacheKey> {
    let tenant = tenant_of(s.auth.as_deref());
    if route.scope == ScopeSource::QueryOrDefault {
        let mut path = format!("/api/v4/memory?user_id={}", percent_encode_all(&s.user));
        if let Some(agent) = &s.agent {
            path.push_str(&format!("&agent_id={}", percent_encode_all(agent)));
        }
        return key_of(route, &path, tenant, b"");
    }
    let mut body = serde_json::json!({"user_id": s.user, "query": "tea"});
    if let Some(agent) = &s.agent {
        body["agent_id"] = agent.as_str().into();
    }
    key_of(route, "/p", tenant, body.to_string().as_bytes())
}

proptest! {
    #![proptest_config(config(512))]

    /// Different API keys, users or agents never share a key; the documented equivalences (v3
    /// categories `""` ≡ absent agent; v4 blank ≡ `default`; memU-server users trimmed) always do.
    #[test]
    fn keys_are_equal_exactly_when_tenant_user_and_agent_are(
        route in proptest::sample::select(vec![
            ReadRoute(&table::V1_RELATED),
            ReadRoute(&table::V1_CATEGORIES),
            ReadRoute(&table::V3_CATEGORIES),
            ReadRoute(&table::V3_RETRIEVE),
            ReadRoute(&table::V4_LIST),
            ReadRoute(&table::V4_SEARCH),
            ReadRoute(&table::SERVER_CATEGORIES),
        ]),
        a in sender(),
        b in sender(),
    ) {
        let (key_a, key_b) = (sender_key(route, &a), sender_key(route, &b));
        let (scope_a, scope_b) = (documented_scope(route.scope, &a), documented_scope(route.scope, &b));
        prop_assert_eq!(key_a.is_some(), scope_a.is_some(), "{:?}", a);
        prop_assert_eq!(key_b.is_some(), scope_b.is_some(), "{:?}", b);
        if let (Some(key_a), Some(scope_a)) = (&key_a, &scope_a) {
            prop_assert_eq!(key_a.scope.user.as_ref(), scope_a.1.as_str());
            prop_assert_eq!(key_a.scope.agent.as_deref(), scope_a.2.as_deref());
        }
        if key_a.is_some() && key_b.is_some() {
            prop_assert_eq!(key_a == key_b, scope_a == scope_b, "{:?} vs {:?}", a, b);
        }
    }
}

// ---- route classification ---------------------------------------------------------------------

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        proptest::sample::select(vec![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
            Method::PATCH,
        ]),
        "[A-Za-z!#$%&'*+.^_`|~0-9-]{1,12}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

/// Paths built from memU's own segments (so rows match often), or arbitrary text.
fn path() -> impl Strategy<Value = String> {
    let segment = proptest::sample::select(vec![
        "api",
        "v1",
        "v2",
        "v3",
        "v4",
        "memory",
        "retrieve",
        "related-memory-items",
        "default-categories",
        "related-clustered-categories",
        "memorize",
        "status",
        "delete",
        "search",
        "categories",
        "clear",
        "memu",
        "",
        "x",
        "%2F",
        "..",
    ]);
    prop_oneof![
        3 => proptest::collection::vec(segment, 0..7).prop_map(|s| format!("/{}", s.join("/"))),
        1 => "\\PC{0,40}",
    ]
}

fn pattern_matches(pattern: PathPattern, path: &str) -> bool {
    match pattern {
        PathPattern::Suffix(s) => path.ends_with(s),
        PathPattern::Root(s) => path.strip_suffix(s).is_some_and(|b| !b.contains("/api/")),
        PathPattern::Task(p) | PathPattern::RootTask(p) => path.contains(p),
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// `classify` never panics, and what it answers is sound: the proxy's own routes only for
    /// their exact path and method; the row's method is the request's and its path pattern
    /// matches the path memU routes on (a write's, also with one trailing slash); a task id is a
    /// non-empty last segment.
    #[test]
    fn classify_answers_only_rows_that_match(method in method(), raw in path()) {
        let routed = RequestPath::new(&raw);
        let path = routed.routed.to_string();
        match classify(&method, &routed) {
            RouteClass::Admin => {
                prop_assert!(method == Method::GET || method == Method::HEAD);
                prop_assert!(raw == "/metrics" || raw == "/healthz", "{}", raw);
            }
            RouteClass::Prewarm => {
                prop_assert_eq!(method, Method::POST);
                prop_assert_eq!(raw.as_str(), "/prewarm");
            }
            RouteClass::Read(read) => {
                prop_assert_eq!(&read.method, &method);
                prop_assert!(pattern_matches(read.path, &path), "{} {}", read.name, path);
            }
            RouteClass::Write(write) => {
                prop_assert_eq!(&write.method, &method);
                // A write's path with one trailing slash is that write (memU redirects to it).
                let slashless = path.strip_suffix('/').unwrap_or(&path);
                prop_assert!(
                    pattern_matches(write.path, &path) || pattern_matches(write.path, slashless),
                    "{} {}",
                    write.name,
                    path
                );
            }
            RouteClass::TaskStatus { task_id } => {
                prop_assert_eq!(method, Method::GET);
                prop_assert!(!task_id.is_empty() && !task_id.contains('/'));
                prop_assert!(path.ends_with(&format!("/{task_id}")), "{}", path);
            }
            RouteClass::PassThrough => {}
        }
    }

    /// Every suffix row is reached from under any base path (`/memu/api/v1/…`).
    #[test]
    fn every_suffix_row_is_reached_under_any_base_path(base in "(/[a-z0-9._-]{0,6}){0,3}") {
        for row in ROUTES {
            let (method, pattern) = match row {
                Row::Read(r) => (&r.method, r.path),
                Row::Write(w) => (&w.method, w.path),
                Row::Status(_) => continue,
            };
            let PathPattern::Suffix(suffix) = pattern else { continue };
            let path = format!("{base}{suffix}");
            prop_assert!(
                !matches!(classify(method, &RequestPath::new(&path)), RouteClass::PassThrough),
                "{} {}", method, path
            );
        }
    }
}

// ---- the near-duplicate shaper ----------------------------------------------------------------

/// Queries built from words the shaper treats specially (frames, fillers, negations, numerals,
/// pronouns, CJK particles), so that matches and near-misses both occur.
fn spoken() -> impl Strategy<Value = String> {
    let word = proptest::sample::select(vec![
        "can",
        "you",
        "tell",
        "me",
        "um",
        "uh",
        "what",
        "is",
        "my",
        "your",
        "cat",
        "cat's",
        "called",
        "the",
        "not",
        "don't",
        "three",
        "3",
        "pm",
        "I",
        "like",
        "tea",
        "你",
        "我",
        "还",
        "记得",
        "那个",
        "三点",
        "3点",
        "不",
        "喜欢",
        "猫",
        "吗",
        "呢",
        "？",
        "えっと",
        "私",
        "の",
        "猫",
        "は",
        "ない",
        "？",
        ",",
        "!",
        "、",
    ]);
    prop_oneof![
        4 => proptest::collection::vec(word, 0..8).prop_map(|w| w.join(" ")),
        2 => proptest::collection::vec(proptest::sample::select(vec![
            "你", "我", "还", "记得", "三点", "不", "喜欢", "猫", "吗", "呢", "えっと", "私", "の", "は", "ない",
        ]), 0..8).prop_map(|w| w.concat()),
        1 => text(),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn similarity_is_symmetric_bounded_and_one_for_identical(a in spoken(), b in spoken()) {
        let ab = similarity(&a, &b);
        prop_assert_eq!(ab.to_bits(), similarity(&b, &a).to_bits(), "{:?} / {:?}", a, b);
        prop_assert!((0.0..=1.0).contains(&ab), "{} for {:?} / {:?}", ab, a, b);
        prop_assert_eq!(similarity(&a, &a), 1.0);
        if normalize_query(&a) == normalize_query(&b) {
            prop_assert_eq!(ab, 1.0);
        }
    }

    /// Two queries are ever alike only when their content tokens are the same.
    #[test]
    fn only_queries_with_the_same_content_are_alike(a in spoken(), b in spoken()) {
        let (sa, sb) = (Shape::of(&normalize_query(&a)), Shape::of(&normalize_query(&b)));
        let s = sa.similarity(&sb);
        prop_assert_eq!(s.to_bits(), sb.similarity(&sa).to_bits());
        prop_assert!((0.0..=1.0).contains(&s));
        prop_assert_eq!(sa.similarity(&sa), 1.0);
        if s > 0.0 {
            prop_assert_eq!(&sa.content, &sb.content, "{:?} / {:?}", a, b);
        }
    }

    /// The shaper is meant for normalised text, but must not panic on anything.
    #[test]
    fn shape_never_panics_on_raw_text(raw in text()) {
        let shape = Shape::of(&raw);
        prop_assert!(shape.content.windows(2).all(|w| w[0] < w[1]), "sorted, deduplicated");
    }
}

// ---- header parsing ---------------------------------------------------------------------------

fn header_name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        3 => proptest::sample::select(vec![
            "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
            "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
            "cache-control", "x-memu-budget-ms", "authorization", "content-type", "x-a", "x-b",
        ])
        .prop_map(HeaderName::from_static),
        1 => "[a-z0-9-]{1,10}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap()),
    ]
}

/// Header values: arbitrary bytes (those `http` accepts), or lists of header names and
/// directives as `Connection` and `Cache-Control` carry them.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let token = proptest::sample::select(vec![
        "x-a",
        "X-B",
        "keep-alive",
        "upgrade",
        "no-store",
        "No-Cache",
        "no-cache=\"x\"",
        "max-age=0",
        "",
        " ",
        "close",
        "42",
        " 7 ",
        "-1",
        "18446744073709551616",
        "1e3",
    ]);
    prop_oneof![
        2 => proptest::collection::vec(token, 0..4).prop_map(|t| HeaderValue::from_str(&t.join(",")).unwrap()),
        1 => proptest::collection::vec(any::<u8>(), 0..24)
            .prop_filter_map("a valid header value", |b| HeaderValue::from_bytes(&b).ok()),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec((header_name(), header_value()), 0..8).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, value);
        }
        map
    })
}

/// Names listed in `Connection`, as RFC 9110 §7.6.1 reads them.
fn connection_names(headers: &HeaderMap) -> HashSet<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn strip_hop_by_hop_removes_exactly_the_connection_headers(original in headers()) {
        let named = connection_names(&original);
        let hop: BTreeSet<&str> = [
            "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
            "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
        ]
        .into();
        let mut stripped = original.clone();
        strip_hop_by_hop(&mut stripped);
        for name in original.keys() {
            let removed = hop.contains(name.as_str()) || named.contains(name);
            prop_assert_eq!(stripped.contains_key(name), !removed, "{}", name);
            if !removed {
                let before: Vec<_> = original.get_all(name).iter().collect();
                let after: Vec<_> = stripped.get_all(name).iter().collect();
                prop_assert_eq!(before, after);
            }
        }
        prop_assert!(stripped.len() <= original.len());
    }

    #[test]
    fn client_cache_reads_no_store_and_no_cache_anywhere(mut headers in headers(), extra in proptest::option::of(proptest::sample::select(vec!["no-store", "NO-STORE", "no-cache", " No-Cache=foo "]))) {
        if let Some(directive) = extra {
            headers.append(http::header::CACHE_CONTROL, HeaderValue::from_static(directive));
        }
        let directives: Vec<String> = headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|d| d.split('=').next().unwrap_or_default().trim().to_ascii_lowercase())
            .collect();
        let expected = if directives.iter().any(|d| d == "no-store") {
            ClientCache::Bypass
        } else if directives.iter().any(|d| d == "no-cache") {
            ClientCache::Revalidate
        } else {
            ClientCache::Normal
        };
        prop_assert_eq!(client_cache(&headers), expected);
    }

    #[test]
    fn request_budget_is_bounded_by_the_deadline_or_rejected(
        headers in headers(),
        configured in proptest::option::of(0u64..10_000),
        timeout in 1u64..10_000,
    ) {
        let timeout = Duration::from_millis(timeout);
        let configured = configured.map(Duration::from_millis);
        let sent = headers.get("x-memu-budget-ms");
        let parsed = sent.and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
        match request_budget(&headers, configured, timeout) {
            Ok(Some(budget)) => {
                prop_assert!(budget <= timeout);
                prop_assert!(sent.is_none() || budget > Duration::ZERO);
            }
            Ok(None) => prop_assert!(sent.is_none() && configured.is_none() || parsed == Some(0)),
            Err(_) => prop_assert!(sent.is_some() && parsed.is_none()),
        }
        prop_assert_eq!(request_budget(&headers, configured, timeout).is_ok(), sent.is_none() || parsed.is_some());
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// Any finite float, in its shortest decimal and exponent spellings, is one parameter value.
    #[test]
    fn any_float_in_decimal_or_exponent_form_gives_one_key(f in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
        let route = ReadRoute(&table::V1_RELATED);
        let path = "/api/v1/memory/retrieve/related-memory-items";
        let body = |n: String| format!(r#"{{"user_id":"u","query":"q","min_similarity":{n}}}"#);
        let (a, b) = (body(format!("{f:?}")), body(format!("{f:e}")));
        prop_assert_eq!(key_of(route, path, None, a.as_bytes()), key_of(route, path, None, b.as_bytes()), "{} vs {}", a, b);
    }
}
