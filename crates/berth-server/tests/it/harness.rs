//! Starts the real server on port 0 over a fresh database from the test kit: a SQLite file
//! in a temporary directory, or a new database on the PostgreSQL server of the test run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use berth_client::Client;
use berth_guard::AllowedHost;
use berth_server::{AppState, SandboxCeiling, Settings, Shared};
use berth_store::Store;
pub use berth_testkit::db::{Backend, TestDb};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A place to keep a test's data, and how the server over it is set up: survives a server
/// restart within the test.
pub struct TestDatabase {
    pub settings: Settings,
    /// What the binary would hand the API from the settings it shares with the runner.
    pub shared: Shared,
    listen: SocketAddr,
    db: TestDb,
}

impl TestDatabase {
    pub async fn new(backend: &Backend) -> Self {
        let db = TestDb::new(backend).await;
        let shared = Shared {
            git_allowed_hosts: ["github.com", "http://127.0.0.1:9"]
                .into_iter()
                .map(|host| AllowedHost::parse(host).unwrap())
                .collect(),
            github_web_url: "https://github.com".into(),
            github_api_url: "https://api.github.com".into(),
            server_github_token: false,
            keyring: None,
            sandbox_ceiling: SandboxCeiling {
                memory_mb: 2048,
                cpus: 1.0,
                pids: 512,
            },
            github_app: None,
        };
        Self {
            settings: Settings::default(),
            shared,
            listen: "127.0.0.1:0".parse().unwrap(),
            db,
        }
    }

    /// The same database, for a server that must listen at `address` (a restart in place).
    pub fn listening_at(mut self, address: SocketAddr) -> Self {
        self.listen = address;
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.db.data_dir()
    }

    /// Opens the store, as `berth` does for the database it is configured with.
    pub async fn open_store(&self) -> Arc<dyn Store> {
        match &self.db.url {
            Some(url) => berth_store::open_url(url).await,
            None => berth_store::open_sqlite(&self.db.data_dir()).await,
        }
        .expect("store opens")
    }
}

/// A running server.
pub struct TestServer {
    pub base_url: String,
    pub store: Arc<dyn Store>,
    /// The server's stream hubs, to count what they read.
    pub streams: Arc<berth_server::Streams>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(db: &TestDatabase) -> Self {
        let store = db.open_store().await;
        let listener = TcpListener::bind(db.listen).await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(store.clone(), db.settings.clone(), db.shared.clone());
        let streams = state.streams.clone();
        let (shutdown, signal) = oneshot::channel::<()>();
        let handle = tokio::spawn(berth_server::serve(listener, state, async {
            let _ = signal.await;
        }));
        Self {
            base_url,
            store,
            streams,
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

    /// The first user of an empty database, an admin as GitHub sign-in makes one, and a
    /// client with a token of theirs. Call it before any other user is made.
    pub async fn admin(&self, login: &str) -> Client {
        let identity = berth_store::GithubIdentity {
            github_id: 1,
            login: login.into(),
        };
        let account = self
            .store
            .upsert_github_user(&identity, true)
            .await
            .unwrap();
        assert!(account.is_admin, "admin() is called on an empty database");
        let created = berth_server::auth::issue_token(self.store.as_ref(), account.id, "test")
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

pub(crate) use berth_testkit::on_both_backends;
