//! The route table, tested: classification of every generation's paths and the rows' data.

use super::table::*;
use super::*;
use std::borrow::Cow;

#[test]
fn classification_table() {
    let read = |row: &'static ReadRow| RouteClass::Read(ReadRoute(row));
    let write = |row: &'static WriteRow| RouteClass::Write(WriteRoute(row));
    let status = |task_id| RouteClass::TaskStatus { task_id };
    let (get, post, put) = (Method::GET, Method::POST, Method::PUT);
    let pass = RouteClass::PassThrough;
    let cases: &[(&Method, &str, RouteClass)] = &[
        // v1/v2, as before: any base path in front of /memory/.
        (
            &post,
            "/api/v1/memory/retrieve/related-memory-items",
            read(&V1_RELATED),
        ),
        (
            &post,
            "/api/v2/memory/retrieve/related-memory-items",
            read(&V1_RELATED),
        ),
        (
            &post,
            "/memu/api/v1/memory/retrieve/default-categories",
            read(&V1_CATEGORIES),
        ),
        (
            &post,
            "/api/v1/memory/retrieve/related-clustered-categories",
            read(&V1_CLUSTERED),
        ),
        (&get, "/api/v1/memory/retrieve/related-memory-items", pass),
        (&post, "/api/v1/memory/memorize", write(&V1_MEMORIZE)),
        (&post, "/x/api/v2/memory/delete", write(&V1_DELETE)),
        (
            &get,
            "/api/v1/memory/memorize/status/abc-1",
            status("abc-1"),
        ),
        (&post, "/api/v1/memory/memorize/status/abc-1", pass),
        (&get, "/api/v1/memory/memorize/status/", pass),
        (&get, "/api/v1/memory/memorize/status/a/summary", pass),
        (&post, "/api/v2/chat", pass),
        (&get, "/health", pass),
        (&get, "/", pass),
        (&post, "/api/v1/memory/retrieve/related-memory-items/", pass),
        (&post, "/retrieve/related-memory-items", pass),
        // cloud v3.
        (&post, "/api/v3/memory/retrieve", read(&V3_RETRIEVE)),
        (&post, "/memu/api/v3/memory/retrieve", read(&V3_RETRIEVE)),
        (&post, "/api/v3/memory/categories", read(&V3_CATEGORIES)),
        (&post, "/api/v3/memory/memorize", write(&V3_MEMORIZE)),
        (&post, "/api/v3/memory/delete", write(&V3_DELETE)),
        (
            &get,
            "/api/v3/memory/memorize/status/3AATM4mk",
            status("3AATM4mk"),
        ),
        (&get, "/api/v3/memory/retrieve", pass),
        (&post, "/api/v3/memory/retrieve/", pass),
        // cloud v4: one path, read by GET, written by POST; slashless.
        (&get, "/api/v4/memory", read(&V4_LIST)),
        (&post, "/api/v4/memory", write(&V4_COMMIT)),
        (&post, "/px/api/v4/memory/search", read(&V4_SEARCH)),
        (&get, "/api/v4/memory/", pass),
        (&put, "/api/v4/memory", pass),
        (&get, "/api/v4/memory/search", pass),
        (&post, "/api/memu/analytics/events", pass),
        // memU-server: at the root or under a base path, never inside /api/.
        (&post, "/retrieve", read(&SERVER_RETRIEVE)),
        (&post, "/memu/retrieve", read(&SERVER_RETRIEVE)),
        (&post, "/categories", read(&SERVER_CATEGORIES)),
        (&post, "/memorize", write(&SERVER_MEMORIZE)),
        (&post, "/clear", write(&SERVER_CLEAR)),
        (
            &get,
            "/memorize/status/memorize-0123",
            status("memorize-0123"),
        ),
        (&post, "/retrieve/", pass),
        (&get, "/retrieve", pass),
        (&post, "/api/v1/memory/retrieve", pass),
        (&post, "/api/v9/retrieve", pass),
        // The proxy's own routes: exactly their path as sent, with their method.
        (&get, "/metrics", RouteClass::Admin),
        (&Method::HEAD, "/healthz", RouteClass::Admin),
        (&post, "/metrics", pass),
        (&get, "/%6Detrics", pass),
        (&get, "/memu/metrics", pass),
        (&post, "/prewarm", RouteClass::Prewarm),
        (&get, "/prewarm", pass),
        (&post, "/api/v1/prewarm", pass),
    ];
    for (method, path, want) in cases {
        assert_eq!(
            classify(method, &RequestPath::new(path)),
            *want,
            "{method} {path}"
        );
    }
}

#[test]
fn names_are_unique_and_fallbacks_are_json_objects_with_the_required_lists() {
    let mut names = std::collections::HashSet::new();
    for row in ROUTES {
        let name = match row {
            Row::Read(r) => r.name,
            Row::Write(w) => w.name,
            Row::Status(s) => s.name,
        };
        assert!(names.insert(name), "duplicate row name {name}");
        if let Row::Read(r) = row {
            let value: serde_json::Value = serde_json::from_str(r.fallback.template)
                .unwrap_or_else(|e| panic!("{}: {e}", r.name));
            for field in r.lists {
                let found = field.iter().try_fold(&value, |v, k| v.get(k));
                assert!(
                    found.is_some_and(serde_json::Value::is_array),
                    "{}: {field:?}",
                    r.name
                );
            }
        }
    }
}

#[test]
fn writes_are_recognised_on_the_path_memu_routes_on() {
    let write = |row: &'static WriteRow| RouteClass::Write(WriteRoute(row));
    let post = Method::POST;
    let cases: &[(&str, RouteClass)] = &[
        // uvicorn percent-decodes the path, `%2F` included, before FastAPI routes it.
        ("/api/v1/memory/memoriz%65", write(&V1_MEMORIZE)),
        ("/api/v1/memory%2Fmemorize", write(&V1_MEMORIZE)),
        ("/api/v1/memory%2fdelete", write(&V1_DELETE)),
        ("%2Fapi%2Fv3%2Fmemory%2Fdelete", write(&V3_DELETE)),
        ("/cl%65ar", write(&SERVER_CLEAR)),
        // A trailing slash: memU redirects to the write, which the client may follow.
        ("/api/v1/memory/memorize/", write(&V1_MEMORIZE)),
        ("/api/v1/memory/delete/", write(&V1_DELETE)),
        ("/api/v4/memory/", write(&V4_COMMIT)),
        ("/clear/", write(&SERVER_CLEAR)),
        ("/memorize%2F", write(&SERVER_MEMORIZE)),
        // Reads keep their exact paths: memU answers their slashed variants itself.
        (
            "/api/v1/memory/retrieve/related-memory-items/",
            RouteClass::PassThrough,
        ),
        (
            "/api/v1/memory/retrieve/related-memory-item%73",
            RouteClass::Read(ReadRoute(&V1_RELATED)),
        ),
        ("/api/v1/memory/memorize//", RouteClass::PassThrough),
        ("/api/v1/memory/memoriz%", RouteClass::PassThrough),
    ];
    for (raw, want) in cases {
        assert_eq!(classify(&post, &RequestPath::new(raw)), *want, "{raw}");
    }
    assert!(matches!(routed_path("/plain"), Cow::Borrowed("/plain")));
    assert_eq!(
        routed_path("/a%FFb"),
        "/a\u{FFFD}b",
        "invalid UTF-8 replaced"
    );
}
