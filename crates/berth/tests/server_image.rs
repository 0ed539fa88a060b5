//! The container image of Berth itself (deploy/build-image): built here without a registry,
//! then run as a server that reaches the host's Docker engine through the mounted socket and
//! keeps its data on a volume, and answered from the host.
//!
//! It needs root, debootstrap, the Docker engine and the Debian mirror apt uses; without them
//! it fails on CI and is skipped with a message elsewhere. It takes minutes (debootstrap).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, BERTH};

/// Runs a command and returns its standard output, failing the test with its error output.
fn run(command: &mut Command) -> String {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// Why this machine cannot build the image, if it cannot.
fn missing_prerequisite() -> Option<&'static str> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if !works("docker", &["info"]) {
        return Some("the Docker engine does not answer");
    }
    if !works("debootstrap", &["--version"]) {
        return Some("debootstrap is not installed");
    }
    if run(Command::new("id").arg("-u")) != "0" {
        return Some("debootstrap needs root");
    }
    None
}

/// Removes what the test made on the engine, even when it fails halfway.
struct Cleanup {
    container: String,
    volume: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| Command::new("docker").args(args).output();
        let _ = quiet(&["rm", "-f", &self.container]);
        let _ = quiet(&["volume", "rm", "-f", &self.volume]);
        let repo = self.image.split(':').next().unwrap_or_default();
        let _ = quiet(&["rmi", &self.image, &format!("{repo}:latest")]);
    }
}

#[tokio::test]
async fn the_image_serves_the_api_and_reaches_docker_through_the_socket() {
    if let Some(missing) = missing_prerequisite() {
        if std::env::var_os("CI").is_some() {
            panic!("cannot build the server image: {missing}");
        }
        eprintln!("skipped: {missing}");
        return;
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let cleanup = Cleanup {
        container: format!("berth-image-test-{id}"),
        volume: format!("berth-image-test-{id}"),
        image: format!("berth-image-test-{id}:test"),
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/build-image");
    run(Command::new(script)
        .arg(&cleanup.image)
        .env("BERTH_BINARY", BERTH));

    // Berth inside reaches the engine as a member of the socket's group, not as root.
    let socket_group = run(Command::new("stat").args(["-c", "%g", "/var/run/docker.sock"]));
    let key = "BERTH_ENCRYPTION_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    docker(&["volume", "create", &cleanup.volume]);
    docker(&[
        "run",
        "-d",
        "--name",
        &cleanup.container,
        "--group-add",
        &socket_group,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{}:/var/lib/berth", cleanup.volume),
        "-p",
        "127.0.0.1::7700",
        "-e",
        key,
        // The runner checks its sandbox image by running a container from it: this image
        // has git and bash, so the check goes through the socket without a second bootstrap.
        "-e",
        &format!("BERTH_SANDBOX_IMAGE={}", cleanup.image),
        &cleanup.image,
    ]);
    let port = docker(&["port", &cleanup.container, "7700/tcp"]);
    let address = port.lines().next().expect("a published port").to_string();
    let url = format!("http://{address}/readyz");

    let client = reqwest::Client::new();
    eventually(
        Duration::from_secs(180),
        "the server in the image is ready",
        || {
            let request = client.get(&url).send();
            async move {
                match request.await {
                    Ok(response) => response.status().is_success(),
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    let body: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "ready");

    let exec = |args: &[&str]| {
        let mut all = vec!["exec", cleanup.container.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    };
    assert_eq!(exec(&["id", "-u"]), "10001", "the server runs as root");
    exec(&["test", "-s", "/var/lib/berth/berth.db"]);
    let logs = docker(&["logs", &cleanup.container]);
    assert!(
        logs.contains("berth listening on http://0.0.0.0:7700"),
        "unexpected start:\n{logs}"
    );
}
