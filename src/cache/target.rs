//! Who a request acts for: its tenant (a digest of `Authorization`) and the (user, agent) it
//! reads or writes, found where its route's row says ([`ScopeSource`]); and which scopes a write
//! invalidates ([`write_targets`]), read as memU reads it (`lenient.rs`) and never none. Pure.
//!
//! Reads of memU-server's `/retrieve`, which ignores the user, share one [`Scope::global`]; every
//! write to that server invalidates it.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::lenient;
use crate::routes::{ScopeSource, WriteRoute, WriteScope};

/// Who a request acts for: a digest of its `Authorization` header (`None` when absent).
pub type Tenant = Option<[u8; 32]>;

/// Digests an `Authorization` header value; the raw credential is never kept.
pub fn tenant_of(authorization: Option<&[u8]>) -> Tenant {
    authorization.map(|value| Sha256::digest(value).into())
}

/// The tenant of a request: the digest of its `Authorization` header.
pub fn request_tenant(headers: &http::HeaderMap) -> Tenant {
    tenant_of(
        headers
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes),
    )
}

/// The (tenant, user, agent) a request reads or writes. `agent: None` is memU's `agent_id: null`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub tenant: Tenant,
    pub user: Box<str>,
    pub agent: Option<Box<str>>,
}

/// Which generations a write bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidate {
    /// memorize/delete for (U, A): reads of (U, A) and (U, null).
    Agent,
    /// delete for (U, null): every read of U.
    AllAgents,
    /// Every read of every scope.
    Everything,
}

/// The user of [`Scope::global`]: a NUL-prefixed name no client sends (if one did, it would only
/// share invalidations with global reads: spurious misses, never a wrong answer).
const GLOBAL_USER: &str = "\0memu-proxy:every-user";

/// The id v4 clients use for a missing or blank user or agent.
const DEFAULT_ID: &str = "default";

impl Scope {
    /// The scope of reads that cover every user (memU-server `/retrieve`).
    pub fn global(tenant: Tenant) -> Scope {
        Scope {
            tenant,
            user: GLOBAL_USER.into(),
            agent: None,
        }
    }
}

/// Takes the scope out of a request's fields (body fields, or query-string parameters for
/// [`ScopeSource::QueryOrDefault`]); `None` when the fields the source needs are missing or of
/// the wrong type. The scope fields are removed, so what remains are the other parameters.
pub fn take_scope(
    source: ScopeSource,
    fields: &mut Map<String, Value>,
    tenant: Tenant,
) -> Option<Scope> {
    let (user, agent) = match source {
        ScopeSource::Body {
            blank_agent_is_none,
        } => {
            let user = take_string(fields, "user_id")?;
            let agent = match fields.remove("agent_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(a)) if blank_agent_is_none && a.is_empty() => None,
                Some(Value::String(a)) => Some(a),
                Some(_) => return None,
            };
            (user, agent)
        }
        ScopeSource::BodyOrDefault | ScopeSource::QueryOrDefault => {
            let user = take_or_default(fields, "user_id")?;
            (user, Some(take_or_default(fields, "agent_id")?))
        }
        ScopeSource::NestedUserOrDefault => {
            let mut user = match fields.remove("user") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(user)) => user,
                Some(_) => return None,
            };
            let id = take_or_default(&mut user, "user_id")?;
            (id, Some(take_or_default(&mut user, "agent_id")?))
        }
        ScopeSource::ServerBody => {
            let user = take_string(fields, "user_id")?.trim().to_owned();
            if user.is_empty() {
                return None;
            }
            let agent = match fields.remove("agent_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(a)) => Some(a),
                Some(_) => return None,
            };
            (user, agent)
        }
        ScopeSource::Global => return Some(Scope::global(tenant)),
        // Handled by `write_targets`: a clear may name no user at all.
        ScopeSource::ServerClear => return None,
    };
    Some(Scope {
        tenant,
        user: user.into_boxed_str(),
        agent: agent.map(String::into_boxed_str),
    })
}

/// How a write's scopes were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// From the body, where the route's row says.
    Named,
    /// The body could not be read as the row says (not JSON serde_json accepts, or no scope in
    /// it); every scope of each user a lenient scan found is invalidated instead.
    Users,
    /// Nor could a scan find whose memories it touches: every scope is invalidated.
    Everything,
}

/// The scopes a write invalidates, and how; never none. A body the proxy cannot read as memU
/// reads it invalidates more than the write touched, never less ([`Reading`]).
pub fn write_targets(
    route: WriteRoute,
    tenant: Tenant,
    body: &[u8],
) -> (Vec<(Scope, Invalidate)>, Reading) {
    let text = lenient::text(body);
    if let Ok(mut fields) = serde_json::from_str::<Map<String, Value>>(&text) {
        let named = named_targets(route, tenant, &mut fields);
        if !named.is_empty() {
            return (named, Reading::Named);
        }
    }
    match lenient::user_ids(&text) {
        Some(users) if !users.is_empty() => (user_targets(route, tenant, users), Reading::Users),
        _ => (
            vec![(Scope::global(tenant), Invalidate::Everything)],
            Reading::Everything,
        ),
    }
}

/// The scopes the body's fields name, where the route's row says; empty when they name none
/// (memU answers such a write with an error, typically 422).
fn named_targets(
    route: WriteRoute,
    tenant: Tenant,
    fields: &mut Map<String, Value>,
) -> Vec<(Scope, Invalidate)> {
    if route.scope == ScopeSource::ServerClear {
        return clear_targets(fields, tenant);
    }
    let Some(scope) = take_scope(route.scope, fields, tenant) else {
        return Vec::new();
    };
    let user = |scope: Scope| Scope {
        agent: None,
        ..scope
    };
    match route.invalidates {
        WriteScope::AgentOrUser if scope.agent.is_none() => vec![(scope, Invalidate::AllAgents)],
        WriteScope::AgentOrUser | WriteScope::Agent => vec![(scope, Invalidate::Agent)],
        WriteScope::User => vec![(user(scope), Invalidate::AllAgents)],
        WriteScope::UserAndGlobal => vec![
            (Scope::global(tenant), Invalidate::Agent),
            (user(scope), Invalidate::AllAgents),
        ],
    }
}

/// Every scope of each of `users` (as sent, and trimmed as memU-server trims them; and `default`
/// where the route defaults a missing user), and the global reads where the route's writes reach
/// them.
fn user_targets(
    route: WriteRoute,
    tenant: Tenant,
    mut users: Vec<String>,
) -> Vec<(Scope, Invalidate)> {
    let mut targets = Vec::new();
    if route.invalidates == WriteScope::UserAndGlobal {
        targets.push((Scope::global(tenant), Invalidate::Agent));
    }
    if matches!(
        route.scope,
        ScopeSource::BodyOrDefault | ScopeSource::NestedUserOrDefault | ScopeSource::QueryOrDefault
    ) {
        // The scanned ids may not be the scope's (blank, or another member's): v4 writes to
        // `default` when its own is missing or blank.
        users.push(DEFAULT_ID.to_owned());
    }
    for user in users {
        let trimmed = user.trim();
        let names = [Some(user.as_str()), (trimmed != user).then_some(trimmed)];
        for name in names.into_iter().flatten() {
            let scope = Scope {
                tenant,
                user: name.into(),
                agent: None,
            };
            if !targets.contains(&(scope.clone(), Invalidate::AllAgents)) {
                targets.push((scope, Invalidate::AllAgents));
            }
        }
    }
    targets
}

/// memU-server `/clear`: the user's reads and every global read; without a user (only
/// `agent_id`), that agent of every user, which only a global bump covers.
fn clear_targets(fields: &mut Map<String, Value>, tenant: Tenant) -> Vec<(Scope, Invalidate)> {
    let named = |fields: &mut Map<String, Value>, name| {
        take_string(fields, name).filter(|v| !v.trim().is_empty())
    };
    let user = named(fields, "user_id");
    let agent = named(fields, "agent_id");
    match (user, agent) {
        (Some(user), _) => vec![
            (Scope::global(tenant), Invalidate::Agent),
            (
                Scope {
                    tenant,
                    user: user.trim().into(),
                    agent: None,
                },
                Invalidate::AllAgents,
            ),
        ],
        (None, Some(_)) => vec![(Scope::global(tenant), Invalidate::Everything)],
        (None, None) => Vec::new(),
    }
}

fn take_string(fields: &mut Map<String, Value>, name: &str) -> Option<String> {
    match fields.remove(name) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// A v4 id: missing, null or blank (after trimming) means `"default"`, as the client sends it.
fn take_or_default(fields: &mut Map<String, Value>, name: &str) -> Option<String> {
    match fields.remove(name) {
        None | Some(Value::Null) => Some(DEFAULT_ID.to_owned()),
        Some(Value::String(s)) if s.trim().is_empty() => Some(DEFAULT_ID.to_owned()),
        Some(Value::String(s)) => Some(s),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
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
}
