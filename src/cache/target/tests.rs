//! What each write invalidates, read as memU reads it; where each route names its scope.

use super::*;
use crate::routes::table::*;

fn targets(
    row: &'static crate::routes::WriteRow,
    body: &str,
) -> Vec<(String, Option<String>, Invalidate)> {
    write_targets(WriteRoute(row), None, body.as_bytes())
        .0
        .into_iter()
        .map(|(s, i)| (s.user.into(), s.agent.map(Into::into), i))
        .collect()
}

fn t(user: &str, agent: Option<&str>, i: Invalidate) -> (String, Option<String>, Invalidate) {
    (user.into(), agent.map(Into::into), i)
}

#[test]
fn what_each_write_invalidates() {
    use Invalidate::*;
    let g = GLOBAL_USER;
    let cases: &[(&'static crate::routes::WriteRow, &str, Vec<_>)] = &[
        (
            &V1_MEMORIZE,
            r#"{"user_id":"u","agent_id":"a","conversation":[]}"#,
            vec![t("u", Some("a"), Agent)],
        ),
        (
            &V1_MEMORIZE,
            r#"{"user_id":"u","conversation":[]}"#,
            vec![t("u", None, AllAgents)],
        ),
        (
            &V1_DELETE,
            r#"{"user_id":"u","agent_id":null}"#,
            vec![t("u", None, AllAgents)],
        ),
        (
            &V1_DELETE,
            r#"{"user_id":"u","agent_id":"a"}"#,
            vec![t("u", Some("a"), Agent)],
        ),
        (
            &V1_DELETE,
            r#"{"agent_id":"a"}"#,
            vec![t(g, None, Everything)],
        ),
        (&V1_DELETE, "garbage", vec![t(g, None, Everything)]),
        (
            &V3_MEMORIZE,
            r#"{"user_id":"u","agent_id":"a","conversation":[]}"#,
            vec![t("u", None, AllAgents)],
        ),
        (
            &V3_DELETE,
            r#"{"user_id":"u"}"#,
            vec![t("u", None, AllAgents)],
        ),
        (
            &V4_COMMIT,
            r#"{"user":{"user_id":"u","agent_id":"a"},"recall_files":[]}"#,
            vec![t("u", Some("a"), Agent)],
        ),
        (
            &V4_COMMIT,
            r#"{"user":{"user_id":" ","agent_id":null},"recall_files":[]}"#,
            vec![t("default", Some("default"), Agent)],
        ),
        (
            &V4_COMMIT,
            r#"{"recall_files":[]}"#,
            vec![t("default", Some("default"), Agent)],
        ),
        (
            &SERVER_MEMORIZE,
            r#"{"user_id":" u ","conversation":[]}"#,
            vec![t(g, None, Agent), t("u", None, AllAgents)],
        ),
        (
            &SERVER_CLEAR,
            r#"{"user_id":"u"}"#,
            vec![t(g, None, Agent), t("u", None, AllAgents)],
        ),
        (
            &SERVER_CLEAR,
            r#"{"agent_id":"a"}"#,
            vec![t(g, None, Everything)],
        ),
        (
            &SERVER_CLEAR,
            r#"{"user_id":"  ","agent_id":""}"#,
            vec![
                t(g, None, Agent),
                t("  ", None, AllAgents),
                t("", None, AllAgents),
            ],
        ),
    ];
    for (row, body, want) in cases {
        assert_eq!(&targets(row, body), want, "{} {body}", row.name);
    }
}

#[test]
fn scope_sources() {
    let scope = |source, body: &str| {
        let mut fields: Map<String, Value> = serde_json::from_str(body).unwrap();
        take_scope(source, &mut fields, None)
            .map(|s| (s.user.to_string(), s.agent.map(String::from)))
    };
    let some = |u: &str, a: Option<&str>| Some((u.to_owned(), a.map(str::to_owned)));
    let body = ScopeSource::Body {
        blank_agent_is_none: false,
    };
    let v3 = ScopeSource::Body {
        blank_agent_is_none: true,
    };
    assert_eq!(
        scope(body, r#"{"user_id":"u","agent_id":""}"#),
        some("u", Some(""))
    );
    assert_eq!(
        scope(v3, r#"{"user_id":"u","agent_id":""}"#),
        some("u", None)
    );
    assert_eq!(scope(body, r#"{"user_id":"u","agent_id":1}"#), None);
    assert_eq!(
        scope(ScopeSource::BodyOrDefault, "{}"),
        some("default", Some("default"))
    );
    assert_eq!(scope(ScopeSource::BodyOrDefault, r#"{"user_id":5}"#), None);
    assert_eq!(
        scope(
            ScopeSource::ServerBody,
            r#"{"user_id":" u ","agent_id":""}"#
        ),
        some("u", Some(""))
    );
    assert_eq!(
        scope(ScopeSource::ServerBody, r#"{"user_id":"u"}"#),
        some("u", None)
    );
    assert_eq!(scope(ScopeSource::ServerBody, r#"{"user_id":"  "}"#), None);
    assert_eq!(
        scope(ScopeSource::Global, r#"{"user_id":"u"}"#),
        some(GLOBAL_USER, None)
    );
}

#[test]
fn bodies_memu_reads_and_serde_json_does_not_still_invalidate() {
    use Invalidate::*;
    let g = GLOBAL_USER;
    let utf16: Vec<u8> =
        r#"{"user_id":"u","agent_id":"a"}"#.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let deep = format!(
        r#"{{"user_id":"u","x":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let cases: Vec<(&'static crate::routes::WriteRow, Vec<u8>, Vec<_>, Reading)> = vec![
        (
            &V1_DELETE,
            b"\xEF\xBB\xBF{\"user_id\":\"u\",\"agent_id\":\"a\"}".to_vec(),
            vec![t("u", Some("a"), Agent)],
            Reading::Named,
        ),
        (
            &V1_DELETE,
            utf16,
            vec![t("u", Some("a"), Agent)],
            Reading::Named,
        ),
        (
            &V1_MEMORIZE,
            br#"{"user_id":"u","agent_id":"a","score":NaN}"#.to_vec(),
            vec![t("u", None, AllAgents)],
            Reading::Users,
        ),
        (
            &V1_MEMORIZE,
            br#"{"user_id":"u","n":1e400}"#.to_vec(),
            vec![t("u", None, AllAgents)],
            Reading::Users,
        ),
        (
            &V1_MEMORIZE,
            deep.into_bytes(),
            vec![t("u", None, AllAgents)],
            Reading::Users,
        ),
        (
            &SERVER_MEMORIZE,
            br#"{"user_id":" u ","text":"\ud800"}"#.to_vec(),
            vec![
                t(g, None, Agent),
                t(" u ", None, AllAgents),
                t("u", None, AllAgents),
            ],
            Reading::Users,
        ),
        (
            &V1_DELETE,
            br#"{"user_id":"\udc00","agent_id":"a"}"#.to_vec(),
            vec![t(g, None, Everything)],
            Reading::Everything,
        ),
        (
            &V4_COMMIT,
            br#"{"user":{"user_id":" "},"recall_files":[],"x":NaN}"#.to_vec(),
            vec![
                t(" ", None, AllAgents),
                t("", None, AllAgents),
                t("default", None, AllAgents),
            ],
            Reading::Users,
        ),
    ];
    for (row, body, want, reading) in cases {
        let (found, read) = write_targets(WriteRoute(row), None, &body);
        let found: Vec<_> = found
            .into_iter()
            .map(|(s, i)| (s.user.into(), s.agent.map(Into::into), i))
            .collect();
        assert_eq!(
            (found, read),
            (want, reading),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}
