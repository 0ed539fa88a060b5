//! The Fly backend through its production client against the fake Machines API
//! (berth-testkit), whose machines are containers of the real default image on the real
//! Docker engine: the same contract as the Docker backend (berth-sandbox's tests/contract),
//! and what only Fly has. Without an engine the tests fail on CI and are skipped elsewhere.

#[path = "../../berth-sandbox/tests/contract/mod.rs"]
mod contract;
#[path = "../../berth-sandbox/tests/engine/mod.rs"]
mod engine;

use std::sync::Arc;

use berth_fly::{FlySandboxes, MachinesClient};
use berth_proto::Secret;
use berth_sandbox::{Limits, NetworkPolicy, Sandboxes};
use berth_testkit::FakeFlyApi;
use contract::Backend;

/// The fake API (kept alive by the caller) and the backend on it.
async fn fly() -> Option<(FakeFlyApi, Backend)> {
    engine::engine().await?;
    let api = FakeFlyApi::start().await;
    let client = MachinesClient::new(&api.url, &api.app, Secret::new(api.token.clone()));
    let backend = Backend {
        sandboxes: Arc::new(FlySandboxes::new(client, None, None)),
        image: berth_sandbox::default_image(),
    };
    Some((api, backend))
}

macro_rules! contract_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let Some((_api, backend)) = fly().await else { return };
            contract::$check(&backend).await;
        }
    )*};
}

contract_tests!(
    copy_in_exec_and_diff_round_trip,
    the_diff_is_gits_own,
    a_workspace_over_the_bound_is_refused,
    arguments_are_not_run_and_output_is_passed_on,
    a_timeout_kills_the_command_and_its_children,
    a_memory_hog_is_reported_oom_killed,
    output_over_the_bound_is_cut,
    files_go_in_and_out_whole,
    task_sandboxes_are_listed_by_installation_and_removed,
    a_change_too_large_is_an_error_not_a_cut_diff,
    a_destroyed_sandbox_is_gone,
);

#[tokio::test]
async fn network_none_is_refused_and_full_is_kept() {
    let Some((api, backend)) = fly().await else {
        return;
    };
    let refused = backend
        .sandboxes
        .check_network(NetworkPolicy::None)
        .unwrap_err();
    assert!(
        refused.contains("network none") && refused.contains("sandbox_backend"),
        "{refused}"
    );
    backend
        .sandboxes
        .check_network(NetworkPolicy::Full)
        .unwrap();
    let sandbox = contract::sandbox_with(&backend, Limits::default()).await;
    let err = sandbox.set_network(NetworkPolicy::None).await.unwrap_err();
    assert!(err.to_string().contains("network none"), "{err}");
    sandbox.set_network(NetworkPolicy::Full).await.unwrap();
    sandbox.destroy().await.unwrap();
    assert!(api.machines().is_empty(), "destroy removes the machine");
}

#[tokio::test]
async fn a_machine_is_sized_up_to_fly_steps_and_goes_when_destroyed() {
    let Some((api, backend)) = fly().await else {
        return;
    };
    let limits = Limits {
        memory_bytes: 300 << 20,
        cpus: 1.0,
        pids: 512,
    };
    let sandbox = contract::sandbox_with(&backend, limits).await;
    // The guest's memory, rounded up to Fly's 256 MiB steps, is what the machine got.
    let inspected = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.HostConfig.Memory}}",
            sandbox.id(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inspected.stdout).trim(),
        (512u64 << 20).to_string()
    );
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r == "POST /machines/{id}/exec"),
        "{requests:?}"
    );
    sandbox.destroy().await.unwrap();
    sandbox.destroy().await.unwrap();
    assert!(api.machines().is_empty());
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_a_clear_error() {
    let Some((api, _)) = fly().await else { return };
    let client = MachinesClient::new(&api.url, &api.app, Secret::new("fo1_wrong"));
    let sandboxes = FlySandboxes::new(client, None, None);
    let spec = contract::spec(
        &Backend {
            sandboxes: Arc::new(sandboxes.clone()),
            image: berth_sandbox::default_image(),
        },
        "contract",
        Limits::default(),
    );
    let err = sandboxes.create(&spec).await.err().unwrap().to_string();
    assert!(
        err.contains("fly_api_token") && err.contains("401"),
        "{err}"
    );
    assert!(
        !err.contains("fo1_wrong"),
        "the token is never shown: {err}"
    );
    assert!(api.machines().is_empty());
}

#[tokio::test]
async fn a_missing_image_is_reported_and_nothing_is_left() {
    let Some((api, backend)) = fly().await else {
        return;
    };
    let spec = berth_sandbox::SandboxSpec {
        image: "berth-no-such-image:0".into(),
        ..contract::spec(&backend, "contract", Limits::default())
    };
    let err = backend
        .sandboxes
        .create(&spec)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("could not create machine"), "{err}");
    assert!(api.machines().is_empty());
}
