//! Who a request acts for: its tenant (a digest of `Authorization`) and the (user, agent) it
//! reads or writes, found where its route's row says ([`ScopeSource`]); and which scopes a write
//! invalidates ([`write_targets`]). Pure.
//!
//! Reads of memU-server's `/retrieve`, which ignores the user, share one [`Scope::global`]; every
//! write to that server invalidates it.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

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

/// The scopes a write invalidates, and how. Empty when the body names no scope it can act on
/// (memU answers such a write with an error, typically 422).
pub fn write_targets(route: WriteRoute, tenant: Tenant, body: &[u8]) -> Vec<(Scope, Invalidate)> {
    let Ok(mut fields) = serde_json::from_slice::<Map<String, Value>>(body) else {
        return Vec::new();
    };
    if route.scope == ScopeSource::ServerClear {
        return clear_targets(&mut fields, tenant);
    }
    let Some(scope) = take_scope(route.scope, &mut fields, tenant) else {
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
            (&V1_DELETE, r#"{"agent_id":"a"}"#, vec![]),
            (&V1_DELETE, "garbage", vec![]),
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
            (&SERVER_CLEAR, r#"{"user_id":"  ","agent_id":""}"#, vec![]),
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
}
