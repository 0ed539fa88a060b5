//! `/` and the files of the web app (`src/web/`): plain HTML, CSS and JavaScript modules, a web
//! app manifest, icons and a service worker, served as they are — no build step. Everything the
//! app shows comes from the public API, like any other client (docs/web.md).

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

/// Scripts and styles from this server only; no inline code, no framing by other sites.
const SECURITY: [(header::HeaderName, &str); 3] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The app shell: path, content type, body.
const FILES: &[(&str, &str, &[u8])] = &[
    ("/", HTML, include_bytes!("../web/index.html")),
    ("/app.js", JS, include_bytes!("../web/app.js")),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/app.css"),
    ),
    ("/sw.js", JS, include_bytes!("../web/sw.js")),
    (
        "/manifest.webmanifest",
        "application/manifest+json",
        include_bytes!("../web/manifest.webmanifest"),
    ),
    (
        "/icon.svg",
        "image/svg+xml",
        include_bytes!("../web/icon.svg"),
    ),
    (
        "/icon-192.png",
        "image/png",
        include_bytes!("../web/icon-192.png"),
    ),
    (
        "/icon-512.png",
        "image/png",
        include_bytes!("../web/icon-512.png"),
    ),
    ("/js/api.js", JS, include_bytes!("../web/js/api.js")),
    ("/js/diff.js", JS, include_bytes!("../web/js/diff.js")),
    ("/js/format.js", JS, include_bytes!("../web/js/format.js")),
    ("/js/list.js", JS, include_bytes!("../web/js/list.js")),
    ("/js/notify.js", JS, include_bytes!("../web/js/notify.js")),
    ("/js/pull.js", JS, include_bytes!("../web/js/pull.js")),
    ("/js/live.js", JS, include_bytes!("../web/js/live.js")),
    ("/js/new.js", JS, include_bytes!("../web/js/new.js")),
    ("/js/shell.js", JS, include_bytes!("../web/js/shell.js")),
    ("/js/steps.js", JS, include_bytes!("../web/js/steps.js")),
    ("/js/task.js", JS, include_bytes!("../web/js/task.js")),
];

pub fn router() -> Router<AppState> {
    let mut router = Router::new().route("/js/{file}", get(module));
    for (path, _, _) in FILES
        .iter()
        .filter(|(path, _, _)| !path.starts_with("/js/"))
    {
        router = router.route(path, get(move || async move { file(path) }));
    }
    router
}

async fn module(Path(name): Path<String>) -> Response {
    file(&format!("/js/{name}"))
}

fn file(path: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return ApiError::not_found("file").into_response();
    };
    let [a, b, c] = SECURITY;
    // Revalidated on every load: the service worker keeps the copy that opens offline.
    let fresh = (header::CACHE_CONTROL, "no-cache");
    (
        [(header::CONTENT_TYPE, *content_type), a, b, c, fresh],
        *body,
    )
        .into_response()
}
