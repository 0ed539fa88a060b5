//! What tests see of the Docker engine: the containers Berth left on it, found by label.

use std::process::Command;

/// Ids of the containers, running or not, that carry `label` (`key=value`, or just `key`).
pub fn containers_labelled(label: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .expect("the docker command runs");
    assert!(
        output.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}
