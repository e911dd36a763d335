//! memU's routes, for every API generation, as one table of data ([`table`]), and the pure
//! classification of a request by method and path.
//!
//! A row says everything the proxy needs to know about a route: its generation, method and path
//! pattern, and its class: a cacheable read (where user and agent come from, which field is the
//! query, which list fields an answer must have to be stored, the empty fallback), a write (its
//! invalidation scope, and for asynchronous writes where the task id is and which task states
//! mean success), or a task-status poll. Anything that matches no row is passed through. Adding a
//! generation is adding rows. Pure: a method and a path in, a class out.
//!
//! The path classified is the one memU routes on: uvicorn percent-decodes the request path
//! (`%2F` included) before FastAPI matches it ([`routed_path`]), so `/api/v1/memory/memoriz%65`
//! is a memorize. A write's path with one trailing slash is that write too: memU answers it with a
//! redirect to the slashless path, which a client may follow (the proxy rewrites the redirect to
//! come back through it, `upstream/location.rs`), so it is invalidated as the write it leads to.

mod class;
pub mod table;
#[cfg(test)]
mod tests;

use std::hash::{Hash, Hasher};

use http::Method;

pub use class::{
    classify, routed_path, RequestPath, RouteClass, RouteClassLabel, HEALTH_PATH, METRICS_PATH,
    PREWARM_PATH,
};

/// An API generation of memU (named in a prewarm body as `"v1"`, `"v3"`, `"v4"`, `"server"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Generation {
    /// `/api/v1|v2/memory/…` (memu-py 0.1.x/0.2.x, the self-hosted memu-server 0.1.8).
    V1,
    /// The cloud's `/api/v3/memory/…` (memu-sdk 1.0).
    V3,
    /// The cloud's `/api/v4/memory` (memu-cli).
    V4,
    /// The self-hosted memU-server 1.x, at its root (`/retrieve`, `/memorize`, …).
    Server,
}

impl Generation {
    pub fn as_str(self) -> &'static str {
        match self {
            Generation::V1 => "v1",
            Generation::V3 => "v3",
            Generation::V4 => "v4",
            Generation::Server => "server",
        }
    }
}

/// A path in a JSON document: `&["result", "task_id"]` is `doc.result.task_id`.
pub type Field = &'static [&'static str];

/// How a row's path is matched. Every pattern is a suffix starting with `/`, so it matches on a
/// segment boundary after any base path; trailing slashes are never added or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathPattern {
    /// The path ends with this.
    Suffix(&'static str),
    /// The path ends with this, and the base path before it has no `/api/` in it (memU-server
    /// serves at its root: `/retrieve` must not catch `/api/v1/memory/retrieve`).
    Root(&'static str),
    /// The path is this followed by one non-empty segment, the task id.
    Task(&'static str),
    /// Like [`PathPattern::Task`], for memU-server at its root (same base-path rule as `Root`).
    RootTask(&'static str),
}

impl PathPattern {
    /// The path a request of a `Suffix` or `Root` row ends with (after its base path); `None`
    /// for task patterns, whose path also holds the task id.
    pub fn suffix(self) -> Option<&'static str> {
        match self {
            PathPattern::Suffix(suffix) | PathPattern::Root(suffix) => Some(suffix),
            PathPattern::Task(_) | PathPattern::RootTask(_) => None,
        }
    }
}

/// Where a request names the user and agent it reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeSource {
    /// Body `user_id` (a string, required) and `agent_id` (a string; null or absent: none).
    /// With `blank_agent_is_none`, `""` is the same as absent (v3 categories).
    Body { blank_agent_is_none: bool },
    /// Body `user_id` and `agent_id`; missing, null or blank ids mean `"default"` (v4 search).
    BodyOrDefault,
    /// Body `user.user_id` and `user.agent_id`, defaulted like [`ScopeSource::BodyOrDefault`]
    /// (v4 commit).
    NestedUserOrDefault,
    /// Query-string `user_id` and `agent_id`, defaulted like [`ScopeSource::BodyOrDefault`]
    /// (v4 list).
    QueryOrDefault,
    /// Body `user_id` (trimmed, non-empty) and `agent_id` where `""` is a real value distinct
    /// from absent (memU-server `/categories`, `/memorize`).
    ServerBody,
    /// None: the route reads every user's memories (memU-server `/retrieve` ignores the user).
    Global,
    /// memU-server `/clear`: `user_id` and/or `agent_id`, at least one; without a user it clears
    /// that agent for every user.
    ServerClear,
}

/// The request field holding the free-text query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryField {
    pub name: &'static str,
    /// Also accept a list of messages (v3): keyed as the whole canonical list, never normalised
    /// or matched as a near-duplicate, since earlier turns change the answer.
    pub messages: bool,
}

/// The empty answer for a read: a JSON template, and the fields that echo the client's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    pub template: &'static str,
    pub echo: &'static [Field],
}

/// A cacheable read.
#[derive(Debug)]
pub struct ReadRow {
    pub name: &'static str,
    pub generation: Generation,
    pub method: Method,
    pub path: PathPattern,
    pub scope: ScopeSource,
    pub query: Option<QueryField>,
    /// Fields an answer must hold as JSON lists to be stored (and served).
    pub lists: &'static [Field],
    pub fallback: Fallback,
}

/// Which cached reads a write makes stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteScope {
    /// The (user, agent) written and the user's agent-less reads; without an agent (a v1/v2
    /// delete with `agent_id: null`), every agent of the user.
    AgentOrUser,
    /// Every agent of the user (v3: the cloud's agent semantics are unknown).
    User,
    /// The (user, agent) written (v4 commit: list pages and searches of that scope).
    Agent,
    /// The user's reads and every global read (memU-server: `/retrieve` ignores the user).
    UserAndGlobal,
}

/// What a write can do to the memories it touches, and so what the cached reads it invalidates
/// may still be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// Adds or updates memories (memorize): older answers are never hits again, but may still
    /// stand in as stale when memU fails or misses the budget.
    Supersede,
    /// May remove memories (delete, clear, and v4 commit, an upsert that may rewrite a recall
    /// file): nothing stored before it is served again, on any path.
    Purge,
}

/// Where an asynchronous write's task id is, and what its status polls say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    /// In the write's answer.
    pub id: Field,
    /// In a status answer.
    pub state: Field,
    /// States that mean the write was applied: invalidate once more, stop tracking.
    pub success: &'static [&'static str],
    /// States that mean it never will be: stop tracking.
    pub failure: &'static [&'static str],
}

/// A write that changes memories.
#[derive(Debug)]
pub struct WriteRow {
    pub name: &'static str,
    pub generation: Generation,
    pub method: Method,
    pub path: PathPattern,
    pub scope: ScopeSource,
    pub invalidates: WriteScope,
    pub kind: WriteKind,
    /// For asynchronous writes.
    pub task: Option<TaskSpec>,
}

/// A task-status poll (`GET …/memorize/status/{task_id}`): never cached, watched.
#[derive(Debug)]
pub struct StatusRow {
    pub name: &'static str,
    pub generation: Generation,
    pub method: Method,
    pub path: PathPattern,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub enum Row {
    Read(&'static ReadRow),
    Write(&'static WriteRow),
    Status(&'static StatusRow),
}

/// A read route: a handle on its row, compared and hashed by name (it is part of cache keys).
#[derive(Debug, Clone, Copy)]
pub struct ReadRoute(pub &'static ReadRow);

/// A write route, compared by name.
#[derive(Debug, Clone, Copy)]
pub struct WriteRoute(pub &'static WriteRow);

macro_rules! by_name {
    ($($ty:ty),+) => {$(
        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                self.0.name == other.0.name
            }
        }
        impl Eq for $ty {}
        impl Hash for $ty {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.0.name.hash(state);
            }
        }
    )+};
}
by_name!(ReadRoute, WriteRoute);

impl ReadRoute {
    /// v1/v2 `retrieve/related-memory-items`, the route most tests and benches use.
    pub const V1_RELATED: ReadRoute = ReadRoute(&table::V1_RELATED);
}

impl std::ops::Deref for ReadRoute {
    type Target = ReadRow;
    fn deref(&self) -> &ReadRow {
        self.0
    }
}

impl std::ops::Deref for WriteRoute {
    type Target = WriteRow;
    fn deref(&self) -> &WriteRow {
        self.0
    }
}

impl Row {
    fn method(&self) -> &Method {
        match self {
            Row::Read(r) => &r.method,
            Row::Write(w) => &w.method,
            Row::Status(s) => &s.method,
        }
    }

    fn path(&self) -> PathPattern {
        match self {
            Row::Read(r) => r.path,
            Row::Write(w) => w.path,
            Row::Status(s) => s.path,
        }
    }
}

/// The value at `path` in a JSON document.
pub fn field(value: &serde_json::Value, path: Field) -> Option<&serde_json::Value> {
    path.iter().try_fold(value, |v, name| v.get(name))
}

/// The read row with this name (prewarm builds requests for known rows).
pub fn read_row(name: &str) -> Option<ReadRoute> {
    table::ROUTES.iter().find_map(|row| match row {
        Row::Read(read) if read.name == name => Some(ReadRoute(read)),
        _ => None,
    })
}
