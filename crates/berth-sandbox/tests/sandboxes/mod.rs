//! Sandboxes of the default image on the real engine, for the tests that look inside them.

use std::process::Command;

use berth_sandbox::{DockerSandbox, ExecRequest, ExecResult, Limits, Sandbox, SandboxSpec};
use bollard::Docker;

/// A sandbox removed when the test ends, even when it fails.
pub struct Guard(pub DockerSandbox);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", self.0.id()])
            .output();
    }
}

pub fn spec(node: &str, limits: Limits) -> SandboxSpec {
    SandboxSpec {
        installation: "berth-test".to_string(),
        task_id: uuid::Uuid::now_v7().to_string(),
        attempt: 1,
        node_id: node.to_string(),
        image: berth_sandbox::default_image(),
        limits,
    }
}

pub async fn sandbox_with(docker: &Docker, limits: Limits) -> Guard {
    Guard(
        DockerSandbox::create(docker, &spec("berth-test", limits))
            .await
            .unwrap(),
    )
}

pub async fn run(sandbox: &Guard, command: &str) -> ExecResult {
    sandbox
        .0
        .exec(&ExecRequest::new(command), &mut |_, _| {})
        .await
        .unwrap()
}

pub async fn stdout_of(sandbox: &Guard, command: &str) -> String {
    let result = run(sandbox, command).await;
    assert_eq!(
        result.exit_code,
        Some(0),
        "{command}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8(result.stdout).unwrap()
}
