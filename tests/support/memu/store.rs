//! The stand-in's memories and tasks, as every generation's answers use them (selection, purge,
//! asynchronous memorize tasks), and memu-py 1.x's record shapes, which cloud v3 and memU-server
//! share (memu-api-next.md §3.1, §5.1).

use serde_json::{json, Value};

use super::{Owner, Service, State, Task};

/// The memories of one owner.
pub(super) fn memories_of(state: &State, scope: &Owner) -> Vec<String> {
    state
        .memories
        .lock()
        .unwrap()
        .get(scope)
        .cloned()
        .unwrap_or_default()
}

/// Registers a memorize of `content` for `owner`, applied by [`super::MemU::complete_tasks`];
/// its id is `id(n)` for the `n`th task.
pub(super) fn new_task(
    state: &State,
    owner: Owner,
    content: Vec<String>,
    id: impl FnOnce(usize) -> String,
) -> String {
    let mut tasks = state.tasks.lock().unwrap();
    let task_id = id(tasks.len() + 1);
    let task = Task {
        done: false,
        owner,
        content,
    };
    tasks.insert(task_id.clone(), task);
    task_id
}

/// Whether the task `id` of `service` is done; `None` for an unknown task.
pub(super) fn task_done(state: &State, service: Service, id: &str) -> Option<bool> {
    let tasks = state.tasks.lock().unwrap();
    let task = tasks.get(id).filter(|t| t.owner.service == service)?;
    Some(task.done)
}

/// What a purge removed.
pub(super) struct Purged {
    /// Owners that had memories (one category each).
    pub owners: usize,
    pub items: usize,
    pub resources: usize,
}

/// Removes the memories of every owner `which` selects.
pub(super) fn purge(state: &State, which: impl Fn(&Owner) -> bool) -> Purged {
    let mut memories = state.memories.lock().unwrap();
    let mut resources = state.resources.lock().unwrap();
    let mut purged = Purged {
        owners: 0,
        items: 0,
        resources: 0,
    };
    memories.retain(|owner, items| {
        let keep = !which(owner);
        if !keep && !items.is_empty() {
            purged.owners += 1;
            purged.items += items.len();
        }
        keep
    });
    resources.retain(|owner, count| {
        let keep = !which(owner);
        if !keep {
            purged.resources += *count;
        }
        keep
    });
    purged
}

/// Every memory of the owners `which` selects, in a stable order.
pub(super) fn memories_where(
    state: &State,
    which: impl Fn(&Owner) -> bool,
) -> Vec<(Owner, Vec<String>)> {
    let memories = state.memories.lock().unwrap();
    let mut found: Vec<_> = memories
        .iter()
        .filter(|(owner, items)| which(owner) && !items.is_empty())
        .map(|(owner, items)| (owner.clone(), items.clone()))
        .collect();
    found.sort();
    found
}

/// The texts a conversation's messages carry: a `content` string or `{"text": …}`.
pub(super) fn message_texts(messages: &Value) -> Vec<String> {
    let text = |m: &Value| match m.get("content") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(content) => content
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned),
        None => None,
    };
    match messages {
        Value::Array(messages) => messages.iter().filter_map(text).collect(),
        message => text(message).into_iter().collect(),
    }
}

/// How well `text` answers `query`: the share of the query's words (3 letters or more) found
/// in it, case-insensitively; 0 when none is.
pub(super) fn relevance(query: &str, text: &str) -> f64 {
    let text = text.to_lowercase();
    let query = query.to_lowercase();
    let words: Vec<&str> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .collect();
    if words.is_empty() {
        return 0.0;
    }
    let found = words.iter().filter(|w| text.contains(**w)).count();
    found as f64 / words.len() as f64
}

/// The timestamps every stand-in record carries.
pub(super) const CREATED_AT: &str = "2026-11-24T08:00:00Z";

/// A memory item as memu-py 1.x's `MemoryService` returns it (cloud v3 retrieve, memU-server
/// `/retrieve`; memu-api-next.md §3.1, §5.1), with its `score`.
pub(super) fn memu_item(owner: &Owner, n: usize, content: &str, score: f64) -> Value {
    json!({"id": format!("item-{}-{}-{n}", owner.user, owner.agent), "resource_id": format!("res-{}-{}", owner.user, owner.agent),
           "memory_type": "profile", "summary": content, "happened_at": null, "extra": {},
           "created_at": CREATED_AT, "updated_at": CREATED_AT,
           "user_id": owner.user, "agent_id": owner.agent, "score": score})
}

/// A memory category as memu-py 1.x returns it: one per (user, agent) here, summing up its items.
pub(super) fn memu_category(owner: &Owner, items: &[String]) -> Value {
    json!({"id": format!("cat-{}-{}", owner.user, owner.agent), "name": "personal_info",
           "description": "Personal information about the user", "summary": items.join("; "),
           "created_at": CREATED_AT, "updated_at": CREATED_AT,
           "user_id": owner.user, "agent_id": owner.agent})
}
