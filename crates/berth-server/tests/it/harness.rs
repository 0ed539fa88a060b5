//! Starts the real server on port 0 over a fresh database: a SQLite file in a temporary
//! directory, or a new database on the PostgreSQL server named by `BERTH_TEST_DATABASE_URL`.

use std::path::PathBuf;
use std::sync::Arc;

use berth_client::Client;
use berth_server::{AppState, Config, Secret};
use berth_store::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

/// A place to keep a test's data: survives a server restart within the test.
pub struct TestDatabase {
    pub config: Config,
    _dir: tempfile::TempDir,
}

impl TestDatabase {
    pub async fn new(backend: &Backend) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            git_allowed_hosts: vec!["github.com".into(), "http://127.0.0.1:9".into()],
            ..Config::default()
        };
        if let Backend::Postgres(admin_url) = backend {
            config.database_url = Some(Secret::new(create_database(admin_url).await));
        }
        Self { config, _dir: dir }
    }

    /// The same database, for a server that must listen at `address` (a restart in place).
    pub fn listening_at(mut self, address: std::net::SocketAddr) -> Self {
        self.config.listen = address;
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }
}

/// Creates an empty database for one test and returns its URL.
async fn create_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("berth_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("PostgreSQL answers");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(admin_url).expect("BERTH_TEST_DATABASE_URL is a URL");
    url.set_path(&name);
    url.to_string()
}

/// A running server.
pub struct TestServer {
    pub base_url: String,
    pub store: Arc<dyn Store>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(db: &TestDatabase) -> Self {
        let store = berth_server::config::open_store(&db.config)
            .await
            .expect("store opens");
        let listener = TcpListener::bind(db.config.listen).await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(store.clone(), db.config.clone());
        let (shutdown, signal) = oneshot::channel::<()>();
        let handle = tokio::spawn(berth_server::serve(listener, state, async {
            let _ = signal.await;
        }));
        Self {
            base_url,
            store,
            shutdown: Some(shutdown),
            handle: Some(handle),
        }
    }

    /// A client without a token.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.base_url, None).unwrap()
    }

    /// Creates the user (if needed) and a token for it, and returns a client using it.
    pub async fn user(&self, name: &str) -> Client {
        let user = self.store.upsert_user(name).await.unwrap();
        let created = berth_server::auth::issue_token(self.store.as_ref(), user.id, "test")
            .await
            .unwrap();
        Client::new(&self.base_url, Some(created.token)).unwrap()
    }

    /// Claims the next queued task as a runner would (a long lease, no limits in the way)
    /// and returns the fence its writes carry.
    pub async fn claim(&self) -> berth_store::Fence {
        let limits = berth_store::ClaimLimits {
            node_id: "test".into(),
            lease_ms: 600_000,
            node_capacity: 100,
            per_user_limit: 100,
        };
        let claimed = self
            .store
            .claim_next_task(&limits)
            .await
            .unwrap()
            .expect("a queued task to claim");
        berth_store::Fence {
            task_id: claimed.id,
            attempt: claimed.attempt,
        }
    }

    /// Stops gracefully, as on SIGTERM, and closes the database.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
        self.store.close().await;
    }
}

/// Runs each named test once on SQLite and once on PostgreSQL. Each test is an
/// `async fn(Backend)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::harness::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = crate::harness::Backend::postgres() {
                        super::$name(backend).await
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;
