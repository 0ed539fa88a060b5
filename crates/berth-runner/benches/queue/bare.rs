//! The bare-SQL baseline: the same queue as plain statements on a minimal table. Moved here
//! unchanged from `benches/queue.rs`; keep it as it is, so figures stay comparable.

use async_trait::async_trait;
use tokio::sync::watch;

use crate::Queue;

/// The same queue as bare statements on a minimal table, woken by an in-process signal.
pub struct Bare {
    pool: BarePool,
    signal: watch::Sender<u64>,
}

enum BarePool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

const BARE_CLAIM: &str = "UPDATE bare SET status = 'running', lease_owner = $1, \
     lease_expires_at = $2, attempt = attempt + 1, seq = seq + 1 \
     WHERE id = (SELECT id FROM bare WHERE status = 'queued' ORDER BY id LIMIT 1{lock}) \
     RETURNING id, n, attempt";
const BARE_INSERT: &str = "INSERT INTO bare (status, n) VALUES ('queued', $1)";
const BARE_COMPLETE: &str = "UPDATE bare SET status = 'succeeded', lease_owner = NULL, \
     lease_expires_at = NULL, seq = seq + 1 WHERE id = $1 AND attempt = $2";

impl Bare {
    pub async fn sqlite(url: &str) -> Self {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        use std::str::FromStr;
        // The same settings as Berth's writer: WAL, synchronous NORMAL, one connection.
        let options = SqliteConnectOptions::from_str(url)
            .unwrap()
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let id = "id INTEGER PRIMARY KEY AUTOINCREMENT";
        Bare::with_table(BarePool::Sqlite(pool), id).await
    }

    pub async fn postgres(url: &str) -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await
            .unwrap();
        Bare::with_table(BarePool::Postgres(pool), "id BIGSERIAL PRIMARY KEY").await
    }

    async fn with_table(pool: BarePool, id: &str) -> Self {
        let bare = Bare {
            pool,
            signal: watch::channel(0).0,
        };
        bare.execute(&format!(
            "CREATE TABLE bare ({id}, status TEXT NOT NULL, n BIGINT NOT NULL, \
             lease_owner TEXT, lease_expires_at BIGINT, attempt BIGINT NOT NULL DEFAULT 0, \
             seq BIGINT NOT NULL DEFAULT 0)"
        ))
        .await;
        bare.execute("CREATE INDEX bare_queued ON bare (status, id)")
            .await;
        bare
    }

    async fn execute(&self, sql: &str) {
        match &self.pool {
            BarePool::Sqlite(pool) => {
                sqlx::query(sql).execute(pool).await.unwrap();
            }
            BarePool::Postgres(pool) => {
                sqlx::query(sql).execute(pool).await.unwrap();
            }
        }
    }
}

#[async_trait]
impl Queue for Bare {
    type Claimed = (i64, i64);

    async fn enqueue(&self, n: usize) {
        let n = n as i64;
        match &self.pool {
            BarePool::Sqlite(pool) => {
                sqlx::query(BARE_INSERT)
                    .bind(n)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            BarePool::Postgres(pool) => {
                sqlx::query(BARE_INSERT)
                    .bind(n)
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
        self.signal.send_modify(|version| *version += 1);
    }

    async fn claim(&self, worker: usize) -> Option<(usize, (i64, i64))> {
        let node = format!("bench{worker}");
        let row: Option<(i64, i64, i64)> = match &self.pool {
            BarePool::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                let row = sqlx::query_as(&BARE_CLAIM.replace("{lock}", ""))
                    .bind(node)
                    .bind(i64::MAX)
                    .fetch_optional(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                row
            }
            BarePool::Postgres(pool) => {
                sqlx::query_as(&BARE_CLAIM.replace("{lock}", " FOR UPDATE SKIP LOCKED"))
                    .bind(node)
                    .bind(i64::MAX)
                    .fetch_optional(pool)
                    .await
                    .unwrap()
            }
        };
        row.map(|(id, n, attempt)| (n as usize, (id, attempt)))
    }

    async fn complete(&self, (id, attempt): (i64, i64)) {
        let affected = match &self.pool {
            BarePool::Sqlite(pool) => {
                let done = sqlx::query(BARE_COMPLETE).bind(id).bind(attempt);
                done.execute(pool).await.unwrap().rows_affected()
            }
            BarePool::Postgres(pool) => {
                let done = sqlx::query(BARE_COMPLETE).bind(id).bind(attempt);
                done.execute(pool).await.unwrap().rows_affected()
            }
        };
        assert_eq!(affected, 1);
    }

    fn work_signal(&self) -> watch::Receiver<u64> {
        self.signal.subscribe()
    }

    async fn close(&self) {
        match &self.pool {
            BarePool::Sqlite(pool) => pool.close().await,
            BarePool::Postgres(pool) => pool.close().await,
        }
    }
}
