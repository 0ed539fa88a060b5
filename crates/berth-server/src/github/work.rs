//! What the worker does with one message: a delivery's trigger checked (a person, not a bot;
//! write access, asked of GitHub; the allow-list) and turned into a task or a follow-up, or
//! refused with a reply; or a task's ending told in Berth's comment. A message that fails is
//! tried again later; one whose task is still running waits for it.

use std::time::Duration;

use berth_github::{GitHubError, Repository};
use berth_proto::{CreateTask, TaskId};
use berth_store::{
    GithubIdentity, GithubLink, GithubOrigin, NewFollowUp, NewTask, OutboxMessage, StoreError,
};
use serde_json::Value;

use super::delivery::{self, ReactTo, Reading, Trigger};
use super::{answers, prompt, Front};
use crate::AppState;

/// Why a message was not done: tried again after `retry_in`, or given up with `None`.
struct Failure {
    reason: String,
    retry_in: Option<Duration>,
}

impl From<GitHubError> for Failure {
    fn from(err: GitHubError) -> Self {
        // GitHub's 4xx (other than rate limits) will not change by asking again.
        let lasting =
            matches!(err.status, Some(400..=499)) && !matches!(err.status, Some(403 | 429));
        Failure {
            reason: err.to_string(),
            retry_in: (!lasting).then_some(Duration::ZERO),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Failure {
            reason: err.to_string(),
            retry_in: Some(Duration::ZERO),
        }
    }
}

/// Attempts before a message is given up.
const MOST_ATTEMPTS: i64 = 12;

pub(super) async fn handle(state: &AppState, front: &Front, message: OutboxMessage) {
    let payload = &message.payload;
    let done = match payload["kind"].as_str() {
        Some("delivery") => on_delivery(state, front, payload).await,
        Some("task_ended") => match payload["task_id"].as_str().and_then(|id| id.parse().ok()) {
            Some(task_id) => on_task_ended(state, front, task_id).await,
            None => Ok(()),
        },
        _ => Ok(()),
    };
    let result = match done {
        Ok(()) => state.store.ack_outbox(&message.id).await,
        Err(failure) => {
            // A task still running is waited for; anything else is retried with backoff (from
            // 5 s, doubling, at most 5 minutes) a few times.
            let retry_in = failure.retry_in.and_then(|wait| {
                let backoff = Duration::from_secs(5 << message.attempts.clamp(0, 6) as u32);
                match wait > Duration::ZERO {
                    true => Some(wait),
                    false => (message.attempts < MOST_ATTEMPTS)
                        .then_some(backoff.min(Duration::from_secs(300))),
                }
            });
            tracing::warn!(id = %message.id, attempt = message.attempts, reason = %failure.reason,
                retry = retry_in.is_some(), "a GitHub message failed");
            let retry_ms = retry_in.map(|wait| wait.as_millis() as i64);
            state
                .store
                .retry_outbox(&message.id, message.attempts, &failure.reason, retry_ms)
                .await
        }
    };
    if let Err(err) = result {
        tracing::warn!(id = %message.id, error = %err, "recording a GitHub message's end failed");
    }
}

async fn on_delivery(state: &AppState, front: &Front, payload: &Value) -> Result<(), Failure> {
    let event = payload["event"].as_str().unwrap_or_default();
    let delivery_id = payload["delivery_id"].as_str().unwrap_or_default();
    let reading = Reading {
        app_id: front.app.app_id(),
        label: &front.label,
        handle: &front.handle,
    };
    let Some(trigger) = delivery::read(event, &payload["payload"], &reading) else {
        return Ok(());
    };
    let place = trigger.place();
    let repo = front.app.repository(place.installation, &place.repository);
    let mut follow_up_of = None;
    if let Trigger::PullRequest {
        html_url,
        from_fork,
        text,
        ..
    } = &trigger
    {
        follow_up_of = state.store.github_task_by_pull_request(html_url).await?;
        if follow_up_of.is_none() {
            if !delivery::mentions(text, &front.handle) {
                return Ok(());
            }
            let reason = if *from_fork {
                "this pull request comes from a fork, and Berth takes no instructions from a \
                 fork's changes. Open an issue and hand it to Berth instead."
            } else {
                "Berth takes work from issues (label or mention) and reviews on its own pull \
                 requests, not from other pull requests."
            };
            return refuse(&repo, &trigger, reason).await;
        }
    }
    let sender = &place.sender;
    if sender.is_bot() {
        return refuse(&repo, &trigger, "bots cannot hand work to Berth.").await;
    }
    if !repo.can_write(&sender.login).await? {
        let reason = "only people with write access to this repository can hand work to Berth.";
        return refuse(&repo, &trigger, reason).await;
    }
    let owner = match account_of(state, &repo, sender).await? {
        Ok(owner) => owner,
        Err(reason) => return refuse(&repo, &trigger, &reason).await,
    };
    let key = format!("github:{delivery_id}");
    match follow_up_of {
        Some(link) => follow_up(state, &repo, &trigger, link, key).await,
        None => start_task(state, &repo, &trigger, owner, key).await,
    }
}

/// The Berth user of a GitHub user with write access, by GitHub id, if the allow-list lets
/// them in; else why not.
async fn account_of(
    state: &AppState,
    repo: &Repository<'_>,
    sender: &delivery::Sender,
) -> Result<Result<berth_proto::UserId, String>, Failure> {
    let settings = &state.settings;
    if !settings.allowed_logins.is_empty() || !settings.allowed_orgs.is_empty() {
        let mut listed = settings
            .allowed_logins
            .iter()
            .any(|login| login.eq_ignore_ascii_case(&sender.login));
        for org in &settings.allowed_orgs {
            if listed {
                break;
            }
            listed = repo.is_org_member(org, &sender.login).await?;
        }
        if !listed {
            return Ok(Err(
                "this Berth server takes work only from people on its allow-list.".into(),
            ));
        }
    }
    let identity = GithubIdentity {
        github_id: sender.id,
        login: sender.login.clone(),
    };
    let account = state.store.upsert_github_user(&identity, false).await?;
    if account.disabled_at.is_some() {
        return Ok(Err("your Berth account is disabled.".into()));
    }
    Ok(Ok(account.id))
}

async fn refuse(repo: &Repository<'_>, trigger: &Trigger, reason: &str) -> Result<(), Failure> {
    let login = &trigger.place().sender.login;
    repo.comment(trigger.number(), &answers::refused(login, reason))
        .await?;
    Ok(())
}

/// Reacts to what handed the work over; a failure here does not hold the work up.
async fn react(repo: &Repository<'_>, trigger: &Trigger) {
    let reacted = match trigger.react_to() {
        ReactTo::Issue(number) => repo.react_to_issue(number, "eyes").await,
        ReactTo::Comment(id) => repo.react_to_comment(id, "eyes").await,
        ReactTo::Nothing => Ok(()),
    };
    if let Err(err) = reacted {
        tracing::warn!(error = %err, "reacting on GitHub failed");
    }
}

async fn start_task(
    state: &AppState,
    repo: &Repository<'_>,
    trigger: &Trigger,
    owner: berth_proto::UserId,
    key: String,
) -> Result<(), Failure> {
    let Trigger::Issue {
        place,
        number,
        title,
        body,
        author,
        instruction,
    } = trigger
    else {
        return Ok(());
    };
    react(repo, trigger).await;
    let instruction_id = instruction.as_ref().map(|(id, _)| *id);
    let comments: Vec<_> = repo
        .issue_comments(*number)
        .await?
        .into_iter()
        .filter(|c| Some(c.id) != instruction_id && !c.body.contains(answers::MARK))
        .collect();
    let prompt = prompt::for_issue(
        &place.repository,
        *number,
        &place.sender.login,
        instruction.as_ref().map(|(_, text)| text.as_str()),
        title,
        body,
        author,
        &comments,
        state.settings.max_prompt_bytes,
    );
    let web = state.shared.github_web_url.trim_end_matches('/');
    let mut request = CreateTask::new(format!("{web}/{}.git", place.repository), prompt);
    request.open_pull_request = true;
    // Whoever can label an issue must not choose what the agent reaches: no network, whatever
    // the server's default_network.
    request.network = Some(berth_proto::Network::None);
    if let Err(err) = crate::task_validation::validate(&state.settings, &state.shared, &mut request)
    {
        return refuse(repo, trigger, err.message()).await;
    }
    let hash = crate::idempotency::request_hash(&request);
    let origin = GithubOrigin {
        installation_id: place.installation as i64,
        repository: place.repository.clone(),
        issue_number: *number as i64,
    };
    let created = state
        .store
        .create_task(NewTask {
            owner_id: owner,
            request,
            max_attempts: state.settings.max_attempts,
            idempotency: Some((key, hash)),
            github: Some(origin),
        })
        .await?;
    let task_id = created.task.id;
    // Done before, up to the comment: a retry after the comment was made makes no second.
    let linked = state.store.github_link(task_id).await?;
    if linked.is_some_and(|link| link.comment_id.is_some()) {
        return Ok(());
    }
    let link = answers::task_link(state.settings.public_url.as_deref(), task_id);
    let comment = repo
        .comment(*number, &answers::acknowledged(&link, false))
        .await?;
    state
        .store
        .set_github_comment(task_id, comment as i64)
        .await?;
    Ok(())
}

async fn follow_up(
    state: &AppState,
    repo: &Repository<'_>,
    trigger: &Trigger,
    link: GithubLink,
    key: String,
) -> Result<(), Failure> {
    let Trigger::PullRequest {
        place,
        number,
        review,
        text,
        ..
    } = trigger
    else {
        return Ok(());
    };
    let threads = match review {
        Some(review) => prompt::review_threads(&repo.review_comments(*number).await?, *review),
        None => Vec::new(),
    };
    let prompt = prompt::for_review(
        *number,
        &place.sender.login,
        text,
        &threads,
        state.settings.max_prompt_bytes,
    );
    let hash = crate::idempotency::request_hash(&prompt);
    let follow_up = NewFollowUp {
        prompt,
        max_attempts: state.settings.max_attempts,
        idempotency: Some((key, hash)),
    };
    let created = match state
        .store
        .continue_task(link.owner_id, link.task_id, follow_up)
        .await
    {
        Ok(Some(created)) => created,
        Ok(None) => return Ok(()),
        Err(StoreError::Conflict(reason)) => {
            return Err(Failure {
                reason,
                retry_in: Some(Duration::from_secs(20)),
            })
        }
        Err(err) => return Err(err.into()),
    };
    if !created.created {
        return Ok(());
    }
    react(repo, trigger).await;
    let task_link = answers::task_link(state.settings.public_url.as_deref(), link.task_id);
    let comment = repo
        .comment(*number, &answers::acknowledged(&task_link, true))
        .await?;
    state
        .store
        .set_github_comment(link.task_id, comment as i64)
        .await?;
    Ok(())
}

async fn on_task_ended(state: &AppState, front: &Front, task_id: TaskId) -> Result<(), Failure> {
    let Some(link) = state.store.github_link(task_id).await? else {
        return Ok(());
    };
    let Some(task) = state.store.get_task(link.owner_id, task_id).await? else {
        return Ok(());
    };
    let repo = front
        .app
        .repository(link.installation_id as u64, &link.repository);
    let task_link = answers::task_link(state.settings.public_url.as_deref(), task_id);
    let text = answers::ended(&task, &task_link);
    match link.comment_id {
        Some(comment) => repo.edit_comment(comment as u64, &text).await?,
        None => {
            let comment = repo.comment(link.issue_number as u64, &text).await?;
            state
                .store
                .set_github_comment(task_id, comment as i64)
                .await?;
        }
    }
    Ok(())
}
