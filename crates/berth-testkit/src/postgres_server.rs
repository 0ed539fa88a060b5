//! A PostgreSQL server of a test's own, for what the shared server cannot show: settings such
//! as `ssl=on` with a certificate the test made. It runs from Debian's binaries in a temporary
//! directory and stops when dropped. Without the binaries the test skips with a message, and
//! fails on CI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server; `port` listens on 127.0.0.1 and the user `postgres` logs in without a
/// password.
pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl PostgresServer {
    /// Starts a server that offers TLS with this certificate chain and key (PEM), or returns
    /// `None` with a message when PostgreSQL is not installed (a failure under `CI=true`).
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Option<PostgresServer> {
        let bin = postgres_bin()?;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, cert_pem).expect("write the server certificate");
        std::fs::write(&key, key_pem).expect("write the server key");
        // PostgreSQL refuses a key that others can read, and refuses to run as root.
        set_mode(&key, 0o600);
        as_postgres_owner(dir.path());

        let data = dir.path().join("data");
        run(as_postgres(&bin.join("initdb"))
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-D"])
            .arg(&data));
        // The port is free when chosen, but another test may take it before the server binds
        // it: then the start fails, and another port is tried.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {dir} -c fsync=off -c ssl=on \
                 -c ssl_cert_file={cert} -c ssl_key_file={key}",
                dir = dir.path().display(),
                cert = cert.display(),
                key = key.display(),
            );
            let started = as_postgres(&bin.join("pg_ctl"))
                .args(["-w", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-o", &options, "start"])
                .output()
                .expect("run pg_ctl");
            if started.status.success() {
                return Some(PostgresServer { port, bin, dir });
            }
            let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
            failures.push(format!("port {port}: {log}"));
        }
        panic!("PostgreSQL did not start: {}", failures.join("\n"));
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
    }
}

/// The newest installed PostgreSQL's `bin` directory (Debian keeps one per major version).
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    // Major versions sort as numbers: 9 < 10.
    found.sort_by_key(|bin| {
        let version = bin.parent().and_then(Path::file_name);
        version.and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    if found.is_empty() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("PostgreSQL's binaries are missing: install Debian's postgresql package");
        }
        eprintln!("skipped: PostgreSQL's binaries are missing (apt-get install postgresql)");
    }
    found.pop()
}

fn as_postgres(program: &Path) -> Command {
    let root = run(Command::new("id").arg("-u")).trim() == "0";
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn as_postgres_owner(dir: &Path) {
    if run(Command::new("id").arg("-u")).trim() == "0" {
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir));
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// Runs a command to completion and returns its standard output, or panics with its error
/// output.
fn run(command: &mut Command) -> String {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
