//! Day-2 operations on the real binary: `berth backup` copies the SQLite database while the
//! server runs and the copy serves again once restored; a database a newer Berth migrated is
//! refused with a message that says what to do.

mod common;

use std::process::Command;

use berth_client::Client;
use berth_proto::{CreateTask, TaskStatus};
use common::{berth, start_server, terminate, token};

fn sqlite3(database: &std::path::Path, sql: &str) -> String {
    let output = Command::new("sqlite3")
        .arg(database)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn api_server(dir: &std::path::Path, data_dir: &str) -> Command {
    let mut server = berth(dir);
    server.args([
        "server",
        "--no-runner",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir,
    ]);
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path());
    let (mut server, url, _) = start_server(api_server(dir.path(), "state"));
    let client = Client::new(&url, Some(token.clone())).unwrap();
    let mut made = Vec::new();
    for prompt in ["first", "second"] {
        let request = CreateTask::new("https://github.com/octo/repo", prompt);
        made.push(client.create_task(&request, None).await.unwrap().0.id);
    }

    let backup = |to: &str| {
        berth(dir.path())
            .args(["backup", to, "--data-dir", "state"])
            .output()
            .unwrap()
    };
    let taken = backup("copy.db");
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    assert!(String::from_utf8_lossy(&taken.stdout).contains("backed up"));
    let again = backup("copy.db");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    // The server went on serving while the copy was made.
    let request = CreateTask::new("https://github.com/octo/repo", "after the backup");
    client.create_task(&request, None).await.unwrap();
    assert!(terminate(&mut server).success());

    let copy = dir.path().join("copy.db");
    assert_eq!(sqlite3(&copy, "PRAGMA integrity_check;").trim(), "ok");
    // Restoring: the copy becomes berth.db of a data directory, and the server starts on it.
    std::fs::create_dir_all(dir.path().join("restored")).unwrap();
    std::fs::copy(&copy, dir.path().join("restored/berth.db")).unwrap();
    let (mut server, url, _) = start_server(api_server(dir.path(), "restored"));
    let client = Client::new(&url, Some(token)).unwrap();
    for id in made {
        assert_eq!(
            client.get_task(id).await.unwrap().status,
            TaskStatus::Queued
        );
    }
    let listed = client.list_tasks(&Default::default()).await.unwrap();
    assert_eq!(
        listed.tasks.len(),
        2,
        "the task made after the backup is not in it"
    );
    assert!(terminate(&mut server).success());
}

#[test]
fn a_database_from_a_newer_berth_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    token(dir.path());
    let database = dir.path().join("state/berth.db");
    sqlite3(
        &database,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, X'00', 0);",
    );
    let output = api_server(dir.path(), "state").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("migrated by a newer version of Berth"),
        "{stderr}"
    );
    assert!(stderr.contains("schema version 9999"), "{stderr}");
    assert!(stderr.contains("Run the newer berth binary"), "{stderr}");
    let untouched = sqlite3(&database, "SELECT MAX(version) FROM _sqlx_migrations;");
    assert_eq!(untouched.trim(), "9999");
}
