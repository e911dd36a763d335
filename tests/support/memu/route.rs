//! The stand-in's routes, by name: what [`super::MemU::hits`] counts and
//! [`super::MemU::set_route_latency`] slows, so a misspelt route does not compile.

/// One route of the stand-in memU, of any generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// v1/v2 `retrieve/related-memory-items`.
    Related,
    /// v1/v2 `retrieve/default-categories`.
    DefaultCategories,
    /// v1/v2 `retrieve/related-clustered-categories`.
    Clustered,
    /// v1/v2 `memorize`.
    Memorize,
    /// v1/v2 `delete`.
    Delete,
    /// v2 `chat`.
    Chat,
    /// v1/v2 `memorize/status/{id}`.
    Status,
    V3Retrieve,
    V3Categories,
    V3Memorize,
    V3Delete,
    V3Status,
    V4List,
    V4Commit,
    V4Search,
    ServerRetrieve,
    ServerCategories,
    ServerMemorize,
    ServerClear,
    ServerStatus,
    /// Anything else.
    Other,
}

impl Route {
    /// The name the stand-in counts the route under.
    pub fn name(self) -> &'static str {
        match self {
            Route::Related => "related-memory-items",
            Route::DefaultCategories => "default-categories",
            Route::Clustered => "related-clustered-categories",
            Route::Memorize => "memorize",
            Route::Delete => "delete",
            Route::Chat => "chat",
            Route::Status => "status",
            Route::V3Retrieve => "v3 retrieve",
            Route::V3Categories => "v3 categories",
            Route::V3Memorize => "v3 memorize",
            Route::V3Delete => "v3 delete",
            Route::V3Status => "v3 status",
            Route::V4List => "v4 list",
            Route::V4Commit => "v4 commit",
            Route::V4Search => "v4 search",
            Route::ServerRetrieve => "server retrieve",
            Route::ServerCategories => "server categories",
            Route::ServerMemorize => "server memorize",
            Route::ServerClear => "server clear",
            Route::ServerStatus => "server status",
            Route::Other => "other",
        }
    }
}
