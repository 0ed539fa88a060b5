//! What a GitHub delivery asks of Berth, read from its payload: an issue handed over (by its
//! label, or by a comment that mentions Berth's handle), or a comment or review on a pull
//! request; everything else is nothing. Only the fields Berth acts on are read.

use serde_json::Value;

/// Who did it, as GitHub says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    pub id: i64,
    pub login: String,
    /// `User`, `Bot` or `Organization`.
    pub kind: String,
}

impl Sender {
    pub fn is_bot(&self) -> bool {
        self.kind == "Bot" || self.login.ends_with("[bot]")
    }
}

/// Where the delivery happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub installation: u64,
    /// `owner/name`.
    pub repository: String,
    pub sender: Sender,
}

/// What to react to with the acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReactTo {
    Issue(u64),
    Comment(u64),
    /// Reviews take no reactions.
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// An issue handed to Berth: `instruction` is the mentioning comment, `None` for a label.
    Issue {
        place: Place,
        number: u64,
        title: String,
        body: String,
        author: String,
        instruction: Option<(u64, String)>,
    },
    /// A comment or a review on a pull request: a follow-up if the pull request is Berth's.
    PullRequest {
        place: Place,
        number: u64,
        html_url: String,
        /// The pull request comes from another repository (a fork).
        from_fork: bool,
        /// The review's id, for its line comments; `None` for a conversation comment.
        review: Option<u64>,
        /// The comment's id, for a reaction; `None` for a review.
        comment: Option<u64>,
        text: String,
    },
}

impl Trigger {
    pub fn place(&self) -> &Place {
        match self {
            Trigger::Issue { place, .. } | Trigger::PullRequest { place, .. } => place,
        }
    }

    /// The issue or pull request whose conversation Berth answers in.
    pub fn number(&self) -> u64 {
        match self {
            Trigger::Issue { number, .. } | Trigger::PullRequest { number, .. } => *number,
        }
    }

    pub fn react_to(&self) -> ReactTo {
        match self {
            Trigger::Issue {
                instruction: Some((comment, _)),
                ..
            } => ReactTo::Comment(*comment),
            Trigger::Issue { number, .. } => ReactTo::Issue(*number),
            Trigger::PullRequest {
                comment: Some(comment),
                ..
            } => ReactTo::Comment(*comment),
            Trigger::PullRequest { .. } => ReactTo::Nothing,
        }
    }
}

/// How the App is told apart from people, and what hands work to it.
pub struct Reading<'a> {
    pub app_id: u64,
    pub label: &'a str,
    pub handle: &'a str,
}

/// When the delivery's event happened, as GitHub wrote it, for refusing stale deliveries.
pub fn event_time(event: &str, payload: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    let at = match event {
        "issues" => &payload["issue"]["updated_at"],
        "issue_comment" => &payload["comment"]["updated_at"],
        "pull_request_review" => &payload["review"]["submitted_at"],
        _ => return None,
    };
    chrono::DateTime::parse_from_rfc3339(at.as_str()?)
        .ok()
        .map(|at| at.with_timezone(&chrono::Utc))
}

/// Whether `text` mentions `@handle` as a word of its own.
pub fn mentions(text: &str, handle: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let lower = text.to_ascii_lowercase();
    let needle = format!("@{}", handle.to_ascii_lowercase());
    lower.match_indices(&needle).any(|(at, _)| {
        let before = lower[..at].chars().next_back();
        let after = lower[at + needle.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// What the delivery asks, or `None` when it asks nothing of Berth (another event, another
/// label, a comment without the mention, the App's own comments).
pub fn read(event: &str, payload: &Value, reading: &Reading<'_>) -> Option<Trigger> {
    let place = place(payload)?;
    let action = payload["action"].as_str()?;
    match (event, action) {
        ("issues", "labeled") => {
            let issue = &payload["issue"];
            let label = payload["label"]["name"].as_str()?;
            if !label.eq_ignore_ascii_case(reading.label) || issue.get("pull_request").is_some() {
                return None;
            }
            Some(issue_trigger(place, issue, None))
        }
        ("issue_comment", "created") => {
            let comment = &payload["comment"];
            let by_app = comment["performed_via_github_app"]["id"].as_u64() == Some(reading.app_id);
            if by_app {
                return None;
            }
            let text = comment["body"].as_str().unwrap_or_default().to_string();
            let id = comment["id"].as_u64()?;
            let issue = &payload["issue"];
            if let Some(pull) = issue.get("pull_request") {
                return Some(Trigger::PullRequest {
                    place,
                    number: issue["number"].as_u64()?,
                    html_url: pull["html_url"].as_str()?.to_string(),
                    // A conversation comment does not say; the pull request is looked up.
                    from_fork: false,
                    review: None,
                    comment: Some(id),
                    text,
                });
            }
            mentions(&text, reading.handle).then(|| issue_trigger(place, issue, Some((id, text))))
        }
        ("pull_request_review", "submitted") => {
            let review = &payload["review"];
            let text = review["body"].as_str().unwrap_or_default().to_string();
            let state = review["state"].as_str().unwrap_or_default();
            if state.eq_ignore_ascii_case("approved") && text.trim().is_empty() {
                return None;
            }
            let pull = &payload["pull_request"];
            let head = pull["head"]["repo"]["full_name"].as_str();
            Some(Trigger::PullRequest {
                from_fork: head != Some(place.repository.as_str()),
                place,
                number: pull["number"].as_u64()?,
                html_url: pull["html_url"].as_str()?.to_string(),
                review: Some(review["id"].as_u64()?),
                comment: None,
                text,
            })
        }
        _ => None,
    }
}

fn place(payload: &Value) -> Option<Place> {
    let sender = &payload["sender"];
    Some(Place {
        installation: payload["installation"]["id"].as_u64()?,
        repository: payload["repository"]["full_name"].as_str()?.to_string(),
        sender: Sender {
            id: sender["id"].as_i64()?,
            login: sender["login"].as_str()?.to_string(),
            kind: sender["type"].as_str().unwrap_or("User").to_string(),
        },
    })
}

fn issue_trigger(place: Place, issue: &Value, instruction: Option<(u64, String)>) -> Trigger {
    let text = |field: &str| issue[field].as_str().unwrap_or_default().to_string();
    Trigger::Issue {
        place,
        number: issue["number"].as_u64().unwrap_or_default(),
        title: text("title"),
        body: text("body"),
        author: issue["user"]["login"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        instruction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reading() -> Reading<'static> {
        Reading {
            app_id: 42,
            label: "berth",
            handle: "berth",
        }
    }

    fn base(action: &str) -> Value {
        json!({
            "action": action,
            "installation": {"id": 7},
            "repository": {"full_name": "acme/widgets"},
            "sender": {"id": 1, "login": "alice", "type": "User"},
            "issue": {"number": 12, "title": "Crash", "body": "It crashes", "user": {"login": "mallory"}},
        })
    }

    #[test]
    fn mentions_are_whole_words() {
        assert!(mentions("@berth please fix", "berth"));
        assert!(mentions("Hey @Berth, fix it.", "berth"));
        assert!(!mentions("@berthold fix", "berth"));
        assert!(!mentions("mail me at x@berth.dev", "berth"));
        assert!(!mentions("no mention", "berth"));
    }

    #[test]
    fn the_label_hands_over_the_issue_other_labels_do_not() {
        let mut labelled = base("labeled");
        labelled["label"] = json!({"name": "Berth"});
        let trigger = read("issues", &labelled, &reading()).unwrap();
        assert_eq!(trigger.react_to(), ReactTo::Issue(12));
        labelled["label"] = json!({"name": "bug"});
        assert_eq!(read("issues", &labelled, &reading()), None);
        assert_eq!(read("issues", &base("opened"), &reading()), None);
    }

    #[test]
    fn a_comment_hands_over_the_issue_only_with_the_mention_and_never_the_apps_own() {
        let mut commented = base("created");
        commented["comment"] = json!({"id": 5, "body": "@berth add a test"});
        match read("issue_comment", &commented, &reading()).unwrap() {
            Trigger::Issue { instruction, .. } => {
                assert_eq!(instruction, Some((5, "@berth add a test".to_string())))
            }
            other => panic!("{other:?}"),
        }
        commented["comment"]["performed_via_github_app"] = json!({"id": 42});
        assert_eq!(read("issue_comment", &commented, &reading()), None);
        commented["comment"] = json!({"id": 6, "body": "just talking"});
        assert_eq!(read("issue_comment", &commented, &reading()), None);
    }

    #[test]
    fn reviews_are_read_with_their_fork_and_empty_approvals_ignored() {
        let mut reviewed = base("submitted");
        reviewed["review"] = json!({"id": 9, "body": "Rename it", "state": "changes_requested"});
        reviewed["pull_request"] = json!({"number": 3, "html_url": "https://github.com/acme/widgets/pull/3",
            "head": {"repo": {"full_name": "mallory/widgets"}}});
        match read("pull_request_review", &reviewed, &reading()).unwrap() {
            Trigger::PullRequest {
                from_fork, review, ..
            } => assert_eq!((from_fork, review), (true, Some(9))),
            other => panic!("{other:?}"),
        }
        reviewed["review"] = json!({"id": 10, "body": "", "state": "approved"});
        assert_eq!(read("pull_request_review", &reviewed, &reading()), None);
    }
}
