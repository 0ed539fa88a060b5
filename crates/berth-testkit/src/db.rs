//! Throwaway databases, one per test: a SQLite directory that disappears with the test, or a
//! new database on the PostgreSQL server that `BERTH_TEST_DATABASE_URL` names (`scripts/test`
//! starts one). On CI a missing PostgreSQL server fails the test; elsewhere its half is
//! skipped with a message saying what is missing.

use std::path::PathBuf;

/// Which database a test runs on.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// The URL of a server on which the test may create databases.
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend, or `None` (with a message) when no server is configured.
    /// On CI a missing server is a failure, never a silent skip.
    pub fn postgres() -> Option<Backend> {
        match std::env::var("BERTH_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ if std::env::var_os("CI").is_some() => {
                panic!("BERTH_TEST_DATABASE_URL is not set; run the tests with scripts/test")
            }
            _ => {
                eprintln!(
                    "skipped: BERTH_TEST_DATABASE_URL is not set (scripts/test starts PostgreSQL)"
                );
                None
            }
        }
    }
}

/// A fresh database. Open it as often as a test needs (a second "node", a restart): the
/// data stays until the `TestDb` is dropped (SQLite) or for good (PostgreSQL, a throwaway server).
pub struct TestDb {
    /// `postgres://…` of the test's own database; `None` on SQLite.
    pub url: Option<String>,
    dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(backend: &Backend) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(admin_url) => Some(create_database(admin_url).await),
        };
        Self { url, dir }
    }

    /// The data directory: the SQLite database lives here, and so does other local state
    /// (checkouts, the node id) on either backend.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A scratch directory of the test's own, next to the data directory.
    pub fn scratch(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// Creates an empty database for one test and returns its URL.
pub async fn create_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("berth_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("the PostgreSQL server of BERTH_TEST_DATABASE_URL answers");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("the test may create databases");
    let mut url = url::Url::parse(admin_url).expect("BERTH_TEST_DATABASE_URL is a URL");
    url.set_path(&name);
    url.to_string()
}

/// Runs each named test once on SQLite and once on PostgreSQL. Each test is an
/// `async fn(Backend)` in the module that invokes the macro.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::db::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::db::Backend::postgres() {
                        super::$name(backend).await
                    }
                }
            )*
        }
    };
}
