//! Where each generation's answers hold memory items, and what an item is known and found by.
//! Pure: an answer in, its items out.
//!
//! | generation | where | kind | id | text (what ranking reads) |
//! |---|---|---|---|---|
//! | v1/v2 | `related_memories[].memory`, `categories[].memories[]`, `clustered_categories[].memories[]` | memory | `memory_id` | `content` |
//! | v3 | `items[]` | memory | `id` | `summary`, else `content` |
//! | v3 | `categories[]` (retrieve and categories) | category | `id` | `name` and `summary` (else `description`) |
//! | v4 | `recall_files[]` (list), `files[]` (search) | file | `id` | `name`, `description`, `content` |
//! | v4 | `segments[]` (search) | segment | `id` | `text` |
//! | memU-server | `result.items[]` | memory | `id` | `summary`, else `content` |
//! | memU-server | `result.categories[]` (retrieve and categories) | category | `id` | as v3 |
//!
//! An item is kept as memU sent it. One without an `id` (memU-server's categories have none) is
//! given one derived from its content, so seeing it again replaces it rather than adding a copy:
//! a category is known by its `name`, `user_id` and `agent_id` (memU keeps one category of a name
//! per user and agent, and rewrites its summary as memories arrive), anything else by its text.
//! Derived ids start with `~` followed by hex of a SHA-256, which memU's own ids never do.
//! v4's `resources` and v3/memU-server's `resources` are not memories and are not kept.

use serde_json::Value;

use super::rank;
use super::Item;
use crate::cache::digest::{hex, Fields};
use crate::routes::{field, Field, Generation};

/// Which list of its generation's answers an item belongs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A memory item (v1 `memory`, v3 and memU-server `items`).
    Memory,
    /// A memory category (v3 and memU-server `categories`).
    Category,
    /// A v4 recall file (`recall_files`, search `files`).
    File,
    /// A v4 search segment.
    Segment,
}

/// The items an answer of `generation` holds, in the order memU sent them.
pub fn items_of(generation: Generation, answer: &Value) -> Vec<Item> {
    match generation {
        Generation::V1 => v1_items(answer),
        Generation::V3 => memu_py_items(answer, &[]),
        Generation::V4 => v4_items(answer),
        Generation::Server => memu_py_items(answer, &["result"]),
    }
}

/// Where v1/v2 answers hold memory items: each `memory` of `related_memories`, and the
/// `memories` of each (clustered) category.
fn v1_items(answer: &Value) -> Vec<Item> {
    const RELATED: Field = &["related_memories"];
    const CATEGORIES: [Field; 2] = [&["categories"], &["clustered_categories"]];
    let mut items = Vec::new();
    if let Some(Value::Array(related)) = field(answer, RELATED) {
        items.extend(related.iter().filter_map(|r| v1_item(r.get("memory")?)));
    }
    for at in CATEGORIES {
        if let Some(Value::Array(categories)) = field(answer, at) {
            for category in categories {
                if let Some(Value::Array(memories)) = category.get("memories") {
                    items.extend(memories.iter().filter_map(v1_item));
                }
            }
        }
    }
    items
}

/// A v1 memory object: `memory_id` and `content` are what make it an item.
fn v1_item(memory: &Value) -> Option<Item> {
    let id = memory.get("memory_id")?.as_str()?;
    let text = memory.get("content")?.as_str()?;
    Some(new_item(Kind::Memory, id, text, memory))
}

/// memu-py 1.x's retrieve dict (v3 unwrapped, memU-server under `result`): its `categories` and
/// `items`; a categories answer has only the former.
fn memu_py_items(answer: &Value, under: &[&str]) -> Vec<Item> {
    let Some(answer) = under.iter().try_fold(answer, |at, name| at.get(name)) else {
        return Vec::new();
    };
    let mut items = list(answer, "categories", Kind::Category, category_text);
    items.extend(list(answer, "items", Kind::Memory, |m| {
        first_text(m, &["summary", "content"])
    }));
    items
}

/// v4's list and search answers.
fn v4_items(answer: &Value) -> Vec<Item> {
    let mut items = list(answer, "recall_files", Kind::File, file_text);
    items.extend(list(answer, "files", Kind::File, file_text));
    items.extend(list(answer, "segments", Kind::Segment, |s| {
        first_text(s, &["text"])
    }));
    items
}

/// The items of `answer[name]`, each read by `text`; entries without text are skipped.
fn list(
    answer: &Value,
    name: &str,
    kind: Kind,
    text: impl Fn(&Value) -> Option<String>,
) -> Vec<Item> {
    let Some(Value::Array(entries)) = answer.get(name) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|entry| entry.is_object())
        .filter_map(|entry| {
            let text = text(entry)?;
            let id = stated_id(entry).unwrap_or_else(|| derived_id(kind, entry, &text));
            Some(new_item(kind, &id, &text, entry))
        })
        .collect()
}

/// A category's name and summary (or description when it has no summary).
fn category_text(category: &Value) -> Option<String> {
    let about = first_text(category, &["summary", "description"]);
    let name = first_text(category, &["name"]);
    match (name, about) {
        (Some(name), Some(about)) => Some(format!("{name}\n{about}")),
        (name, about) => name.or(about),
    }
}

/// A recall file's name, description and content.
fn file_text(file: &Value) -> Option<String> {
    let parts: Vec<&str> = ["name", "description", "content"]
        .iter()
        .filter_map(|name| file.get(name)?.as_str())
        .filter(|text| !text.trim().is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// The first of `names` that holds a non-blank string.
fn first_text(entry: &Value, names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|name| entry.get(name)?.as_str())
        .find(|text| !text.trim().is_empty())
        .map(str::to_owned)
}

/// The entry's own `id`: a non-empty string, or a number.
fn stated_id(entry: &Value) -> Option<Box<str>> {
    match entry.get("id")? {
        Value::String(id) if !id.is_empty() => Some(id.as_str().into()),
        Value::Number(id) => Some(id.to_string().into()),
        _ => None,
    }
}

/// The id of an entry memU sent without one (see the module's docs).
fn derived_id(kind: Kind, entry: &Value, text: &str) -> Box<str> {
    let mut fields = Fields::new();
    let named = entry.get("name").and_then(Value::as_str);
    match (kind, named) {
        (Kind::Category, Some(name)) => {
            let of = |name| entry.get(name).and_then(Value::as_str);
            fields
                .field(b"category")
                .field(name.as_bytes())
                .optional(of("user_id"))
                .optional(of("agent_id"));
        }
        _ => {
            fields.field(b"text").field(text.as_bytes());
        }
    }
    format!("~{}", hex(&fields.finish()[..16])).into()
}

fn new_item(kind: Kind, id: &str, text: &str, json: &Value) -> Item {
    Item {
        kind,
        id: id.into(),
        text: text.into(),
        json: json.clone(),
        terms: rank::terms(text),
    }
}
