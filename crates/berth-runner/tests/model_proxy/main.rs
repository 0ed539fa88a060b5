//! The metered model proxy over real HTTP, its upstream the testkit's fake Anthropic API (or a
//! small fake of the OpenAI chat API), its meter a real SQLite store: what reaches the model,
//! what comes back, what is counted, and who is refused.

mod http;
mod python_sdk;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use berth_proto::{Budget, CreateTask, Event, EventKind, Secret, Task, UserId};
use berth_runner::model_proxy::{Admission, ModelProxy, Pricing, Reach, Upstreams};
use berth_store::{ClaimLimits, Fence, NewTask, Store};
use berth_testkit::FakeAnthropic;

pub const REAL_KEY: &str = "sk-ant-real-key-5150";

/// The proxy listens on 127.0.0.2 and takes the rest of loopback as the sandboxes' network,
/// so the test (connecting from 127.0.0.1) plays a sandbox.
pub fn loopback_reach() -> Reach {
    Reach {
        network: "127.0.0.0/8".parse().unwrap(),
        host: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
    }
}

/// Claude Sonnet's list price; other models have none.
pub fn pricing() -> Pricing {
    Arc::new(|model, counts| {
        model.starts_with("claude-sonnet-4-5").then(|| {
            (counts.input as f64 * 3.0
                + counts.output as f64 * 15.0
                + counts.cache_write as f64 * 3.75
                + counts.cache_read as f64 * 0.3)
                / 1e6
        })
    })
}

/// A claimed task in a fresh SQLite database.
pub struct Attempt {
    _dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub task: Task,
    pub owner: UserId,
}

impl Attempt {
    pub async fn start(budget: Budget) -> Attempt {
        let dir = tempfile::tempdir().unwrap();
        let store = berth_store::open_sqlite(dir.path()).await.unwrap();
        let owner = store.upsert_user("alice").await.unwrap().id;
        let mut request = CreateTask::new("https://github.com/octo/hello", "fix it");
        request.budget = budget;
        let new = NewTask {
            owner_id: owner,
            request,
            max_attempts: 1,
            idempotency: None,
            github: None,
        };
        store.create_task(new).await.unwrap();
        let limits = ClaimLimits {
            node_id: "node".into(),
            lease_ms: 60_000,
            node_capacity: 1,
            per_user_limit: 1,
        };
        let task = store.claim_next_task(&limits).await.unwrap().unwrap();
        Attempt {
            _dir: dir,
            store,
            task,
            owner,
        }
    }

    pub fn admission(&self) -> Admission {
        Admission {
            fence: Fence {
                task_id: self.task.id,
                attempt: self.task.attempt,
            },
            store: self.store.clone(),
            budget: self.task.budget.clone(),
        }
    }

    pub async fn events(&self) -> Vec<Event> {
        let listed = self.store.list_events(self.owner, self.task.id, 0, 1000);
        listed.await.unwrap().unwrap().0
    }

    pub async fn usage_events(&self) -> Vec<serde_json::Value> {
        let events = self.events().await;
        events
            .into_iter()
            .filter(|event| event.kind == EventKind::Usage)
            .map(|event| event.payload)
            .collect()
    }

    pub async fn task(&self) -> Task {
        let got = self.store.get_task(self.owner, self.task.id).await;
        got.unwrap().unwrap()
    }
}

/// A proxy in front of `anthropic` (and `openai_url`), serving on 127.0.0.2; its base URL.
pub async fn start_proxy(
    anthropic: &FakeAnthropic,
    openai_url: &str,
    reach: Reach,
) -> (ModelProxy, String) {
    let upstreams = Upstreams {
        anthropic_base_url: anthropic.url.clone(),
        anthropic_api_key: Some(Secret::new(REAL_KEY)),
        openai_base_url: openai_url.to_string(),
        openai_api_key: Some(Secret::new("sk-openai-real-9090")),
    };
    let proxy = ModelProxy::new(upstreams, reach, pricing());
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving = proxy.clone();
    tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
    (proxy, url)
}
