//! The route table builder: every route is added through [`Routes`], which records its method,
//! path and access as it adds it; only [`Routes::into_router`] makes the axum `Router`. The
//! router (`router.rs`), the admin API and the compat endpoints build their lists with it.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;

use crate::state::SharedState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key needed.
    Public,
    /// Any valid key (user or admin); a user key sees only its own account.
    User,
    /// Admin keys only; a user key gets 403.
    Admin,
}

/// One served route, as recorded when it was registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub method: Method,
    /// axum's path syntax, e.g. `/admin/keys/{id}`.
    pub path: String,
    pub access: Access,
}

/// A list of routes under construction: each `get`/`post`/… adds one method on one path and
/// records it. Only `into_router` turns the list into an axum `Router`.
#[must_use]
pub struct Routes {
    entries: Vec<(RouteInfo, MethodRouter<SharedState>)>,
}

impl Routes {
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    pub fn get<H, T>(self, path: &str, access: Access, handler: H) -> Self
    where
        H: Handler<T, SharedState>,
        T: 'static,
    {
        self.add(Method::GET, path, access, axum::routing::get(handler))
    }

    pub fn post<H, T>(self, path: &str, access: Access, handler: H) -> Self
    where
        H: Handler<T, SharedState>,
        T: 'static,
    {
        self.add(Method::POST, path, access, axum::routing::post(handler))
    }

    pub fn put<H, T>(self, path: &str, access: Access, handler: H) -> Self
    where
        H: Handler<T, SharedState>,
        T: 'static,
    {
        self.add(Method::PUT, path, access, axum::routing::put(handler))
    }

    pub fn patch<H, T>(self, path: &str, access: Access, handler: H) -> Self
    where
        H: Handler<T, SharedState>,
        T: 'static,
    {
        self.add(Method::PATCH, path, access, axum::routing::patch(handler))
    }

    pub fn delete<H, T>(self, path: &str, access: Access, handler: H) -> Self
    where
        H: Handler<T, SharedState>,
        T: 'static,
    {
        self.add(Method::DELETE, path, access, axum::routing::delete(handler))
    }

    fn add(
        mut self,
        method: Method,
        path: &str,
        access: Access,
        handler: MethodRouter<SharedState>,
    ) -> Self {
        let info = RouteInfo {
            method,
            path: path.to_string(),
            access,
        };
        self.entries.push((info, handler));
        self
    }

    /// `other`'s routes under `prefix` (e.g. `/admin`).
    pub fn nest(mut self, prefix: &str, other: Routes) -> Self {
        for (mut info, handler) in other.entries {
            info.path = format!("{prefix}{}", info.path);
            self.entries.push((info, handler));
        }
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.entries.extend(other.entries);
        self
    }

    pub fn table(&self) -> Vec<RouteInfo> {
        self.entries.iter().map(|(info, _)| info.clone()).collect()
    }

    /// The axum router serving exactly the recorded routes. Several methods on one path are
    /// merged by axum; the same method twice on one path panics at startup (a programming error).
    pub fn into_router(self) -> Router<SharedState> {
        self.entries
            .into_iter()
            .fold(Router::new(), |router, (info, handler)| {
                router.route(&info.path, handler)
            })
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}
