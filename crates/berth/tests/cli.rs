//! The `berth` binary itself: configuration layers, the first-start hint, `token create`
//! against the server's database, and a graceful stop on SIGTERM.

mod common;

use common::{berth, start_server, terminate, token};

#[tokio::test]
async fn token_create_then_serve_then_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = berth(dir.path());
    server.args(["server", "--listen", "127.0.0.1:0", "--data-dir", "state"]);
    let (mut child, url, before) = start_server(server);
    assert!(
        before
            .iter()
            .any(|line| line.contains("berth token create --user")),
        "an empty database prints how to get the first token: {before:?}"
    );

    let token = token(dir.path());
    assert!(token.starts_with("berth_"));
    assert!(
        dir.path().join("state/berth.db").exists(),
        "--data-dir holds the database"
    );

    let client = berth_client::Client::new(&url, Some(token)).unwrap();
    assert_eq!(client.me().await.unwrap().name, "alice");
    let status = terminate(&mut child);
    assert!(
        status.success(),
        "a SIGTERM stops the server cleanly: {status}"
    );
}

#[tokio::test]
async fn flags_beat_environment_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("berth.toml"),
        "listen = \"127.0.0.1:1\"\ndata_dir = \"from-file\"\n",
    )
    .unwrap();

    // The file names the data directory; the environment overrides its listen address.
    let mut server = berth(dir.path());
    server.args(["server"]).env("BERTH_LISTEN", "127.0.0.1:0");
    let (mut child, _, _) = start_server(server);
    let status = terminate(&mut child);
    assert!(status.success(), "{status}");
    assert!(dir.path().join("from-file/berth.db").exists());

    // A flag wins over the environment and the file.
    let mut server = berth(dir.path());
    server
        .args(["server", "--data-dir", "from-flag"])
        .env("BERTH_LISTEN", "127.0.0.1:0")
        .env("BERTH_DATA_DIR", "from-env");
    let (mut child, _, _) = start_server(server);
    assert!(terminate(&mut child).success());
    assert!(dir.path().join("from-flag/berth.db").exists());
    assert!(!dir.path().join("from-env").exists());
}

#[test]
fn invalid_configuration_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (&["server", "--listen", "nowhere"], &[], "listen"),
        (
            &["server", "--database-url", "mysql://x"],
            &[],
            "postgres://",
        ),
        (
            &["server"],
            &[("BERTH_GIT_ALLOWED_HOSTS", "github.com/evil")],
            "git_allowed_hosts",
        ),
        (
            &["server"],
            &[("BERTH_MAX_PROMPT_BYTES", "lots")],
            "max_prompt_bytes",
        ),
    ];
    for (args, env, expected) in cases {
        let output = berth(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} {env:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.to_lowercase().contains(expected),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn database_url_never_appears_in_output() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9: the connection fails, and the error must not echo the password.
    let output = berth(dir.path())
        .args(["token", "create", "--user", "x"])
        .env(
            "BERTH_DATABASE_URL",
            "postgres://berth:sup3r-s3cret@127.0.0.1:9/berth",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let all = [output.stdout, output.stderr].concat();
    let text = String::from_utf8_lossy(&all);
    assert!(
        !text.contains("sup3r-s3cret"),
        "the password leaked: {text}"
    );
    assert!(
        text.contains("database"),
        "the error says what failed: {text}"
    );
}
