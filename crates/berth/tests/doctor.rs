//! `berth doctor` against a healthy node and broken ones: each failure named, with its fix,
//! and the exit status saying whether anything failed. The healthy case needs the real Docker
//! engine and the sandbox image (`berth image build`).

mod common;

use std::process::{Command, Output};

use berth_testkit::anthropic::FakeAnthropic;
use common::berth;

fn doctor(dir: &std::path::Path, settings: &[(&str, &str)]) -> (Output, String) {
    let mut command: Command = berth(dir);
    command.args(["doctor", "--data-dir", "state"]);
    for (key, value) in settings {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, text)
}

/// The line of check `name`, and the fix printed under it when it failed.
fn finding<'a>(text: &'a str, name: &str) -> (&'a str, Option<&'a str>) {
    let mut lines = text.lines();
    let line = lines
        .find(|line| line[6..].starts_with(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no check {name} in:\n{text}"));
    let fix = lines
        .next()
        .and_then(|next| next.trim().strip_prefix("fix: "));
    (line, fix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_node_passes_every_check() {
    let model = FakeAnthropic::start("sk-ant-doctor").await;
    let dir = tempfile::tempdir().unwrap();
    let (output, text) = doctor(
        dir.path(),
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-doctor"),
            ("ANTHROPIC_BASE_URL", &model.url),
            ("BERTH_GITHUB_API_URL", &model.url),
            (
                "BERTH_ENCRYPTION_KEY",
                "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            ),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{text}");
    for name in [
        "configuration",
        "docker",
        "database",
        "encryption keys",
        "github",
        "model",
    ] {
        let (line, fix) = finding(&text, name);
        assert!(line.starts_with("ok    "), "{line}");
        assert!(fix.is_none());
    }
    assert!(!text.contains("sk-ant-doctor"), "the key is never printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_node_is_told_what_to_fix() {
    let closed = berth_testkit::RefusedPort::new();
    let nowhere = closed.url();
    let dir = tempfile::tempdir().unwrap();
    let (output, text) = doctor(
        dir.path(),
        &[
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
            ("BERTH_GITHUB_API_URL", &nowhere),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{text}");
    let (line, fix) = finding(&text, "docker");
    assert!(
        line.starts_with("FAIL  docker: the Docker engine cannot be reached"),
        "{line}"
    );
    assert!(fix.unwrap().contains("DOCKER_HOST"), "{text}");
    let (line, fix) = finding(&text, "model");
    assert!(line.contains("anthropic_api_key is not set"), "{line}");
    assert!(fix.unwrap().contains("ANTHROPIC_API_KEY"), "{text}");
    let (line, fix) = finding(&text, "github");
    assert!(line.contains(&format!("cannot reach {nowhere}")), "{line}");
    assert!(fix.unwrap().contains("github_api_url"), "{text}");
    let (line, _) = finding(&text, "database");
    assert!(
        line.starts_with("ok    "),
        "what works is said to work: {line}"
    );
}

#[test]
fn sign_in_without_an_encryption_key_is_told_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let (output, text) = doctor(dir.path(), &[("BERTH_GITHUB_CLIENT_ID", "Iv1.abc")]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let (line, fix) = finding(&text, "configuration");
    assert!(line.contains("encryption_key is not"), "{line}");
    assert!(line.contains("openssl rand -base64 32"), "{line}");
    assert!(fix.is_some(), "{text}");
}

#[test]
fn a_malformed_encryption_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (output, text) = doctor(dir.path(), &[("BERTH_ENCRYPTION_KEY", "too-short")]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let (line, _) = finding(&text, "configuration");
    assert!(line.contains("encryption_key"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fly_node_checks_the_machines_api_instead_of_docker() {
    let fly = berth_testkit::FakeFlyApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = |token: &str| {
        doctor(
            dir.path(),
            &[
                ("BERTH_SANDBOX_BACKEND", "fly"),
                ("BERTH_FLY_API_URL", &fly.url),
                ("BERTH_FLY_APP", &fly.app),
                ("BERTH_FLY_API_TOKEN", token),
                // No engine: a Fly node needs none.
                ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
            ],
        )
        .1
    };
    let text = settings(&fly.token);
    let (line, fix) = finding(&text, "fly");
    assert!(
        line.starts_with("ok    ") && line.contains(&fly.app),
        "{line}"
    );
    assert!(fix.is_none());
    assert!(!text.contains("docker:"), "{text}");
    let text = settings("fo1_wrong-token");
    let (line, fix) = finding(&text, "fly");
    assert!(line.starts_with("FAIL  ") && line.contains("401"), "{line}");
    assert!(fix.unwrap().contains("fly_api_token"));
    assert!(!text.contains("fo1_wrong-token") && !text.contains(&fly.token));
}
