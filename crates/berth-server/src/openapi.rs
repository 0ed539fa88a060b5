//! The OpenAPI 3.1 document, generated from the handlers and wire types. A copy is committed
//! as `docs/openapi.json`; `berth openapi` writes it and a test fails when it is stale.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::accounts::routes as accounts;
use crate::routes::{health, tasks, tokens};
use crate::stream;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Berth",
        description = "Self-hosted background coding agents: submit a task (a repository and a \
                       request in plain words), follow its events, collect its diff."
    ),
    paths(
        health::healthz, health::readyz,
        tasks::create_task, tasks::list_tasks, tasks::get_task, tasks::cancel_task,
        tasks::list_events, tasks::get_diff, tasks::follow_up,
        tokens::me, tokens::list_tokens, tokens::create_token, tokens::revoke_token,
        stream::create_ticket,
        accounts::web_start, accounts::web_callback, accounts::logout,
        accounts::device_start, accounts::device_token,
        accounts::list_users, accounts::disable_user, accounts::list_audit,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "tasks", description = "Tasks and their event logs"),
        (name = "tokens", description = "API tokens of the caller"),
        (name = "streams", description = "Realtime streams (WebSocket and SSE; see docs/streaming.md)"),
        (name = "health", description = "Probes"),
        (name = "auth", description = "GitHub sign-in: browser and device flow (see docs/auth.md)"),
        (name = "admin", description = "Users and the audit log (admins only)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("berth_…")
                    .build(),
            ),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The document as committed: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("the document serialises");
    text.push('\n');
    text
}
