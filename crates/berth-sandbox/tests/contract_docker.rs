//! The backend contract (tests/contract) on the real Docker engine with the default image.
//! Without an engine the tests fail on CI (CI is set) and are skipped with a message elsewhere.

mod contract;
mod engine;

use std::sync::Arc;

use berth_sandbox::DockerSandboxes;
use contract::Backend;

async fn docker() -> Option<Backend> {
    let docker = engine::engine().await?;
    Some(Backend {
        sandboxes: Arc::new(DockerSandboxes::new(docker)),
        image: berth_sandbox::default_image(),
    })
}

macro_rules! contract_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let Some(backend) = docker().await else { return };
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
