//! A whole task with its sandbox on Fly Machines: the Fly backend, through its production
//! client, against the fake Machines API (whose machines are containers of the real image).

use std::sync::Arc;
use std::time::Duration;

use berth_fly::{FlySandboxes, MachinesClient};
use berth_proto::{EventKind, Network, Secret, TaskStatus};
use berth_runner::attempt::sweep_containers;
use berth_runner::command::SandboxCommand;
use berth_sandbox::{Limits, SandboxSpec, Sandboxes};
use berth_testkit::FakeFlyApi;

use crate::{run_keeping_diff, Setup};

fn fly_sandboxes(api: &FakeFlyApi) -> Arc<FlySandboxes> {
    let client = MachinesClient::new(&api.url, &api.app, Secret::new(api.token.clone()));
    Arc::new(FlySandboxes::new(client, None, None))
}

fn on_fly(api: &FakeFlyApi, network: Network) -> Setup {
    Setup {
        sandboxes: Some(fly_sandboxes(api)),
        network,
        ..Setup::default()
    }
}

fn edits_the_readme() -> SandboxCommand {
    SandboxCommand {
        command: "printf 'done on fly\\n' >> README && echo edited".into(),
        timeout: Duration::from_secs(120),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_whole_on_a_fly_machine_and_the_machine_goes() {
    let api = FakeFlyApi::start().await;
    let (task, events, diff) =
        run_keeping_diff(edits_the_readme(), on_fly(&api, Network::Full)).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
    let diff = String::from_utf8(diff.expect("the change is kept")).unwrap();
    assert!(diff.contains("+done on fly"), "{diff}");
    let output = events
        .iter()
        .filter(|e| e.kind == EventKind::CommandOutput)
        .map(|e| e.payload.to_string())
        .collect::<String>();
    assert!(output.contains("edited"), "{output}");
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r == "POST /machines"),
        "{requests:?}"
    );
    assert!(
        api.machines().is_empty(),
        "the attempt destroyed its machine"
    );
    // For docs/fly.md: how many Machines API calls one small task costs.
    eprintln!(
        "Machines API calls for one task: {}: {requests:?}",
        requests.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_network_is_refused_before_any_machine_is_made() {
    let api = FakeFlyApi::start().await;
    let (task, _, diff) = run_keeping_diff(edits_the_readme(), on_fly(&api, Network::None)).await;
    assert_eq!(task.status, TaskStatus::Failed, "not retried");
    assert_eq!(task.attempt, 1);
    let reason = task.error.unwrap();
    assert!(
        reason.contains("network none") && reason.contains("sandbox_backend"),
        "{reason}"
    );
    assert!(diff.is_none());
    let requests = api.requests();
    assert!(
        !requests.iter().any(|r| r == "POST /machines"),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_destroys_machines_no_live_attempt_holds_and_only_those() {
    let api = FakeFlyApi::start().await;
    let sandboxes = fly_sandboxes(&api);
    let dir = tempfile::tempdir().unwrap();
    let store = berth_store::open_sqlite(dir.path()).await.unwrap();
    let spec = |installation: &str| SandboxSpec {
        installation: installation.to_string(),
        task_id: uuid::Uuid::now_v7().to_string(),
        attempt: 1,
        node_id: "a-node-that-crashed".into(),
        image: berth_sandbox::default_image(),
        limits: Limits::default(),
    };
    let left_behind = sandboxes
        .create(&spec(store.installation_id()))
        .await
        .unwrap();
    let theirs = sandboxes
        .create(&spec("another-installation"))
        .await
        .unwrap();
    sweep_containers(sandboxes.as_ref(), store.as_ref()).await;
    assert_eq!(api.machines(), vec![theirs.id().to_string()]);
    assert!(!api.machines().contains(&left_behind.id().to_string()));
    theirs.destroy().await.unwrap();
}
