//! Puts the host's clone where the task's work stands, so that a retry and a follow-up carry
//! on from the work already done instead of starting over.

use std::collections::HashSet;

use berth_proto::Task;
use berth_sandbox::{ExecRequest, Sandbox};

use super::Ending;
use crate::git::Checkout;
use crate::Context;

/// On the task's first attempt, the ref it asked for, recorded as its base; later, that base
/// with the stored diff applied. Returns the base commit.
pub(super) async fn restore(
    checkout: &Checkout,
    task: &Task,
    ctx: &Context,
    max_bytes: u64,
) -> Result<String, Ending> {
    let state = ctx.store.work_state(task.id).await?;
    let Some(base) = state.base_commit else {
        let head = checkout
            .git_text(&["rev-parse", "HEAD"])
            .await
            .map_err(Ending::Infrastructure)?;
        ctx.store.set_base_commit(ctx.fence, &head).await?;
        return Ok(head);
    };
    checkout
        .git_text(&["checkout", "--quiet", "--detach", &base])
        .await
        .map_err(|err| {
            Ending::Failed(format!("the commit the task started from is gone: {err}"))
        })?;
    let diff = ctx
        .store
        .get_diff(task.owner_id, task.id)
        .await?
        .filter(|diff| !diff.is_empty());
    if let Some(diff) = diff {
        crate::patch::check_expansion(&diff, max_bytes).map_err(|reason| {
            Ending::Failed(format!(
                "the task's earlier work cannot be restored: {reason}"
            ))
        })?;
        let patch = checkout.path().join(".git").join("berth-restore.patch");
        std::fs::write(&patch, diff).map_err(|err| Ending::Infrastructure(err.to_string()))?;
        let patch = patch.to_string_lossy().to_string();
        checkout
            .git_text(&["apply", "--binary", "--whitespace=nowarn", &patch])
            .await
            .map_err(|err| {
                Ending::Failed(format!(
                    "the task's earlier work could not be restored: {err}"
                ))
            })?;
        let _ = std::fs::remove_file(&patch);
    }
    Ok(base)
}

/// Lists untracked paths (directories whole) that git does not ignore, NUL-separated.
const UNTRACKED: &str = "git ls-files -z --others --exclude-standard --directory";

/// Keeps what the setup made out of the task's diff: paths untracked in the sandbox but not
/// in the host's checkout (which holds the task's own new files) came from the setup, here
/// or in the prepared image, and are added to the sandbox's `.git/info/exclude`. Tracked
/// files the setup changed still count as change (see docs/environments.md).
pub(super) async fn exclude_setup_output(
    sandbox: &dyn Sandbox,
    checkout: &Checkout,
) -> Result<(), Ending> {
    let args: Vec<&str> = UNTRACKED.split(' ').skip(1).collect();
    let on_host = checkout
        .git_text(&args)
        .await
        .map_err(Ending::Infrastructure)?;
    let on_host: HashSet<&str> = on_host.split('\0').collect();
    let listed = sandbox
        .exec(&ExecRequest::new(UNTRACKED), &mut |_, _| {})
        .await?;
    if listed.exit_code != Some(0) || listed.truncated {
        return Err(Ending::Infrastructure(format!(
            "listing the setup's files failed: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        )));
    }
    let listed = String::from_utf8_lossy(&listed.stdout);
    let patterns: Vec<String> = listed
        .split('\0')
        .filter(|path| !path.is_empty() && !on_host.contains(path))
        .map(exclude_pattern)
        .collect();
    if patterns.is_empty() {
        return Ok(());
    }
    let append = ExecRequest {
        args: patterns,
        ..ExecRequest::new("mkdir -p .git/info && printf '%s\\n' \"$@\" >> .git/info/exclude")
    };
    let appended = sandbox.exec(&append, &mut |_, _| {}).await?;
    match appended.exit_code {
        Some(0) => Ok(()),
        _ => Err(Ending::Infrastructure(format!(
            "keeping the setup's files out of the diff failed: {}",
            String::from_utf8_lossy(&appended.stderr).trim()
        ))),
    }
}

/// An exclude line matching exactly `path` from the repository's root.
fn exclude_pattern(path: &str) -> String {
    let mut pattern = String::from("/");
    for c in path.chars() {
        if matches!(c, '\\' | '*' | '?' | '[' | ' ') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}
