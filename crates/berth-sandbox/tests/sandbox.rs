//! The Docker sandbox on the real Docker engine with the real default image: what only it
//! has (its networks are in tests/network.rs). What every backend promises is in tests/contract, which tests/contract_docker.rs runs
//! here. Without an engine the tests fail on CI (CI is set) and are skipped with a message
//! elsewhere.

mod engine;
mod sandboxes;

use engine::engine;
use sandboxes::{run, sandbox_with, spec, stdout_of, Guard};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_sandbox::{
    DockerSandbox, ExecRequest, Limits, Sandbox, SandboxError, SandboxSpec, Stream,
};

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// Commits everything in `dir` as the repository's base commit.
fn commit_all(dir: &Path) {
    git(dir, &["add", "-A"]);
    let who = ["-c", "user.name=t", "-c", "user.email=t@t"];
    git(dir, &[&who[..], &["commit", "-qm", "base"]].concat());
}

fn head_of(dir: &Path) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn copy_in_exec_and_diff_round_trip() {
    let Some(docker) = engine().await else { return };
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("edit.txt"), "one\ntwo\n").unwrap();
    std::fs::write(dir.join("gone.txt"), "delete me\n").unwrap();
    std::fs::write(
        dir.join("old-name.txt"),
        "a file that moves\nwith enough lines\nto be a rename\n",
    )
    .unwrap();
    std::fs::write(dir.join("blob.bin"), [0u8, 159, 146, 150, 255, 0, 1]).unwrap();
    commit_all(dir);

    let sandbox = sandbox_with(&docker, Limits::default()).await;
    sandbox.0.copy_in(dir, 1 << 30).await.unwrap();
    let owner = stdout_of(&sandbox, "stat -c %u edit.txt").await;
    assert_eq!(owner.trim(), "1000", "files belong to the sandbox user");
    let script = "printf 'one\\nTWO\\n' > edit.txt && rm gone.txt && mv old-name.txt new-name.txt \
                  && printf 'new\\n' > added.txt && printf '\\x00\\x01\\x02binary\\xff' > added.bin \
                  && printf '\\xff\\x00' >> blob.bin";
    stdout_of(&sandbox, script).await;
    let diff = sandbox.0.diff(&head_of(dir)).await.unwrap();
    let text = String::from_utf8_lossy(&diff);
    assert!(text.contains("new file mode"), "{text}");
    assert!(text.contains("deleted file mode"), "{text}");
    assert!(
        text.contains("rename from old-name.txt") && text.contains("rename to new-name.txt"),
        "{text}"
    );
    assert!(text.contains("GIT binary patch"), "{text}");

    // The diff applied to the original gives exactly the container's files.
    std::fs::write(dir.join("change.diff"), &diff).unwrap();
    git(dir, &["apply", "--binary", "change.diff"]);
    assert_eq!(
        std::fs::read(dir.join("added.bin")).unwrap(),
        b"\x00\x01\x02binary\xff"
    );
    assert_eq!(
        std::fs::read(dir.join("blob.bin")).unwrap(),
        [0u8, 159, 146, 150, 255, 0, 1, 255, 0]
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("edit.txt")).unwrap(),
        "one\nTWO\n"
    );
    assert!(!dir.join("gone.txt").exists() && dir.join("new-name.txt").exists());
    assert_eq!(
        sandbox.0.read_file("/workspace/added.bin").await.unwrap(),
        b"\x00\x01\x02binary\xff"
    );
}

#[tokio::test]
async fn output_streams_in_order() {
    let Some(docker) = engine().await else { return };
    let sandbox = sandbox_with(&docker, Limits::default()).await;
    let mut chunks = Vec::new();
    let request =
        ExecRequest::new("echo out1; sleep 0.3; echo err1 >&2; sleep 0.3; echo out2; exit 3");
    let result = sandbox
        .0
        .exec(&request, &mut |stream, bytes| {
            chunks.push((stream, String::from_utf8_lossy(bytes).to_string()))
        })
        .await
        .unwrap();
    assert_eq!(result.exit_code, Some(3));
    let expected = [
        (Stream::Stdout, "out1\n"),
        (Stream::Stderr, "err1\n"),
        (Stream::Stdout, "out2\n"),
    ];
    let got: Vec<(Stream, &str)> = chunks.iter().map(|(s, t)| (*s, t.as_str())).collect();
    assert_eq!(got, expected);
    assert_eq!(result.stdout, b"out1\nout2\n");
}

#[tokio::test]
async fn a_fork_bomb_is_contained_by_the_process_limit() {
    let Some(docker) = engine().await else { return };
    let limits = Limits {
        pids: 64,
        ..Limits::default()
    };
    let sandbox = sandbox_with(&docker, limits).await;
    let max = stdout_of(
        &sandbox,
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
    )
    .await;
    assert_eq!(max.trim(), "64");
    let bomb = ExecRequest {
        timeout: Duration::from_secs(5),
        ..ExecRequest::new("bomb() { bomb | bomb & }; bomb; sleep 60")
    };
    let result = sandbox.0.exec(&bomb, &mut |_, _| {}).await.unwrap();
    assert!(result.timed_out || result.exit_code.is_some());
    // The host answers, and once the bomb is killed the container works again.
    assert!(Command::new("true").status().unwrap().success());
    let mut alive = false;
    // Given a while: the last of the bomb's processes go as the machine gets to them.
    for _ in 0..60 {
        let again = sandbox
            .0
            .exec(&ExecRequest::new("echo alive"), &mut |_, _| {})
            .await;
        if again.is_ok_and(|r| r.stdout == b"alive\n") {
            alive = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(alive, "the container recovers after the bomb");
    let max = stdout_of(
        &sandbox,
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
    )
    .await;
    assert_eq!(max.trim(), "64", "the process limit is back where it was");
}

#[tokio::test]
async fn runs_as_non_root_with_no_capabilities_and_nothing_mounted() {
    let Some(docker) = engine().await else { return };
    let sandbox = sandbox_with(&docker, Limits::default()).await;
    let status = stdout_of(
        &sandbox,
        "grep -E '^(Uid|Gid|CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status",
    )
    .await;
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(field("Uid:"), "1000");
    assert_eq!(field("Gid:"), "1000");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapPrm:"), "0000000000000000");
    assert_eq!(field("CapBnd:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    let socket = run(
        &sandbox,
        "test -e /var/run/docker.sock || test -e /run/docker.sock",
    )
    .await;
    assert_ne!(socket.exit_code, Some(0), "no Docker socket inside");
    let inspected = docker
        .inspect_container(
            sandbox.0.id(),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    // One mount: the workspace's own volume, made for this container; no host path.
    let mounts = inspected.mounts.unwrap_or_default();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].destination.as_deref(), Some("/workspace"));
    assert_eq!(
        mounts[0].typ,
        Some(bollard::models::MountPointTypeEnum::VOLUME),
        "{mounts:?}"
    );
    let volume = mounts[0].name.clone().expect("the volume's name");
    let host = inspected.host_config.unwrap();
    assert_eq!(host.memory, Some(2 << 30));
    assert_eq!(
        host.memory_swap,
        Some(2 << 30),
        "no swap beyond the memory limit"
    );
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.pids_limit, Some(512));
    assert_eq!(host.privileged, Some(false));
    // The volume goes with the sandbox.
    sandbox.0.destroy().await.unwrap();
    let gone = docker.inspect_volume(&volume).await;
    assert!(
        gone.is_err(),
        "the workspace volume outlived its sandbox: {gone:?}"
    );
}

/// A workspace volume whose container was removed by hand, without it, is removed by the
/// next sweep's look for leftovers; another installation's is left alone.
#[tokio::test]
async fn a_workspace_volume_left_behind_goes_with_the_next_sweep() {
    let Some(docker) = engine().await else { return };
    let ours = format!("install-{}", uuid::Uuid::now_v7().simple());
    let theirs = format!("install-{}", uuid::Uuid::now_v7().simple());
    let mut volumes = Vec::new();
    for installation in [&ours, &theirs] {
        let spec = SandboxSpec {
            installation: installation.clone(),
            ..spec("node-a", Limits::default())
        };
        let sandbox = DockerSandbox::create(&docker, &spec).await.unwrap();
        let inspected = docker
            .inspect_container(
                sandbox.id(),
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .unwrap();
        let mounts = inspected.mounts.unwrap_or_default();
        volumes.push(mounts[0].name.clone().expect("a workspace volume"));
        let removed = Command::new("docker")
            .args(["rm", "-f", sandbox.id()])
            .output()
            .unwrap();
        assert!(removed.status.success());
    }
    let sandboxes = berth_sandbox::DockerSandboxes::new(docker.clone());
    berth_sandbox::Sandboxes::remove_leftovers(&sandboxes, &ours)
        .await
        .unwrap();
    let ours_left = docker.inspect_volume(&volumes[0]).await;
    let theirs_left = docker.inspect_volume(&volumes[1]).await;
    let _ = docker
        .remove_volume(
            &volumes[1],
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await;
    assert!(ours_left.is_err(), "our leftover volume stayed");
    assert!(
        theirs_left.is_ok(),
        "another installation's volume was removed"
    );
}

/// A sweep finds an installation's task containers by their labels, whatever node made them,
/// and never another installation's.
#[tokio::test]
async fn task_containers_are_found_by_installation_and_removed() {
    let Some(docker) = engine().await else { return };
    let ours = format!("install-{}", uuid::Uuid::now_v7().simple());
    let made = |installation: &str, node: &str| SandboxSpec {
        installation: installation.to_string(),
        ..spec(node, Limits::default())
    };
    let first_spec = made(&ours, "node-a");
    let first = Guard(DockerSandbox::create(&docker, &first_spec).await.unwrap());
    let second = Guard(
        DockerSandbox::create(&docker, &made(&ours, "node-b"))
            .await
            .unwrap(),
    );
    let theirs = Guard(
        DockerSandbox::create(&docker, &made("another", "node-a"))
            .await
            .unwrap(),
    );

    let mut found = berth_sandbox::task_containers(&docker, &ours)
        .await
        .unwrap();
    found.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].id, first.0.id());
    assert_eq!(found[0].task_id, first_spec.task_id);
    assert_eq!(found[0].attempt, 1);
    assert_eq!(found[1].id, second.0.id());

    berth_sandbox::remove_container(&docker, first.0.id())
        .await
        .unwrap();
    berth_sandbox::remove_container(&docker, first.0.id())
        .await
        .expect("removing one that is gone is fine");
    let left = berth_sandbox::task_containers(&docker, &ours)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    let inspected = docker
        .inspect_container(
            theirs.0.id(),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await;
    assert!(
        inspected.is_ok(),
        "another installation's container is untouched"
    );
}

#[tokio::test]
async fn images_without_git_or_that_are_missing_are_refused() {
    let Some(docker) = engine().await else { return };
    berth_sandbox::check_image(&docker, &berth_sandbox::default_image())
        .await
        .expect("the default image is fine");
    let name = format!("berth-nogit-{}", uuid::Uuid::now_v7().simple());
    let image = format!("berth-test-nogit:{}", &name[12..24]);
    let made = Command::new("docker")
        .args([
            "run",
            "--user",
            "0",
            "--name",
            &name,
            &berth_sandbox::default_image(),
            "rm",
            "/usr/bin/git",
        ])
        .status()
        .unwrap();
    assert!(made.success());
    assert!(Command::new("docker")
        .args(["commit", &name, &image])
        .output()
        .unwrap()
        .status
        .success());
    let _ = Command::new("docker")
        .args(["rm", "-f", "-v", &name])
        .output();

    let refused = berth_sandbox::check_image(&docker, &image).await;
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    match refused {
        Err(SandboxError::ImageUnsuitable { reason, .. }) => {
            assert!(reason.contains("git"), "{reason}")
        }
        other => panic!("expected the image to be refused, got {other:?}"),
    }
    let missing = berth_sandbox::check_image(&docker, "berth-no-such-image:1").await;
    assert!(
        matches!(missing, Err(SandboxError::ImageMissing(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn output_over_the_bound_is_cut_head_and_tail_kept() {
    let Some(docker) = engine().await else { return };
    let sandbox = sandbox_with(&docker, Limits::default()).await;
    let request = ExecRequest {
        max_output: 1000,
        ..ExecRequest::new("echo START; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo END")
    };
    let mut streamed = 0usize;
    let result = sandbox
        .0
        .exec(&request, &mut |_, bytes| streamed += bytes.len())
        .await
        .unwrap();
    assert!(result.truncated);
    let text = String::from_utf8(result.stdout).unwrap();
    assert!(text.starts_with("START\n"));
    assert!(text.ends_with("END\n"));
    assert!(text.contains("bytes cut ...]"), "{}", &text[..100]);
    assert!(text.len() < 1100);
    assert_eq!(
        streamed,
        3_000_000 + 6 + 1 + 4,
        "every byte was streamed while only the bound was kept"
    );
}

#[tokio::test]
async fn engine_errors_are_reported_as_such() {
    let unreachable = berth_sandbox::connect_at("/nonexistent/docker.sock").await;
    assert!(
        matches!(unreachable, Err(SandboxError::EngineUnreachable(_))),
        "{unreachable:?}"
    );
    let Some(docker) = engine().await else { return };
    let mut missing = spec("berth-test", Limits::default());
    missing.image = "berth-no-such-image:1".into();
    let refused = DockerSandbox::create(&docker, &missing).await;
    assert!(matches!(refused, Err(SandboxError::ImageMissing(_))));
    let sandbox = sandbox_with(&docker, Limits::default()).await;
    sandbox.0.destroy().await.unwrap();
    let gone = sandbox
        .0
        .exec(&ExecRequest::new("true"), &mut |_, _| {})
        .await;
    assert!(matches!(gone, Err(SandboxError::ContainerGone)), "{gone:?}");
    sandbox
        .0
        .destroy()
        .await
        .expect("destroying twice is harmless");
}

#[tokio::test]
async fn put_file_writes_a_file_the_sandbox_user_owns() {
    let Some(docker) = engine().await else { return };
    let sandbox = sandbox_with(&docker, Limits::default()).await;
    let contents = "línea uno\n\0binary too\n".as_bytes();
    sandbox.0.put_file("/tmp/staged", contents).await.unwrap();
    assert_eq!(sandbox.0.read_file("/tmp/staged").await.unwrap(), contents);
    assert_eq!(
        stdout_of(&sandbox, "stat -c '%u %a' /tmp/staged").await,
        "1000 644\n"
    );
    // The user can replace it: it is theirs.
    stdout_of(&sandbox, "echo mine > /tmp/staged && rm /tmp/staged").await;
}
