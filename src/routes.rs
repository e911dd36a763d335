//! memU route classes: which requests are cacheable reads, invalidating writes, task-status polls,
//! or plain pass-through. Pure: a method and a path in, a class out.
//!
//! Routes are matched on their suffix under `/memory/`, so `/api/v1/memory/…`, `/api/v2/memory/…`
//! and any base path in front of them (`/memu/api/v1/memory/…`) are all recognised.

use http::Method;

/// A retrieval route whose 200 answers may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadRoute {
    RelatedMemoryItems,
    DefaultCategories,
    RelatedClusteredCategories,
}

/// A write that changes a user's memories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteRoute {
    Memorize,
    Delete,
}

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass<'a> {
    Read(ReadRoute),
    Write(WriteRoute),
    /// `GET …/memorize/status/{task_id}`: never cached, but watched for `SUCCESS`.
    TaskStatus {
        task_id: &'a str,
    },
    PassThrough,
}

impl ReadRoute {
    /// The request field holding the free-text query, if the route has one.
    pub fn query_field(self) -> Option<&'static str> {
        match self {
            ReadRoute::RelatedMemoryItems => Some("query"),
            ReadRoute::RelatedClusteredCategories => Some("category_query"),
            ReadRoute::DefaultCategories => None,
        }
    }
}

/// Classifies a request by method and path.
pub fn classify<'a>(method: &Method, path: &'a str) -> RouteClass<'a> {
    let Some((_, tail)) = path.rsplit_once("/memory/") else {
        return RouteClass::PassThrough;
    };
    let post = method == Method::POST;
    match tail {
        "retrieve/related-memory-items" if post => RouteClass::Read(ReadRoute::RelatedMemoryItems),
        "retrieve/default-categories" if post => RouteClass::Read(ReadRoute::DefaultCategories),
        "retrieve/related-clustered-categories" if post => {
            RouteClass::Read(ReadRoute::RelatedClusteredCategories)
        }
        "memorize" if post => RouteClass::Write(WriteRoute::Memorize),
        "delete" if post => RouteClass::Write(WriteRoute::Delete),
        _ => match tail.strip_prefix("memorize/status/") {
            Some(task_id)
                if method == Method::GET && !task_id.is_empty() && !task_id.contains('/') =>
            {
                RouteClass::TaskStatus { task_id }
            }
            _ => RouteClass::PassThrough,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReadRoute::*;
    use RouteClass::*;
    use WriteRoute::*;

    #[test]
    fn classification_table() {
        let post = Method::POST;
        let get = Method::GET;
        let cases: &[(&Method, &str, RouteClass)] = &[
            (
                &post,
                "/api/v1/memory/retrieve/related-memory-items",
                Read(RelatedMemoryItems),
            ),
            (
                &post,
                "/api/v2/memory/retrieve/related-memory-items",
                Read(RelatedMemoryItems),
            ),
            (
                &post,
                "/memu/api/v1/memory/retrieve/default-categories",
                Read(DefaultCategories),
            ),
            (
                &post,
                "/api/v1/memory/retrieve/related-clustered-categories",
                Read(RelatedClusteredCategories),
            ),
            (
                &get,
                "/api/v1/memory/retrieve/related-memory-items",
                PassThrough,
            ),
            (&post, "/api/v1/memory/memorize", Write(Memorize)),
            (&post, "/x/api/v2/memory/delete", Write(Delete)),
            (
                &get,
                "/api/v1/memory/memorize/status/abc-1",
                TaskStatus { task_id: "abc-1" },
            ),
            (&post, "/api/v1/memory/memorize/status/abc-1", PassThrough),
            (&get, "/api/v1/memory/memorize/status/", PassThrough),
            (
                &get,
                "/api/v1/memory/memorize/status/a/summary",
                PassThrough,
            ),
            (&post, "/api/v2/chat", PassThrough),
            (&get, "/health", PassThrough),
            (&get, "/", PassThrough),
            (
                &post,
                "/api/v1/memory/retrieve/related-memory-items/",
                PassThrough,
            ),
            (&post, "/retrieve/related-memory-items", PassThrough),
        ];
        for (method, path, want) in cases {
            assert_eq!(classify(method, path), *want, "{method} {path}");
        }
    }
}
