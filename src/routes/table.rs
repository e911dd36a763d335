//! The route table: every memU route the proxy understands, one row each, as data.
//!
//! Sources: `../shared/memu-api.md` (v1/v2) and `../shared/memu-api-next.md` (cloud v3 §3, cloud
//! v4 §4, memU-server 1.x §5; the empty answers are those of its §6). Rows are tried in order,
//! the most specific paths first: the v3 and v4 paths, then the v1/v2 suffixes under any
//! `/memory/`, then memU-server's routes at its root.

use http::Method;

use super::{
    Fallback, Generation, PathPattern, QueryField, ReadRow, Row, ScopeSource, StatusRow, TaskSpec,
    WriteKind, WriteRow, WriteScope,
};

use Generation::{Server, V1, V3, V4};
use PathPattern::{Root, RootTask, Suffix, Task};

/// Every row, in matching order.
pub static ROUTES: &[Row] = &[
    Row::Read(&V3_RETRIEVE),
    Row::Read(&V3_CATEGORIES),
    Row::Write(&V3_MEMORIZE),
    Row::Write(&V3_DELETE),
    Row::Status(&V3_STATUS),
    Row::Read(&V4_LIST),
    Row::Write(&V4_COMMIT),
    Row::Read(&V4_SEARCH),
    Row::Read(&V1_RELATED),
    Row::Read(&V1_CATEGORIES),
    Row::Read(&V1_CLUSTERED),
    Row::Write(&V1_MEMORIZE),
    Row::Write(&V1_DELETE),
    Row::Status(&V1_STATUS),
    Row::Read(&SERVER_RETRIEVE),
    Row::Read(&SERVER_CATEGORIES),
    Row::Write(&SERVER_MEMORIZE),
    Row::Write(&SERVER_CLEAR),
    Row::Status(&SERVER_STATUS),
];

const QUERY: Option<QueryField> = Some(QueryField {
    name: "query",
    messages: false,
});

/// v1/v2 memorize tasks (memu-api.md §3.4): `SUCCESS` / `FAILURE`.
const V1_TASK: TaskSpec = TaskSpec {
    id: &["task_id"],
    state: &["status"],
    success: &["SUCCESS"],
    failure: &["FAILURE"],
};

// ---- v1/v2: /api/v1|v2/memory/… (memu-api.md §3) ----------------------------------------------

pub static V1_RELATED: ReadRow = ReadRow {
    name: "v1 related-memory-items",
    generation: V1,
    method: Method::POST,
    path: Suffix("/memory/retrieve/related-memory-items"),
    scope: ScopeSource::Body {
        blank_agent_is_none: false,
    },
    query: QUERY,
    lists: &[&["related_memories"]],
    fallback: Fallback {
        template: r#"{"related_memories":[],"query":"","total_found":0,"search_params":{}}"#,
        echo: &[&["query"]],
    },
};

pub static V1_CATEGORIES: ReadRow = ReadRow {
    name: "v1 default-categories",
    generation: V1,
    method: Method::POST,
    path: Suffix("/memory/retrieve/default-categories"),
    scope: ScopeSource::Body {
        blank_agent_is_none: false,
    },
    query: None,
    lists: &[&["categories"]],
    fallback: Fallback {
        template: r#"{"categories":[],"total_categories":0}"#,
        echo: &[],
    },
};

pub static V1_CLUSTERED: ReadRow = ReadRow {
    name: "v1 related-clustered-categories",
    generation: V1,
    method: Method::POST,
    path: Suffix("/memory/retrieve/related-clustered-categories"),
    scope: ScopeSource::Body {
        blank_agent_is_none: false,
    },
    query: Some(QueryField {
        name: "category_query",
        messages: false,
    }),
    lists: &[&["clustered_categories"]],
    fallback: Fallback {
        template: r#"{"clustered_categories":[],"category_query":"","total_categories_found":0,"search_params":{}}"#,
        echo: &[&["category_query"]],
    },
};

pub static V1_MEMORIZE: WriteRow = WriteRow {
    name: "v1 memorize",
    generation: V1,
    method: Method::POST,
    path: Suffix("/memory/memorize"),
    scope: ScopeSource::Body {
        blank_agent_is_none: false,
    },
    invalidates: WriteScope::AgentOrUser,
    kind: WriteKind::Supersede,
    task: Some(V1_TASK),
};

pub static V1_DELETE: WriteRow = WriteRow {
    name: "v1 delete",
    generation: V1,
    method: Method::POST,
    path: Suffix("/memory/delete"),
    scope: ScopeSource::Body {
        blank_agent_is_none: false,
    },
    invalidates: WriteScope::AgentOrUser,
    kind: WriteKind::Purge,
    task: None,
};

pub static V1_STATUS: StatusRow = StatusRow {
    name: "v1 memorize status",
    generation: V1,
    method: Method::GET,
    path: Task("/memory/memorize/status/"),
};

// ---- cloud v3: /api/v3/memory/… (memu-api-next.md §3) -----------------------------------------

pub static V3_RETRIEVE: ReadRow = ReadRow {
    name: "v3 retrieve",
    generation: V3,
    method: Method::POST,
    path: Suffix("/api/v3/memory/retrieve"),
    scope: ScopeSource::Body {
        blank_agent_is_none: false,
    },
    query: Some(QueryField {
        name: "query",
        messages: true,
    }),
    lists: &[&["categories"], &["items"], &["resources"]],
    fallback: Fallback {
        template: r#"{"categories":[],"items":[],"resources":[],"next_step_query":null}"#,
        echo: &[],
    },
};

pub static V3_CATEGORIES: ReadRow = ReadRow {
    name: "v3 categories",
    generation: V3,
    method: Method::POST,
    path: Suffix("/api/v3/memory/categories"),
    // memu-sdk omits an empty agent_id: absent, null and "" are one value.
    scope: ScopeSource::Body {
        blank_agent_is_none: true,
    },
    query: None,
    lists: &[&["categories"]],
    fallback: Fallback {
        template: r#"{"categories":[]}"#,
        echo: &[],
    },
};

pub static V3_MEMORIZE: WriteRow = WriteRow {
    name: "v3 memorize",
    generation: V3,
    method: Method::POST,
    path: Suffix("/api/v3/memory/memorize"),
    scope: ScopeSource::Body {
        blank_agent_is_none: true,
    },
    invalidates: WriteScope::User,
    kind: WriteKind::Supersede,
    // The real cloud says SUCCESS/FAILURE; memu-sdk's enum has COMPLETED/FAILED too.
    task: Some(TaskSpec {
        id: &["task_id"],
        state: &["status"],
        success: &["SUCCESS", "COMPLETED"],
        failure: &["FAILURE", "FAILED"],
    }),
};

pub static V3_DELETE: WriteRow = WriteRow {
    name: "v3 delete",
    generation: V3,
    method: Method::POST,
    path: Suffix("/api/v3/memory/delete"),
    scope: ScopeSource::Body {
        blank_agent_is_none: true,
    },
    invalidates: WriteScope::User,
    kind: WriteKind::Purge,
    task: None,
};

pub static V3_STATUS: StatusRow = StatusRow {
    name: "v3 memorize status",
    generation: V3,
    method: Method::GET,
    path: Task("/api/v3/memory/memorize/status/"),
};

// ---- cloud v4: /api/v4/memory (memu-api-next.md §4); the collection is slashless ----------------

pub static V4_LIST: ReadRow = ReadRow {
    name: "v4 list",
    generation: V4,
    method: Method::GET,
    path: Suffix("/api/v4/memory"),
    scope: ScopeSource::QueryOrDefault,
    query: None,
    lists: &[&["recall_files"]],
    fallback: Fallback {
        template: r#"{"recall_files":[],"next_cursor":null}"#,
        echo: &[],
    },
};

pub static V4_SEARCH: ReadRow = ReadRow {
    name: "v4 search",
    generation: V4,
    method: Method::POST,
    path: Suffix("/api/v4/memory/search"),
    scope: ScopeSource::BodyOrDefault,
    query: QUERY,
    lists: &[&["segments"], &["files"], &["resources"]],
    fallback: Fallback {
        template: r#"{"segments":[],"files":[],"resources":[]}"#,
        echo: &[],
    },
};

pub static V4_COMMIT: WriteRow = WriteRow {
    name: "v4 commit",
    generation: V4,
    method: Method::POST,
    path: Suffix("/api/v4/memory"),
    scope: ScopeSource::NestedUserOrDefault,
    invalidates: WriteScope::Agent,
    kind: WriteKind::Purge,
    // A synchronous upsert: applied when answered.
    task: None,
};

// ---- memU-server 1.x: at its root (memu-api-next.md §5); answers wrapped in {status, result} ---

pub static SERVER_RETRIEVE: ReadRow = ReadRow {
    name: "server retrieve",
    generation: Server,
    method: Method::POST,
    path: Root("/retrieve"),
    scope: ScopeSource::Global,
    query: QUERY,
    lists: &[
        &["result", "categories"],
        &["result", "items"],
        &["result", "resources"],
    ],
    fallback: Fallback {
        template: r#"{"status":"success","result":{"needs_retrieval":false,"original_query":"","rewritten_query":"","next_step_query":null,"categories":[],"items":[],"resources":[]}}"#,
        echo: &[
            &["result", "original_query"],
            &["result", "rewritten_query"],
        ],
    },
};

pub static SERVER_CATEGORIES: ReadRow = ReadRow {
    name: "server categories",
    generation: Server,
    method: Method::POST,
    path: Root("/categories"),
    scope: ScopeSource::ServerBody,
    query: None,
    lists: &[&["result", "categories"]],
    fallback: Fallback {
        template: r#"{"status":"success","result":{"categories":[]}}"#,
        echo: &[],
    },
};

pub static SERVER_MEMORIZE: WriteRow = WriteRow {
    name: "server memorize",
    generation: Server,
    method: Method::POST,
    path: Root("/memorize"),
    scope: ScopeSource::ServerBody,
    invalidates: WriteScope::UserAndGlobal,
    kind: WriteKind::Supersede,
    // Temporal's workflow states; the memorize answer itself says PENDING.
    task: Some(TaskSpec {
        id: &["result", "task_id"],
        state: &["result", "status"],
        success: &["COMPLETED"],
        failure: &["FAILED", "CANCELED", "TERMINATED", "TIMED_OUT"],
    }),
};

pub static SERVER_CLEAR: WriteRow = WriteRow {
    name: "server clear",
    generation: Server,
    method: Method::POST,
    path: Root("/clear"),
    scope: ScopeSource::ServerClear,
    invalidates: WriteScope::UserAndGlobal,
    kind: WriteKind::Purge,
    task: None,
};

pub static SERVER_STATUS: StatusRow = StatusRow {
    name: "server memorize status",
    generation: Server,
    method: Method::GET,
    path: RootTask("/memorize/status/"),
};
