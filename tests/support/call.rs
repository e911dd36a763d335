//! One request as each memU generation's client sends it ([`Call`]), the stand-in route that
//! answers it, and the assertions on how the proxy answered it (stored miss, hit, fallback).

use http::Method;
use serde_json::{json, Value};

use super::{related_body, send, Proxy, Reply, Route, HIT, MISS_STORED, RELATED};

pub const KEY_1: &str = "Bearer key-1";
pub const KEY_2: &str = "Bearer key-2";

/// One request as its generation's client sends it, and the stand-in route that answers it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The stand-in's hit counter for it.
    pub route: Route,
    pub method: Method,
    pub path_and_query: String,
    pub authorization: Option<&'static str>,
    /// JSON, sent with `Content-Type: application/json`; `None` for a GET.
    pub body: Option<String>,
}

impl Call {
    pub fn post(route: Route, path: &str, key: Option<&'static str>, body: Value) -> Call {
        Call {
            route,
            method: Method::POST,
            path_and_query: path.into(),
            authorization: key,
            body: Some(body.to_string()),
        }
    }

    /// memu-sdk 1.0's retrieve: `query` is a string or a list of messages.
    pub fn v3_retrieve(key: &'static str, user: &str, agent: &str, query: Value) -> Call {
        let body = json!({"user_id": user, "agent_id": agent, "query": query});
        Call::post(
            Route::V3Retrieve,
            "/api/v3/memory/retrieve",
            Some(key),
            body,
        )
    }

    /// memu-sdk 1.0's list_categories: `agent_id` omitted when there is none.
    pub fn v3_categories(key: &'static str, user: &str, agent: Option<&str>) -> Call {
        let mut body = json!({ "user_id": user });
        if let Some(agent) = agent {
            body["agent_id"] = json!(agent);
        }
        Call::post(
            Route::V3Categories,
            "/api/v3/memory/categories",
            Some(key),
            body,
        )
    }

    /// memu-cli's list: `GET /api/v4/memory?<params>`, no body, no Content-Type.
    pub fn v4_list(key: &'static str, params: &str) -> Call {
        Call {
            route: Route::V4List,
            method: Method::GET,
            path_and_query: format!("/api/v4/memory?{params}"),
            authorization: Some(key),
            body: None,
        }
    }

    pub fn v4_search(key: &'static str, user: &str, agent: &str, query: &str) -> Call {
        let body = json!({"query": query, "user_id": user, "agent_id": agent});
        Call::post(Route::V4Search, "/api/v4/memory/search", Some(key), body)
    }

    /// memU-server `/retrieve`: no auth, only `query` read.
    pub fn server_retrieve(query: &str) -> Call {
        Call::post(
            Route::ServerRetrieve,
            "/retrieve",
            None,
            json!({ "query": query }),
        )
    }

    pub fn server_categories(user: &str, agent: Option<&str>) -> Call {
        let mut body = json!({ "user_id": user });
        if let Some(agent) = agent {
            body["agent_id"] = json!(agent);
        }
        Call::post(Route::ServerCategories, "/categories", None, body)
    }

    /// memu-py 0.1.8's related-memory-items.
    pub fn v1_related(user: &str, agent: &str, query: &str) -> Call {
        let body = related_body(user, Some(agent), query);
        Call::post(Route::Related, RELATED, Some("Bearer key-1"), body)
    }

    /// memu-sdk 1.0's memorize of one user message.
    pub fn v3_memorize(key: &'static str, user: &str, agent: &str, text: &str) -> Call {
        let body = json!({"user_id": user, "agent_id": agent, "user_name": "User", "agent_name": "Assistant",
                          "conversation": [{"role": "user", "content": text}]});
        Call::post(
            Route::V3Memorize,
            "/api/v3/memory/memorize",
            Some(key),
            body,
        )
    }

    /// memu-cli's commit of one memory recall file.
    pub fn v4_commit(
        key: &'static str,
        user: &str,
        agent: &str,
        name: &str,
        content: &str,
    ) -> Call {
        let body = json!({"user": {"user_id": user, "agent_id": agent},
                          "recall_files": [{"name": name, "track": "memory", "description": name, "content": content}],
                          "resource": []});
        Call::post(Route::V4Commit, "/api/v4/memory", Some(key), body)
    }

    /// memU-server's memorize, with the README's message shape.
    pub fn server_memorize(user: &str, agent: Option<&str>, text: &str) -> Call {
        let mut body = json!({"user_id": user, "conversation": [
            {"role": "user", "content": {"text": text}, "created_at": "2025-03-20 10:00:00"}]});
        if let Some(agent) = agent {
            body["agent_id"] = json!(agent);
        }
        Call::post(Route::ServerMemorize, "/memorize", None, body)
    }

    pub fn server_clear(body: Value) -> Call {
        Call::post(Route::ServerClear, "/clear", None, body)
    }

    /// The same call with this exact body text.
    pub fn with_raw_body(mut self, body: &str) -> Call {
        self.body = Some(body.into());
        self
    }

    /// Sends it to `base` (the proxy's or the stand-in's URL).
    pub async fn send_to(&self, base: &str) -> Reply {
        let mut headers = Vec::new();
        if let Some(key) = self.authorization {
            headers.push(("authorization", key));
        }
        if self.body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let url = format!("{base}{}", self.path_and_query);
        let body = self.body.clone().unwrap_or_default();
        send(self.method.clone(), &url, &headers, body).await
    }

    pub async fn send(&self, proxy: &Proxy) -> Reply {
        self.send_to(&proxy.url("")).await
    }

    /// Sends it through the proxy and asserts memU was asked and the answer stored.
    pub async fn misses(&self, proxy: &Proxy) -> Reply {
        let reply = self.send(proxy).await;
        assert_eq!(reply.status, 200, "{self:?}: {}", reply.text());
        assert_eq!(reply.cache_status(), MISS_STORED, "{self:?}");
        reply
    }

    /// Sends it through the proxy and asserts a fresh cache hit.
    pub async fn hits(&self, proxy: &Proxy) -> Reply {
        let reply = self.send(proxy).await;
        assert_eq!(reply.status, 200, "{self:?}: {}", reply.text());
        assert_eq!(reply.cache_status(), HIT, "{self:?}");
        reply
    }

    /// The empty answer of memu-api-next.md §6 (memu-api.md §4 for v1) for this read.
    pub fn fallback(&self) -> Value {
        let body: Value = serde_json::from_str(self.body.as_deref().unwrap_or("{}")).unwrap();
        let query = &body["query"];
        match self.route {
            Route::V3Retrieve => {
                json!({"categories": [], "items": [], "resources": [], "next_step_query": null})
            }
            Route::V3Categories => json!({"categories": []}),
            Route::V4List => json!({"recall_files": [], "next_cursor": null}),
            Route::V4Search => json!({"segments": [], "files": [], "resources": []}),
            Route::ServerRetrieve => json!({"status": "success", "result": {
                "needs_retrieval": false, "original_query": query, "rewritten_query": query,
                "next_step_query": null, "categories": [], "items": [], "resources": []}}),
            Route::ServerCategories => json!({"status": "success", "result": {"categories": []}}),
            Route::Related => {
                json!({"related_memories": [], "query": query, "total_found": 0, "search_params": {}})
            }
            other => panic!("{other:?} is not a read"),
        }
    }
}
