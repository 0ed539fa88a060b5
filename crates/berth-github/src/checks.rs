//! A commit's checks as one list: GitHub keeps two kinds, commit statuses (the older API
//! most external CIs post to) and check runs (GitHub Actions and Apps), and a person wants
//! to see both, each with a plain outcome.

use berth_proto::{Check, CheckState};
use reqwest::Method;
use serde_json::Value;

use crate::rest::Rest;
use crate::Result;

/// The checks of commit `sha` of `repository` (`owner/name`): its commit statuses (the
/// newest per context, as GitHub's combined status gives them) and then its check runs.
pub async fn of_commit(
    rest: &Rest,
    token: &str,
    repository: &str,
    sha: &str,
) -> Result<Vec<Check>> {
    let bearer = format!("Bearer {token}");
    let status_path = format!("/repos/{repository}/commits/{sha}/status?per_page=100");
    let (_, combined) = rest.call(&bearer, Method::GET, &status_path, None).await?;
    let runs_path = format!("/repos/{repository}/commits/{sha}/check-runs?per_page=100");
    let (_, runs) = rest.call(&bearer, Method::GET, &runs_path, None).await?;
    let statuses = combined["statuses"].as_array().into_iter().flatten();
    let runs = runs["check_runs"].as_array().into_iter().flatten();
    Ok(statuses
        .map(from_status)
        .chain(runs.map(from_run))
        .collect())
}

/// All checks together: any failure fails, else anything unfinished is pending.
pub fn overall(checks: &[Check]) -> CheckState {
    let any = |state| checks.iter().any(|check| check.state == state);
    if any(CheckState::Failure) {
        CheckState::Failure
    } else if any(CheckState::Pending) {
        CheckState::Pending
    } else {
        CheckState::Success
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn from_status(status: &Value) -> Check {
    let state = match status["state"].as_str() {
        Some("success") => CheckState::Success,
        Some("pending") => CheckState::Pending,
        // `failure`, `error`, and anything GitHub adds later: not a pass.
        _ => CheckState::Failure,
    };
    Check {
        name: text(&status["context"]).unwrap_or_else(|| "status".into()),
        state,
        url: text(&status["target_url"]),
    }
}

fn from_run(run: &Value) -> Check {
    let state = match (run["status"].as_str(), run["conclusion"].as_str()) {
        (Some("completed"), Some("success" | "neutral" | "skipped")) => CheckState::Success,
        (Some("completed"), _) => CheckState::Failure,
        // `queued`, `in_progress`, `waiting`, `requested`, `pending`.
        _ => CheckState::Pending,
    };
    Check {
        name: text(&run["name"]).unwrap_or_else(|| "check".into()),
        state,
        url: text(&run["html_url"]).or_else(|| text(&run["details_url"])),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn outcomes_are_read_as_a_person_would() {
        let run = |status, conclusion| {
            from_run(&json!({"name": "n", "status": status, "conclusion": conclusion})).state
        };
        assert_eq!(run("completed", json!("success")), CheckState::Success);
        assert_eq!(run("completed", json!("skipped")), CheckState::Success);
        assert_eq!(run("completed", json!("timed_out")), CheckState::Failure);
        assert_eq!(run("in_progress", Value::Null), CheckState::Pending);
        let status = |state| from_status(&json!({"context": "c", "state": state})).state;
        assert_eq!(status("error"), CheckState::Failure);
        assert_eq!(status("pending"), CheckState::Pending);
        let check = |state| Check {
            name: "c".into(),
            state,
            url: None,
        };
        let mixed = [check(CheckState::Success), check(CheckState::Pending)];
        assert_eq!(overall(&mixed), CheckState::Pending);
        assert_eq!(overall(&[]), CheckState::Success);
    }
}
