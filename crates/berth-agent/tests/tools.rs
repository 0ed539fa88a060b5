//! The agent's tools in a real sandbox container: what the model gets back for each call,
//! including the calls that must fail.

use std::process::Command;
use std::time::Duration;

use berth_agent::tools::{ToolOutput, Toolbox};
use berth_sandbox::{DockerSandbox, Limits, Sandbox, SandboxSpec};
use serde_json::{json, Value};

/// A sandbox with a small repository in /workspace; removed when dropped.
struct Guard(DockerSandbox);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", self.0.id()])
            .output();
    }
}

async fn sandbox() -> Option<Guard> {
    let docker = match berth_sandbox::connect().await {
        Ok(docker) => docker,
        Err(err) if std::env::var_os("CI").is_some() => {
            panic!("the Docker engine is needed: {err}")
        }
        Err(err) => {
            eprintln!("skipped: no Docker engine ({err})");
            return None;
        }
    };
    berth_sandbox::ensure_default_image(&docker, &mut |line| eprintln!("{line}"))
        .await
        .expect("the image builds");
    let spec = SandboxSpec {
        installation: "berth-test".to_string(),
        task_id: format!("tools-{}", rand::random::<u32>()),
        attempt: 1,
        node_id: "berth-test".into(),
        image: berth_sandbox::default_image(),
        limits: Limits::default(),
    };
    let sandbox = Guard(DockerSandbox::create(&docker, &spec).await.unwrap());
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("a.txt"), "one\ntwo\nthree\ntwo\n").unwrap();
    std::fs::create_dir(repo.path().join("src")).unwrap();
    std::fs::write(repo.path().join("src/lib.rs"), "fn main() {}").unwrap();
    sandbox.0.copy_in(repo.path(), 1 << 30).await.unwrap();
    Some(sandbox)
}

async fn call(sandbox: &Guard, name: &str, input: Value) -> ToolOutput {
    let toolbox = Toolbox {
        sandbox: &sandbox.0,
        command_timeout: Duration::from_secs(3),
    };
    toolbox.run(name, &input, &mut |_, _| {}).await.unwrap()
}

async fn edit(sandbox: &Guard, input: Value) -> ToolOutput {
    call(sandbox, "str_replace_based_edit_tool", input).await
}

async fn file(sandbox: &Guard, path: &str) -> String {
    String::from_utf8(sandbox.0.read_file(path).await.unwrap()).unwrap()
}

#[tokio::test]
async fn the_editor_views_replaces_exactly_once_inserts_and_creates() {
    let Some(sandbox) = sandbox().await else {
        return;
    };
    let viewed = edit(
        &sandbox,
        json!({"command": "view", "path": "/workspace/a.txt", "view_range": [2, -1]}),
    )
    .await;
    assert_eq!(viewed.content, "     2\ttwo\n     3\tthree\n     4\ttwo\n");
    let listing = edit(&sandbox, json!({"command": "view", "path": "/workspace"})).await;
    assert!(
        listing.content.contains("./src/lib.rs") && listing.content.contains("./a.txt"),
        "{}",
        listing.content
    );

    let twice = edit(&sandbox, json!({"command": "str_replace", "path": "/workspace/a.txt", "old_str": "two", "new_str": "2"})).await;
    assert!(
        twice.is_error
            && twice.content.contains("appears 2 times")
            && twice.content.contains("lines 2, 4"),
        "{twice:?}"
    );
    let missing = edit(&sandbox, json!({"command": "str_replace", "path": "/workspace/a.txt", "old_str": "four", "new_str": "4"})).await;
    assert!(
        missing.is_error && missing.content.contains("does not appear verbatim"),
        "{missing:?}"
    );
    assert_eq!(
        file(&sandbox, "/workspace/a.txt").await,
        "one\ntwo\nthree\ntwo\n",
        "failed edits change nothing"
    );

    let once = edit(&sandbox, json!({"command": "str_replace", "path": "/workspace/a.txt", "old_str": "three\ntwo", "new_str": "3\n2"})).await;
    assert!(!once.is_error, "{once:?}");
    let inserted = edit(&sandbox, json!({"command": "insert", "path": "/workspace/a.txt", "insert_line": 0, "insert_text": "zero"})).await;
    assert!(!inserted.is_error, "{inserted:?}");
    // Older models send `new_str` for insert.
    let appended = edit(&sandbox, json!({"command": "insert", "path": "/workspace/src/lib.rs", "insert_line": 1, "new_str": "// end"})).await;
    assert!(!appended.is_error, "{appended:?}");
    assert_eq!(
        file(&sandbox, "/workspace/a.txt").await,
        "zero\none\ntwo\n3\n2\n"
    );
    assert_eq!(
        file(&sandbox, "/workspace/src/lib.rs").await,
        "fn main() {}\n// end\n"
    );

    let created = edit(
        &sandbox,
        json!({"command": "create", "path": "/workspace/new/dir/n.txt", "file_text": "héllo\n"}),
    )
    .await;
    assert!(!created.is_error, "{created:?}");
    assert_eq!(file(&sandbox, "/workspace/new/dir/n.txt").await, "héllo\n");
    let owner = call(
        &sandbox,
        "bash",
        json!({"command": "stat -c %u /workspace/new/dir/n.txt"}),
    )
    .await;
    assert_eq!(owner.content, "1000\n", "written as the sandbox user");

    let bad_range = edit(
        &sandbox,
        json!({"command": "view", "path": "/workspace/a.txt", "view_range": [9, 10]}),
    )
    .await;
    assert!(bad_range.is_error, "{bad_range:?}");
    let unknown = edit(
        &sandbox,
        json!({"command": "undo_edit", "path": "/workspace/a.txt"}),
    )
    .await;
    assert!(unknown.is_error);
}

#[tokio::test]
async fn the_editor_refuses_paths_that_lead_outside_the_workspace() {
    let Some(sandbox) = sandbox().await else {
        return;
    };
    call(
        &sandbox,
        "bash",
        json!({"command": "ln -s /etc /workspace/etc-link && ln -s /tmp/x /workspace/dangling"}),
    )
    .await;
    for (input, why) in [
        (
            json!({"command": "view", "path": "/etc/passwd"}),
            "outside /workspace",
        ),
        (
            json!({"command": "create", "path": "/workspace/../tmp/x", "file_text": "x"}),
            "outside /workspace",
        ),
        (
            json!({"command": "create", "path": "workspace/a.txt", "file_text": "x"}),
            "not an absolute path",
        ),
        (
            json!({"command": "view", "path": "/workspace/etc-link/passwd"}),
            "outside /workspace",
        ),
        (
            json!({"command": "create", "path": "/workspace/dangling", "file_text": "x"}),
            "outside /workspace",
        ),
    ] {
        let output = edit(&sandbox, input.clone()).await;
        assert!(
            output.is_error && output.content.contains(why),
            "{input}: {output:?}"
        );
    }
    let none = call(&sandbox, "bash", json!({"command": "ls /tmp/x 2>&1; true"})).await;
    assert!(
        none.content.contains("No such file"),
        "nothing was written: {none:?}"
    );
}

/// A path is data, never script: shell syntax in it runs nothing, and names a file literally.
#[tokio::test]
async fn shell_syntax_in_an_editor_path_runs_nothing() {
    let Some(sandbox) = sandbox().await else {
        return;
    };
    let hostile = [
        "/workspace/x$(touch /tmp/ran-1)",
        "/workspace/y`touch /tmp/ran-2`",
        "/workspace/z\"; touch /tmp/ran-3; \"",
        "/workspace/w'$(touch /tmp/ran-4)'",
    ];
    for path in hostile {
        let created = edit(
            &sandbox,
            json!({"command": "create", "path": path, "file_text": "data\n"}),
        )
        .await;
        assert!(!created.is_error, "{path}: {created:?}");
        assert_eq!(file(&sandbox, path).await, "data\n", "{path}");
        let missing = format!("{path}.missing");
        let viewed = edit(&sandbox, json!({"command": "view", "path": missing})).await;
        assert!(
            viewed.is_error && viewed.content.contains("does not exist"),
            "{viewed:?}"
        );
    }
    let ran = call(
        &sandbox,
        "bash",
        json!({"command": "ls /tmp/ran-* 2>&1; true"}),
    )
    .await;
    assert!(
        ran.content.contains("No such file"),
        "a command ran: {ran:?}"
    );
}

#[tokio::test]
async fn bash_keeps_the_directory_reports_exit_codes_and_stops_long_commands() {
    let Some(sandbox) = sandbox().await else {
        return;
    };
    assert_eq!(
        call(&sandbox, "bash", json!({"command": "cd src && pwd"}))
            .await
            .content,
        "/workspace/src\n"
    );
    assert_eq!(
        call(&sandbox, "bash", json!({"command": "pwd"}))
            .await
            .content,
        "/workspace/src\n"
    );
    let failed = call(
        &sandbox,
        "bash",
        json!({"command": "echo out; echo err >&2; exit 3"}),
    )
    .await;
    assert_eq!(failed.content, "out\nerr\n\n[exit code 3]");
    assert!(
        !failed.is_error,
        "a failing command is a result, not a tool error"
    );
    let restarted = call(&sandbox, "bash", json!({"restart": true})).await;
    assert!(!restarted.is_error);
    assert_eq!(
        call(&sandbox, "bash", json!({"command": "pwd"}))
            .await
            .content,
        "/workspace\n"
    );
    let slow = call(&sandbox, "bash", json!({"command": "sleep 30"})).await;
    assert!(
        slow.is_error && slow.content.contains("longer than 3 s"),
        "{slow:?}"
    );
    let empty = call(&sandbox, "bash", json!({})).await;
    assert!(empty.is_error);
    let unknown = call(&sandbox, "computer", json!({"action": "screenshot"})).await;
    assert!(unknown.is_error && unknown.content.contains("no tool named"));
    let broken = call(
        &sandbox,
        "bash",
        json!({"_invalid_json": "{\"command\": \"ls"}),
    )
    .await;
    assert!(broken.is_error);
}
