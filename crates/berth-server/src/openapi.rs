//! The OpenAPI 3.1 document, generated from the handlers and wire types. A copy is committed
//! as `docs/openapi.json`; `berth openapi` writes it and a test fails when it is stale.
//!
//! Each handler lists its own answers; the errors of the shared extractors (the caller, a JSON
//! body, a query string, a path parameter) are added here to every operation that takes such
//! input, from one table, so that no handler has to repeat them and none can forget them.

use std::collections::btree_map::Entry;

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Responses};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    admin, auth, environments, github, health, pull_requests, push, session, streams, tasks,
    tokens, webhooks,
};

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
        pull_requests::get_pull_request, pull_requests::merge_pull_request,
        tokens::me, tokens::list_tokens, tokens::create_token, tokens::revoke_token,
        streams::create_ticket,
        auth::web_start, auth::web_callback, auth::logout,
        auth::device_start, auth::device_token, auth::github_repositories,
        session::create_session, session::end_session,
        admin::list_users, admin::disable_user, admin::list_audit,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::delete_webhook,
        github::webhook,
        push::push_key, push::subscribe, push::list_subscriptions, push::unsubscribe,
        environments::list_environments, environments::get_environment,
        environments::rebuild_environment, environments::list_setup_secrets,
        environments::put_setup_secret, environments::delete_setup_secret,
    ),
    modifiers(&BearerAuth, &InputErrors),
    tags(
        (name = "tasks", description = "Tasks and their event logs"),
        (name = "tokens", description = "API tokens of the caller"),
        (name = "streams", description = "Realtime streams (WebSocket and SSE; see docs/streaming.md)"),
        (name = "health", description = "Probes"),
        (name = "auth", description = "GitHub sign-in: browser and device flow (see docs/auth.md)"),
        (name = "admin", description = "Users and the audit log (admins only)"),
        (name = "webhooks", description = "Outgoing webhooks of the caller's task events (see docs/webhooks.md)"),
        (name = "github", description = "The GitHub App's webhook (see docs/github.md)"),
        (name = "environments", description = "Per-repository environments and setup secrets (see docs/environments.md)"),
        (name = "push", description = "Web Push: notifications when the caller's tasks end (see docs/web.md)"),
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

/// The role an operation names in its security requirement when only admins may call it
/// (OpenAPI 3.1 lets a non-OAuth requirement list role names): `security(("bearer" = ["admin"]))`.
pub const ADMIN_ROLE: &str = "admin";

/// One error an operation can answer: its status, its code, and when, for a person.
struct InputError(&'static str, &'static str, &'static str);

/// What `Caller` answers (and `Admin`, which takes the caller first).
const CALLER_ERRORS: &[InputError] = &[
    InputError(
        "401",
        "unauthorized",
        "no token or session, or an unknown, revoked or malformed one, or a disabled user",
    ),
    InputError(
        "403",
        "cross_site_request",
        "a session cookie sent from another site's page (Sec-Fetch-Site or Origin)",
    ),
];
const ADMIN_ERRORS: &[InputError] = &[InputError("403", "forbidden", "the caller is not an admin")];
/// What `ApiJson` answers.
const JSON_BODY_ERRORS: &[InputError] = &[
    InputError("400", "invalid_json", "the body is not JSON"),
    InputError(
        "413",
        "body_too_large",
        "the body is over the server's max_body_bytes",
    ),
    InputError(
        "415",
        "unsupported_media_type",
        "the body is not sent with Content-Type: application/json",
    ),
    InputError(
        "422",
        "invalid_body",
        "the JSON is not of the request's shape: a missing or unknown field, a wrong type",
    ),
];
/// What `ApiQuery` answers.
const QUERY_ERRORS: &[InputError] = &[InputError(
    "400",
    "invalid_query",
    "a query parameter that does not parse, such as a number out of range or one given twice",
)];
/// What `ApiPath` answers, and every handler for an id that names nothing of the caller's.
const PATH_ERRORS: &[InputError] = &[InputError(
    "404",
    "not_found",
    "no such thing, or not the caller's (a malformed id names nothing either)",
)];

/// Adds the shared extractors' errors to every operation, by the input it declares.
struct InputErrors;

impl Modify for InputErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                for error in input_errors(operation) {
                    add_error(&mut operation.responses, error);
                }
            }
        }
    }
}

fn input_errors(operation: &Operation) -> Vec<&'static InputError> {
    // The requirements' fields are private; their JSON form is `{"bearer": ["admin"]}`.
    let security = serde_json::to_value(&operation.security).unwrap_or_default();
    let requirements = security.as_array().cloned().unwrap_or_default();
    let roles = requirements
        .iter()
        .filter_map(|requirement| requirement.as_object())
        .flat_map(|schemes| schemes.values())
        .filter_map(|roles| roles.as_array())
        .flatten();
    let admin_only = roles.into_iter().any(|role| role == ADMIN_ROLE);
    let takes = |place: ParameterIn| {
        let mut parameters = operation.parameters.iter().flatten();
        parameters.any(|parameter| parameter.parameter_in == place)
    };
    let kinds = [
        (!requirements.is_empty(), CALLER_ERRORS),
        (admin_only, ADMIN_ERRORS),
        (operation.request_body.is_some(), JSON_BODY_ERRORS),
        (takes(ParameterIn::Query), QUERY_ERRORS),
        (takes(ParameterIn::Path), PATH_ERRORS),
    ];
    kinds
        .into_iter()
        .filter(|(takes, _)| *takes)
        .flat_map(|(_, errors)| errors.iter())
        .collect()
}

/// Adds `error` to the operation's answers: a new error answer for its status, or one more
/// code in the description of the answer the handler lists for it.
fn add_error(responses: &mut Responses, InputError(status, code, when): &InputError) {
    let line = format!("`{code}`: {when}");
    match responses.responses.entry(status.to_string()) {
        Entry::Occupied(mut listed) => {
            if let RefOr::T(response) = listed.get_mut() {
                if !response.description.contains(&format!("`{code}`")) {
                    response.description = format!("{}; {line}", response.description);
                }
            }
        }
        Entry::Vacant(slot) => {
            slot.insert(RefOr::T(error_response(status, line)));
        }
    }
}

/// An error answer: `ErrorBody`, and the challenge header of a 401.
pub(crate) fn error_response(status: &str, description: impl Into<String>) -> Response {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
        .build();
    if status == "401" {
        let challenge = utoipa::openapi::header::HeaderBuilder::new()
            .description(Some("`Bearer`"))
            .build();
        response
            .headers
            .insert("WWW-Authenticate".to_string(), challenge);
    }
    response
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
