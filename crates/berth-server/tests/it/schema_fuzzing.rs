//! The OpenAPI document against the real server, by a schema-driven fuzzer (schemathesis): every
//! answer the fuzzer gets must be one the document lists, with its status, content type,
//! headers and body, so that an answer added to a handler and not to the document fails here.
//! `scripts/test` installs the fuzzer (`scripts/install-schemathesis`) and names it in
//! `BERTH_SCHEMATHESIS`; under `CI=true` a missing fuzzer fails the test, elsewhere it skips.
//! How it runs (seed, examples, checks, operations treated apart) is in `schemathesis.toml`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use berth_testkit::github_oauth::FakeGitHubOAuth;

use crate::accounts::github_database;
use crate::harness::{Backend, TestServer};

const FUZZER: &str = "BERTH_SCHEMATHESIS";
/// How it runs: seed, examples, checks, and the operations it treats apart.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/schemathesis.toml");
/// Far above what the bounded run needs; a hung fuzzer fails instead of holding the suite.
const LIMIT: Duration = Duration::from_secs(10 * 60);

/// Operations that would end the fuzzer's own access if it called them with the ids it has
/// seen in other answers: revoking its own token, disabling its own user. The fuzzer carries
/// ids from answers to requests in every phase, so they get a run of their own, where no
/// other operation answers with an id and none runs statefully: their ids are made up and
/// answer 404, which checks their errors but never their success.
const SELF_DESTRUCTIVE: [&str; 2] = [
    "DELETE /v1/tokens/{id}",
    "POST /v1/admin/users/{id}/disable",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_answer_the_fuzzer_gets() {
    let Some(fuzzer) = fuzzer() else {
        return;
    };
    let fake = FakeGitHubOAuth::start().await;
    let mut db = github_database(&Backend::Sqlite, &fake).await;
    // A small burst that refills fast: the fuzzer's quick runs of task creations meet 429
    // (which is checked too), and the stateful phase still makes tasks to follow elsewhere.
    db.settings.rate_limit_task_burst = 10;
    db.settings.rate_limit_tasks_per_minute = 1200;
    let server = TestServer::start(&db).await;
    let admin = server.admin("fuzzer").await;

    let token = admin.token().unwrap();
    let started = Instant::now();
    let mut most = vec![];
    let mut rest = vec!["--phases", "examples,coverage,fuzzing"];
    for operation in SELF_DESTRUCTIVE {
        most.extend(["--exclude-name", operation]);
        rest.extend(["--include-name", operation]);
    }
    for operations in [most, rest] {
        let output = fuzz(&fuzzer, &server, token, &operations).await;
        assert!(output.status.success(), "{}", report(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprintln!("{}", stdout.find("SUMMARY").map_or("", |at| &stdout[at..]));
    }
    eprintln!("fuzzing took {:.0?}", started.elapsed());
    server.stop().await;
}

/// The fuzzer named in `BERTH_SCHEMATHESIS`; `None`, with a note, when there is none outside CI.
fn fuzzer() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(FUZZER) {
        return Some(path.into());
    }
    let message = format!(
        "{FUZZER} is not set: run scripts/test, or `export {FUZZER}=$(scripts/install-schemathesis)`"
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{message}");
    }
    eprintln!("skipped: {message}");
    None
}

/// Runs the fuzzer against the server's own `/openapi.json`, over the operations (and phases)
/// that `filter` chooses.
async fn fuzz(fuzzer: &Path, server: &TestServer, token: &str, filter: &[&str]) -> Output {
    // Its working directory, where it may leave files of its own.
    let workdir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(fuzzer);
    command
        .args(["--config-file", CONFIG, "run"])
        .arg(format!("{}/openapi.json", server.base_url))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(filter)
        .current_dir(workdir.path())
        .kill_on_drop(true);
    let output = tokio::time::timeout(LIMIT, command.output()).await;
    output
        .unwrap_or_else(|_| panic!("the fuzzer ran over {LIMIT:?}"))
        .expect("the fuzzer starts")
}

fn report(output: &Output) -> String {
    format!(
        "the fuzzer failed (exit {}): an answer the OpenAPI document does not list, or a \
         server error\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
