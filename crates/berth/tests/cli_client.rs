//! The command-line client against a running server with a runner, as a user would drive it:
//! log in, submit and watch, list, diff, cancel; exit codes tell the endings apart.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use berth_proto::StreamFrame;
use common::{berth, start_server, terminate, GitRepo};

const COMMAND: &str = "if [ -f FAIL ]; then echo failing >&2; exit 3; fi; \
                       if [ -f SLOW ]; then sleep 60; fi; echo bye >> README; echo done";

/// A client command with the login kept in `config`.
fn client(dir: &std::path::Path, config: &std::path::Path, args: &[&str]) -> Command {
    let mut command = berth(dir);
    command
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("BERTH_SERVER")
        .env_remove("BERTH_TOKEN");
    command
}

fn frames(output: &Output) -> Vec<StreamFrame> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_list_diff_and_cancel() {
    let ok = GitRepo::serve(&[("README", "hello\n")]).await;
    let failing = GitRepo::serve(&[("README", "hello\n"), ("FAIL", "")]).await;
    let slow = GitRepo::serve(&[("README", "hello\n"), ("SLOW", "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let token = berth(dir.path())
        .args(["token", "create", "--user", "alice", "--data-dir", "state"])
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let hosts = [&ok, &failing, &slow]
        .map(|repo| repo.allowed_host.clone())
        .join(",");
    let mut server = berth(dir.path());
    server
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir", "state"])
        .env("BERTH_GIT_ALLOWED_HOSTS", hosts)
        .env("BERTH_RUNNER_COMMAND", COMMAND);
    let (mut server, url, _) = start_server(server);

    // Log in with the token on standard input; the file is the user's alone.
    let mut login = client(dir.path(), &config, &["login", "--server", &url])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    assert!(login.wait().unwrap().success());
    let saved = config.join("berth/login.toml");
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bad = client(
        dir.path(),
        &dir.path().join("other"),
        &["login", "--server", &url, "--token", "berth_nope"],
    )
    .output()
    .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a refused token is an error");

    let run = |args: &[&str]| client(dir.path(), &config, args).output().unwrap();
    let watched = run(&[
        "submit",
        "--repo",
        &ok.url,
        "append bye",
        "--watch",
        "--json",
    ]);
    assert_eq!(
        watched.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    let seen = frames(&watched);
    assert!(matches!(seen.first(), Some(StreamFrame::Subscribed { .. })));
    assert!(matches!(
        seen.last(),
        Some(StreamFrame::End {
            status: berth_proto::TaskStatus::Succeeded,
            ..
        })
    ));
    let id = match &seen[0] {
        StreamFrame::Subscribed {
            task_id: Some(id), ..
        } => *id,
        other => panic!("{other:?}"),
    };
    let outputs: String = seen
        .iter()
        .filter_map(|frame| match frame {
            StreamFrame::Event { event } if event.kind == berth_proto::EventKind::CommandOutput => {
                event.payload["text"].as_str().map(str::to_string)
            }
            _ => None,
        })
        .collect();
    assert_eq!(outputs, "done\n");

    let diff = run(&["diff", &id.to_string()]);
    assert!(String::from_utf8_lossy(&diff.stdout).contains("+bye"));

    // A follow-up runs the task again; --watch shows it from the follow-up on.
    let replied = run(&["reply", &id.to_string(), "once more", "--watch", "--json"]);
    assert_eq!(
        replied.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&replied.stderr)
    );
    let seen_again = frames(&replied);
    let first_event = seen_again.iter().find_map(|frame| match frame {
        StreamFrame::Event { event } => Some(event.clone()),
        _ => None,
    });
    let first_event = first_event.expect("events after the follow-up");
    assert_eq!(first_event.payload["reason"], "follow-up");
    assert_eq!(first_event.payload["prompt"], "once more");
    assert!(matches!(
        seen_again.last(),
        Some(StreamFrame::End {
            status: berth_proto::TaskStatus::Succeeded,
            ..
        })
    ));
    let listed = run(&["tasks", "--json"]);
    let page: berth_proto::TaskPage = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(page.tasks[0].id, id);
    let human = run(&["tasks"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("succeeded"));
    assert!(
        !String::from_utf8_lossy(&human.stdout).contains('\x1b'),
        "no colours when not a terminal"
    );

    let failed = run(&["submit", "--repo", &failing.url, "fail please", "--watch"]);
    assert_eq!(failed.status.code(), Some(1), "a failed task exits 1");
    assert!(String::from_utf8_lossy(&failed.stdout).contains("failing"));

    let submitted = run(&["submit", "--repo", &slow.url, "take your time"]);
    let slow_id = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_string();
    let cancelled = run(&["cancel", &slow_id]);
    assert!(cancelled.status.success());
    let watched = run(&["watch", &slow_id, "--json"]);
    assert_eq!(watched.status.code(), Some(3), "a cancelled task exits 3");

    let nobody = client(dir.path(), &dir.path().join("empty"), &["tasks"])
        .output()
        .unwrap();
    assert_eq!(nobody.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("berth login"));
    assert!(terminate(&mut server).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_github_through_the_device_flow() {
    use berth_testkit::github_oauth::{FakeGitHubOAuth, CLIENT_ID, CLIENT_SECRET};
    use tokio::io::AsyncBufReadExt;

    let github = FakeGitHubOAuth::start().await;
    github.add_user(77, "octo", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 bytes of 0x01
    let mut server = berth(dir.path());
    server
        .args([
            "server",
            "--no-runner",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "state",
        ])
        .env("BERTH_GITHUB_CLIENT_ID", CLIENT_ID)
        .env("BERTH_GITHUB_CLIENT_SECRET", CLIENT_SECRET)
        .env("BERTH_GITHUB_WEB_URL", &github.url)
        .env("BERTH_GITHUB_API_URL", &github.url)
        .env("BERTH_ENCRYPTION_KEY", key);
    let (mut server, url, _) = start_server(server);

    let mut login = tokio::process::Command::from(client(
        dir.path(),
        &config,
        &["login", "--server", &url, "--github"],
    ))
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = tokio::io::BufReader::new(login.stderr.take().unwrap()).lines();
    let code = loop {
        let line = lines.next_line().await.unwrap().expect("the code is shown");
        if let Some(rest) = line.strip_prefix("Open ") {
            break rest.rsplit(' ').next().unwrap().to_string();
        }
    };
    github.approve_device(&code, 77);
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert!(login.wait().await.unwrap().success());

    let me = client(dir.path(), &config, &["tasks", "--json"])
        .output()
        .unwrap();
    assert!(
        me.status.success(),
        "{}",
        String::from_utf8_lossy(&me.stderr)
    );
    let saved = std::fs::read_to_string(config.join("berth/login.toml")).unwrap();
    assert!(
        saved.contains("berth_"),
        "a Berth token, not GitHub's, is saved"
    );
    for github_token in github.issued_tokens() {
        assert!(
            !saved.contains(&github_token),
            "GitHub's token never reaches the client"
        );
    }
    assert!(terminate(&mut server).success());
}

/// A person who mistypes the server's address, or whose server is down, is told which.
#[test]
fn a_wrong_or_unreachable_server_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let closed = berth_testkit::RefusedPort::new();
    let port = closed.addr().port();
    let cases = [
        (
            format!("127.0.0.1:{port}"),
            "must start with http:// or https://",
        ),
        (
            format!("http://127.0.0.1:{port}"),
            "cannot reach the Berth server",
        ),
    ];
    for (server, expected) in cases {
        for args in [
            &["tasks"][..],
            &["show", "01a2346c-dcec-716c-ad87-323801c03bd9"],
        ] {
            let output = client(dir.path(), &dir.path().join("none"), args)
                .env("BERTH_SERVER", &server)
                .env("BERTH_TOKEN", "berth_x")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?} {server}: {stderr}");
            assert!(stderr.contains(expected), "{args:?} {server}: {stderr}");
        }
    }
    let login = client(
        dir.path(),
        &dir.path().join("none"),
        &["login", "--server", "localhost:7700", "--token", "x"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&login.stderr);
    assert!(stderr.contains("http://localhost:7700"), "{stderr}");
}
