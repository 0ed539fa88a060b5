//! The lifecycle's own phases around the work: the setup command before it, the diff, the
//! pull request and the `result` event after it, and how the attempt's end is reported.

use berth_proto::{EventKind, Network, Task};
use berth_sandbox::{ExecRequest, NetworkPolicy, SandboxError};
use serde_json::json;

use super::{EgressSettings, Ending, Job, Lifecycle, Work};
use crate::egress::Admit;
use crate::git::Checkout;
use crate::publish::{publish, Description};
use crate::redact::Redactor;
use crate::{Context, Outcome, Published};

impl<W: Work> Lifecycle<W> {
    /// Runs the repository's setup command, if one is configured (the sandbox still has the
    /// network); whether one ran.
    pub(super) async fn setup(&self, job: Job<'_>) -> Result<bool, Ending> {
        let Some(command) = self.server_setup(job.task) else {
            return Ok(false);
        };
        // The setup runs with the network, whichever the sandbox came with (a warm pool's
        // containers wait without one).
        job.sandbox.set_network(NetworkPolicy::Full).await?;
        let call = json!({"id": "setup", "name": "setup", "input": {"command": command}});
        let _ = job
            .ctx
            .emit(EventKind::ToolCall, job.redactor.json(&call))
            .await;
        let request = ExecRequest {
            timeout: self.settings.setup_timeout,
            ..ExecRequest::new(command)
        };
        let done = job.exec_streamed(&request, Some("setup")).await?;
        if done.exit_code == Some(0) {
            return Ok(true);
        }
        Err(Ending::Failed(format!(
            "the setup command failed (exit code {}{})",
            done.exit_code.unwrap_or(-1),
            if done.timed_out { ", timed out" } else { "" }
        )))
    }

    /// The server's setup command for the task's repository: the longest matching URL prefix.
    pub(super) fn server_setup(&self, task: &Task) -> Option<String> {
        self.settings
            .setup_commands
            .iter()
            .filter(|(prefix, _)| task.repo_url.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, command)| command.clone())
    }

    /// Takes the final diff and stores it; then, for finished work, publishes it if the task
    /// asked for a pull request, and says so in a `result` event.
    pub(super) async fn conclude(
        &self,
        job: Job<'_>,
        checkout: &Checkout,
        ending: Ending,
    ) -> Outcome {
        let diff = match job.sandbox.diff(job.base).await {
            Ok(diff) => diff,
            Err(err) => return without_diff(err, ending, job.task),
        };
        // Kept, it would be applied on the host by the next attempt or the publisher.
        if let Err(reason) =
            crate::patch::check_expansion(&diff, self.settings.git.limits.max_bytes)
        {
            return match ending {
                Ending::Stopped | Ending::Infrastructure(_) => ending.outcome(None),
                _ => Outcome::failed(reason),
            };
        }
        if let Err(err) = job.ctx.store.save_diff(job.ctx.fence, &diff).await {
            tracing::info!(task = %job.task.id, error = %err, "could not store the final diff");
        }
        let Ending::Done { summary } = ending else {
            return ending.outcome(Some(diff));
        };
        let published = match self.publish_if_asked(job, checkout, &diff, &summary).await {
            Ok(published) => published,
            Err(reason) => {
                let reason = format!("the work is done but could not be published: {reason}");
                return Ending::Failed(reason).outcome(Some(diff));
            }
        };
        let diff = (!diff.is_empty()).then_some(diff);
        let result = json!({
            "has_diff": diff.is_some(),
            "branch": published.as_ref().and_then(|p| p.branch.clone()),
            "pull_request_url": published.as_ref().and_then(|p| p.pull_request_url.clone()),
        });
        let _ = job.ctx.emit(EventKind::Result, result).await;
        Outcome::Succeeded { diff, published }
    }

    /// Pushes the task's branch and opens its pull request, when the task asked for one and
    /// has a change (now, or pushed by an earlier request).
    async fn publish_if_asked(
        &self,
        job: Job<'_>,
        checkout: &Checkout,
        diff: &[u8],
        summary: &str,
    ) -> Result<Option<Published>, String> {
        let task = job.task;
        if !task.open_pull_request || (diff.is_empty() && task.result.branch.is_none()) {
            return Ok(None);
        }
        // A task from a GitHub issue says, in its pull request, which issue it fixes.
        let fixes_issue = match job.ctx.store.github_link(task.id).await {
            Ok(link) => link.map(|link| link.issue_number),
            Err(err) => return Err(format!("the database failed: {err}")),
        };
        let description = Description {
            summary: job.redactor.text(summary),
            fixes_issue,
        };
        let github = self.settings.github.as_ref();
        let author = &self.settings.author;
        publish(checkout, task, job.base, diff, author, github, &description)
            .await
            .map(Some)
    }
}

/// The outcome when the final diff could not be taken: a stopped attempt keeps nothing, an
/// infrastructure failure keeps its own reason, and a change too large fails the task.
fn without_diff(err: SandboxError, ending: Ending, task: &Task) -> Outcome {
    tracing::info!(task = %task.id, error = %err, "no final diff");
    match (err, ending) {
        (_, ending @ (Ending::Stopped | Ending::Infrastructure(_))) => ending.outcome(None),
        (err @ SandboxError::DiffTooLarge { .. }, _) => Outcome::failed(err.to_string()),
        (err, _) => Ending::from(err).outcome(None),
    }
}

/// The network policy of the task's work phase; `allowlist` needs this runner's egress proxy.
pub(super) fn work_policy(
    task: &Task,
    egress: Option<&EgressSettings>,
) -> Result<NetworkPolicy, Ending> {
    Ok(match task.network {
        Network::None => NetworkPolicy::None,
        Network::Full => NetworkPolicy::Full,
        Network::Allowlist => {
            let Some(egress) = egress else {
                return Err(Ending::Failed(
                    "this server runs no egress proxy, so network: allowlist is not offered; \
                     use none or full"
                        .into(),
                ));
            };
            NetworkPolicy::Egress {
                proxy: egress.proxy.addr(),
            }
        }
    })
}

/// The network the task asked for, for its work phase. For `allowlist`, the sandbox is
/// admitted to the egress proxy with the server's rules, and a task drains its requests into
/// `egress` events until the admission returned is dropped.
pub(super) async fn work_network(
    job: Job<'_>,
    egress: Option<&EgressSettings>,
) -> Result<Option<Egress>, Ending> {
    let policy = work_policy(job.task, egress)?;
    job.sandbox.set_network(policy).await?;
    let Some(egress) = egress.filter(|_| job.task.network == Network::Allowlist) else {
        return Ok(None);
    };
    let Some(source) = job.sandbox.egress_address().await? else {
        return Err(Ending::Infrastructure(
            "the sandbox has no address on the egress network".into(),
        ));
    };
    // The repository's environment file may narrow the server's list, never widen it.
    let rules = match job.allowed_domains {
        [] => egress.rules.clone(),
        asked => {
            let asked: Vec<_> = (asked.iter().cloned())
                .map(crate::egress::DomainEntry::Domain)
                .collect();
            crate::egress::narrow(&egress.rules, &asked).map_err(Ending::Failed)?
        }
    };
    let (admit, mut records) = egress.proxy.admit(source, rules);
    let (ctx, redactor) = (job.ctx.clone(), job.redactor.clone());
    // A name the agent asks for is its own text, and may spell out a secret it saw: redacted
    // like every other event.
    let drain = tokio::spawn(async move {
        while let Some(record) = records.recv().await {
            let _ = ctx
                .emit(EventKind::Egress, redactor.json(&record.to_json()))
                .await;
        }
    });
    Ok(Some(Egress { admit, drain }))
}

/// A sandbox's place at the egress proxy, and the task writing its events.
pub(super) struct Egress {
    admit: Admit,
    drain: tokio::task::JoinHandle<()>,
}

impl Egress {
    /// Ends the admission and waits for the last requests' events to be written.
    pub(super) async fn close(self) {
        drop(self.admit);
        let _ = self.drain.await;
    }
}

/// Reasons are stored and shown: they are redacted like events, and a failure of the task's
/// own is told in an `error` event as well as on the task.
pub(super) async fn reported(outcome: Outcome, ctx: &Context, redactor: &Redactor) -> Outcome {
    match outcome {
        Outcome::Failed { reason, diff } => {
            let reason = redactor.text(&reason);
            let _ = ctx
                .emit(EventKind::Error, json!({ "message": reason }))
                .await;
            Outcome::Failed { reason, diff }
        }
        Outcome::Infrastructure { reason } => Outcome::Infrastructure {
            reason: redactor.text(&reason),
        },
        other => other,
    }
}
