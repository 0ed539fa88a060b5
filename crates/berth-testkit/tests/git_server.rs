//! The git server, driven by the real `git` CLI over HTTP: clone, fetch, push (a large one
//! too), and the token.

use std::path::Path;
use std::process::Output;

use base64::Engine;
use berth_testkit::GitServer;

const REPO: &str = "acme/widgets";

/// `git` in `dir` without the caller's configuration, identity or credential prompts.
fn command(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("git");
    command
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS");
    command
}

async fn git(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().await.expect("git runs")
}

async fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args).await;
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs a git command that must succeed; returns its trace of HTTP headers.
async fn traced(dir: &Path, args: &[&str]) -> String {
    let out = command(dir, args)
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .output()
        .await
        .expect("git runs");
    let trace = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "git {args:?}: {trace}");
    trace
}

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    format!("http.extraHeader=Authorization: Basic {encoded}")
}

#[tokio::test]
async fn repository_starts_with_one_commit_on_main() {
    let server = GitServer::start().await;
    let url = server.create_repo(REPO, &[("README.md", "# widgets\n"), ("src/a.txt", "a\n")]);
    assert_eq!(url, format!("{}/acme/widgets.git", server.url()));
    assert!(server.branch_head(REPO, "main").is_some());
    assert_eq!(server.branch_head(REPO, "feature"), None);
    assert_eq!(
        server.file_at(REPO, "main", "src/a.txt").as_deref(),
        Some("a\n")
    );
    assert_eq!(server.file_at(REPO, "main", "missing.txt"), None);
    assert_eq!(server.log(REPO, "main"), vec!["initial"]);

    let work = tempfile::tempdir().unwrap();
    git_ok(work.path(), &["clone", "-q", &url, "clone"]).await;
    let clone = work.path().join("clone");
    assert_eq!(git_ok(&clone, &["branch", "--show-current"]).await, "main");
    assert_eq!(
        git_ok(&clone, &["log", "-1", "--format=%an <%ae>"]).await,
        "Test <test@example.com>"
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("README.md")).unwrap(),
        "# widgets\n"
    );
}

#[tokio::test]
async fn clone_commit_push_and_fetch_anonymously() {
    let server = GitServer::start().await;
    let url = server.create_repo(REPO, &[("greeting.txt", "hello\n")]);
    let work = tempfile::tempdir().unwrap();
    git_ok(work.path(), &["clone", "-q", &url, "clone"]).await;
    let clone = work.path().join("clone");

    std::fs::write(clone.join("greeting.txt"), "hello berth\n").unwrap();
    git_ok(&clone, &["commit", "-qam", "Greet berth"]).await;
    assert_eq!(server.pushes(), 0);
    git_ok(&clone, &["push", "-q", "origin", "HEAD:refs/heads/feature"]).await;

    let local = git_ok(&clone, &["rev-parse", "HEAD"]).await;
    assert_eq!(server.branch_head(REPO, "feature"), Some(local));
    assert_eq!(
        server.file_at(REPO, "feature", "greeting.txt").as_deref(),
        Some("hello berth\n")
    );
    assert_eq!(server.log(REPO, "feature"), vec!["Greet berth", "initial"]);
    assert_eq!(server.pushes(), 1);
    assert!(server
        .requests()
        .iter()
        .any(|(method, path, _)| method == "POST" && path.ends_with("/git-receive-pack")));

    // A second clone fetches the pushed branch.
    git_ok(work.path(), &["clone", "-q", &url, "other"]).await;
    let other = work.path().join("other");
    git_ok(&other, &["fetch", "-q", "origin", "feature"]).await;
    assert_eq!(
        git_ok(&other, &["log", "-1", "--format=%s", "FETCH_HEAD"]).await,
        "Greet berth"
    );
}

#[tokio::test]
async fn refused_push_is_not_counted() {
    let server = GitServer::start().await;
    let url = server.create_repo(REPO, &[("a.txt", "a\n")]);
    let work = tempfile::tempdir().unwrap();
    git_ok(work.path(), &["clone", "-q", &url, "clone"]).await;
    let clone = work.path().join("clone");
    git_ok(&clone, &["commit", "-q", "--amend", "-m", "rewritten"]).await;

    let out = git(&clone, &["push", "-q", "origin", "HEAD:main"]).await;
    assert!(!out.status.success(), "a non-fast-forward push is refused");
    assert_eq!(server.pushes(), 0);
    assert_eq!(server.log(REPO, "main"), vec!["initial"]);
}

#[tokio::test]
async fn large_push_is_streamed_in_chunks() {
    let server = GitServer::start().await;
    let url = server.create_repo(REPO, &[("a.txt", "a\n")]);
    let work = tempfile::tempdir().unwrap();
    git_ok(work.path(), &["clone", "-q", &url, "clone"]).await;
    let clone = work.path().join("clone");

    // Random bytes do not compress: the pack outgrows http.postBuffer (1 MiB), so git sends
    // it with chunked transfer encoding.
    let blob: Vec<u8> = (0..2 * 1024 * 1024).map(|_| rand::random::<u8>()).collect();
    std::fs::write(clone.join("blob.bin"), &blob).unwrap();
    git_ok(&clone, &["add", "blob.bin"]).await;
    git_ok(&clone, &["commit", "-qm", "Add a blob"]).await;
    let trace = traced(&clone, &["push", "-q", "origin", "HEAD:refs/heads/big"]).await;
    assert!(trace.contains("Transfer-Encoding: chunked"), "{trace}");

    let local = git_ok(&clone, &["rev-parse", "HEAD"]).await;
    assert_eq!(server.branch_head(REPO, "big"), Some(local));
    assert_eq!(server.pushes(), 1);

    git_ok(work.path(), &["clone", "-q", "-b", "big", &url, "again"]).await;
    assert_eq!(
        std::fs::read(work.path().join("again/blob.bin")).unwrap(),
        blob
    );
}

#[tokio::test]
async fn fetch_with_many_local_commits_sends_gzip() {
    let server = GitServer::start().await;
    let url = server.create_repo(REPO, &[("a.txt", "a\n")]);
    let work = tempfile::tempdir().unwrap();
    git_ok(work.path(), &["clone", "-q", &url, "mine"]).await;
    git_ok(work.path(), &["clone", "-q", &url, "theirs"]).await;
    let (mine, theirs) = (work.path().join("mine"), work.path().join("theirs"));

    // Many commits the server lacks, newer than main (so offered first), make the
    // negotiation's "have" lines pass 1 KiB, the size from which git gzips the request body.
    let mut stream = String::new();
    for n in 1..=200 {
        let text = format!("local {n}\n");
        stream.push_str(&format!(
            "commit refs/heads/local\ncommitter Dev <dev@example.com> {} +0000\n\
             data 6\nlocal\n{}M 644 inline local.txt\ndata {}\n{text}\n",
            4_000_000_000u64 + n,
            if n == 1 { "from refs/heads/main\n" } else { "" },
            text.len(),
        ));
    }
    let path = work.path().join("stream");
    std::fs::write(&path, stream).unwrap();
    let status = command(&mine, &["fast-import", "--quiet"])
        .stdin(std::fs::File::open(&path).unwrap())
        .status()
        .await
        .unwrap();
    assert!(status.success());

    std::fs::write(theirs.join("a.txt"), "theirs\n").unwrap();
    git_ok(&theirs, &["commit", "-qam", "Theirs"]).await;
    git_ok(&theirs, &["push", "-q", "origin", "HEAD:refs/heads/theirs"]).await;

    let trace = traced(&mine, &["fetch", "-q", "origin", "theirs"]).await;
    assert!(trace.contains("Content-Encoding: gzip"), "{trace}");
    assert_eq!(
        git_ok(&mine, &["log", "-1", "--format=%s", "FETCH_HEAD"]).await,
        "Theirs"
    );
}

#[tokio::test]
async fn token_is_required_once_set() {
    let server = GitServer::start().await;
    let url = server.create_repo(REPO, &[("a.txt", "a\n")]);
    server.require_token("s3cret");
    let work = tempfile::tempdir().unwrap();

    let out = git(work.path(), &["clone", "-q", &url, "anonymous"]).await;
    assert!(!out.status.success(), "a clone without the token fails");
    let wrong = basic("x-access-token", "wrong");
    let out = git(work.path(), &["-c", &wrong, "clone", "-q", &url, "wrong"]).await;
    assert!(!out.status.success(), "a clone with a wrong token fails");
    assert!(server
        .requests()
        .iter()
        .all(|(method, _, _)| method == "GET"));

    let right = basic("x-access-token", "s3cret");
    git_ok(work.path(), &["-c", &right, "clone", "-q", &url, "clone"]).await;
    let clone = work.path().join("clone");
    std::fs::write(clone.join("a.txt"), "b\n").unwrap();
    git_ok(&clone, &["commit", "-qam", "Change a"]).await;
    let out = git(&clone, &["push", "-q", "origin", "HEAD:refs/heads/feature"]).await;
    assert!(!out.status.success(), "a push without the token fails");
    git_ok(
        &clone,
        &[
            "-c",
            &right,
            "push",
            "-q",
            "origin",
            "HEAD:refs/heads/feature",
        ],
    )
    .await;
    assert_eq!(server.log(REPO, "feature"), vec!["Change a", "initial"]);
    assert_eq!(server.pushes(), 1);

    // The token as the user name works too.
    let as_user = basic("s3cret", "");
    git_ok(work.path(), &["-c", &as_user, "clone", "-q", &url, "user"]).await;
}
