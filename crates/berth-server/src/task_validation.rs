//! What the API checks in a task request (a new task, or a follow-up to one) before anything
//! is stored, so that a bad field is refused with a message a person can act on instead of
//! failing the task later.

use axum::http::StatusCode;
use berth_guard::repository_on;
use berth_proto::CreateTask;

use crate::error::{ApiError, ApiResult};
use crate::{AppState, SandboxCeiling, Settings, Shared};

/// A prompt, of a new task or of a follow-up: not empty, and within `max_prompt_bytes`.
pub(crate) fn check_prompt(settings: &Settings, prompt: &str) -> ApiResult<()> {
    if prompt.trim().is_empty() {
        return Err(ApiError::unprocessable("invalid_prompt", "prompt is empty"));
    }
    let limit = settings.max_prompt_bytes;
    if prompt.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "prompt_too_large",
            format!(
                "prompt is {} bytes; this server accepts at most {limit} (max_prompt_bytes)",
                prompt.len()
            ),
        ));
    }
    Ok(())
}

/// Every field of a new task, against this server's limits and allowed git hosts.
pub(crate) fn validate(
    settings: &Settings,
    shared: &Shared,
    request: &mut CreateTask,
) -> ApiResult<()> {
    check_prompt(settings, &request.prompt)?;
    request.network.get_or_insert(settings.default_network);
    request.repo_url = berth_guard::check_repo_url(&request.repo_url, &shared.git_allowed_hosts)
        .map_err(|message| ApiError::unprocessable("invalid_repo_url", message))?
        .to_string();
    if let Some(git_ref) = &request.git_ref {
        check_name("ref", git_ref)?;
    }
    if let Some(model) = &request.model {
        check_name("model", model)?;
    }
    if let Some(secs) = request.timeout_secs {
        if secs == 0 || secs > settings.max_timeout_secs {
            return Err(ApiError::unprocessable(
                "invalid_timeout",
                format!(
                    "timeout_secs must be between 1 and {}",
                    settings.max_timeout_secs
                ),
            ));
        }
    }
    check_resources(&shared.sandbox_ceiling, &request.resources)?;
    let web = &shared.github_web_url;
    if request.open_pull_request && repository_on(web, &request.repo_url).is_none() {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!(
                "open_pull_request needs the https URL of a repository on {web} \
                 ({web}/OWNER/NAME); other repositories end with their diff"
            ),
        ));
    }
    let budget = &request.budget;
    if budget.max_turns == Some(0)
        || budget.max_tokens == Some(0)
        || budget
            .max_usd
            .is_some_and(|usd| !usd.is_finite() || usd <= 0.0)
    {
        return Err(ApiError::unprocessable(
            "invalid_budget",
            "budget limits must be above zero (leave a limit out to have none)",
        ));
    }
    Ok(())
}

/// A pull request is pushed and opened with the owner's GitHub token or the server's: refuse
/// the task now rather than fail it once its work is done.
pub(crate) async fn check_github_token(
    state: &AppState,
    owner: berth_proto::UserId,
) -> ApiResult<()> {
    if state.shared.server_github_token || state.store.get_github_token(owner).await?.is_some() {
        return Ok(());
    }
    Err(ApiError::unprocessable(
        "no_github_token",
        "open_pull_request needs a GitHub token: sign in with GitHub (berth login --github), \
         or ask the server's operator to set github_token",
    ))
}

/// Per-task sandbox limits may be lower than the server's, never higher.
fn check_resources(ceiling: &SandboxCeiling, asked: &berth_proto::Resources) -> ApiResult<()> {
    let refuse = |what: String| Err(ApiError::unprocessable("invalid_resources", what));
    if let Some(memory) = asked.memory_mb {
        if !(64..=ceiling.memory_mb).contains(&memory) {
            return refuse(format!(
                "resources.memory_mb must be 64 to {}",
                ceiling.memory_mb
            ));
        }
    }
    if let Some(cpus) = asked.cpus {
        if !(cpus.is_finite() && cpus >= 0.1 && cpus <= ceiling.cpus) {
            return refuse(format!("resources.cpus must be 0.1 to {}", ceiling.cpus));
        }
    }
    if let Some(pids) = asked.pids {
        if !(16..=ceiling.pids).contains(&pids) {
            return refuse(format!("resources.pids must be 16 to {}", ceiling.pids));
        }
    }
    Ok(())
}

/// A git ref or a model name: short, printable, and never option-like.
fn check_name(field: &str, value: &str) -> ApiResult<()> {
    let bad = value.is_empty()
        || value.len() > 255
        || value.starts_with('-')
        || value.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("{field} must be 1 to 255 printable characters without spaces, not starting with '-'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use berth_guard::AllowedHost;

    use super::*;

    fn shared() -> Shared {
        Shared {
            git_allowed_hosts: ["github.com", "gitlab.com"]
                .into_iter()
                .map(|host| AllowedHost::parse(host).unwrap())
                .collect(),
            github_web_url: "https://github.com".into(),
            github_api_url: "https://api.github.com".into(),
            server_github_token: false,
            keyring: None,
            sandbox_ceiling: SandboxCeiling {
                memory_mb: 2048,
                cpus: 2.0,
                pids: 512,
            },
            github_app: None,
        }
    }

    fn task() -> CreateTask {
        CreateTask::new("https://github.com/octo/hello", "add a test")
    }

    /// The code `validate` refuses the changed task with.
    fn refusal(change: impl FnOnce(&mut CreateTask)) -> &'static str {
        let mut request = task();
        change(&mut request);
        let err = validate(&Settings::default(), &shared(), &mut request).unwrap_err();
        err.code()
    }

    #[test]
    fn a_task_within_the_limits_passes() {
        let mut request = task();
        request.git_ref = Some("release/1.2".into());
        request.model = Some("claude-sonnet-4".into());
        request.timeout_secs = Some(Settings::default().max_timeout_secs);
        request.open_pull_request = true;
        request.resources.memory_mb = Some(2048);
        request.resources.cpus = Some(0.1);
        request.resources.pids = Some(16);
        request.budget.max_usd = Some(0.5);
        validate(&Settings::default(), &shared(), &mut request).unwrap();
    }

    #[test]
    fn prompts_are_not_empty_and_within_the_limit() {
        let settings = Settings::default();
        assert_eq!(
            check_prompt(&settings, " \n").unwrap_err().code(),
            "invalid_prompt"
        );
        let long = "x".repeat(settings.max_prompt_bytes + 1);
        let err = check_prompt(&settings, &long).unwrap_err();
        assert_eq!(err.code(), "prompt_too_large");
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        check_prompt(&settings, &long[1..]).unwrap();
    }

    #[test]
    fn repositories_are_on_an_allowed_host() {
        assert_eq!(
            refusal(|t| t.repo_url = "https://example.com/octo/hello".into()),
            "invalid_repo_url"
        );
    }

    #[test]
    fn refs_and_models_are_short_printable_and_not_option_like() {
        assert_eq!(
            refusal(|t| t.git_ref = Some("--upload-pack=x".into())),
            "invalid_field"
        );
        assert_eq!(
            refusal(|t| t.git_ref = Some(String::new())),
            "invalid_field"
        );
        assert_eq!(
            refusal(|t| t.model = Some("a model".into())),
            "invalid_field"
        );
        assert_eq!(
            refusal(|t| t.model = Some("m".repeat(256))),
            "invalid_field"
        );
    }

    #[test]
    fn timeouts_are_between_one_second_and_the_maximum() {
        let max = Settings::default().max_timeout_secs;
        assert_eq!(refusal(|t| t.timeout_secs = Some(0)), "invalid_timeout");
        assert_eq!(
            refusal(|t| t.timeout_secs = Some(max + 1)),
            "invalid_timeout"
        );
    }

    #[test]
    fn resources_stay_under_the_sandbox_ceiling() {
        assert_eq!(
            refusal(|t| t.resources.memory_mb = Some(63)),
            "invalid_resources"
        );
        assert_eq!(
            refusal(|t| t.resources.memory_mb = Some(2049)),
            "invalid_resources"
        );
        assert_eq!(
            refusal(|t| t.resources.cpus = Some(f64::NAN)),
            "invalid_resources"
        );
        assert_eq!(
            refusal(|t| t.resources.cpus = Some(2.5)),
            "invalid_resources"
        );
        assert_eq!(
            refusal(|t| t.resources.pids = Some(513)),
            "invalid_resources"
        );
    }

    #[test]
    fn pull_requests_need_a_repository_on_github() {
        let on_gitlab = |t: &mut CreateTask| {
            t.repo_url = "https://gitlab.com/octo/hello".into();
            t.open_pull_request = true;
        };
        assert_eq!(refusal(on_gitlab), "invalid_field");
    }

    #[test]
    fn budget_limits_are_above_zero() {
        assert_eq!(refusal(|t| t.budget.max_turns = Some(0)), "invalid_budget");
        assert_eq!(refusal(|t| t.budget.max_tokens = Some(0)), "invalid_budget");
        assert_eq!(refusal(|t| t.budget.max_usd = Some(0.0)), "invalid_budget");
        assert_eq!(
            refusal(|t| t.budget.max_usd = Some(f64::INFINITY)),
            "invalid_budget"
        );
    }
}
