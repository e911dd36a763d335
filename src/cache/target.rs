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
mod tests;
