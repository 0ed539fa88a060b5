//! The one SQL implementation of the store, generic over its `Dialect`. Each statement is
//! written once, in the file of the role it serves; the few steps SQLite and PostgreSQL take
//! differently (opening, the clock, row locks, NOTIFY, the claim) are the dialect's.

mod accounts;
mod environments;
mod events;
mod github;
mod outbox;
pub(crate) mod postgres;
mod push;
mod queue;
pub(crate) mod sqlite;
mod tasks;
mod tokens;
mod transcript;
mod webhooks;

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use berth_proto::Task;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type};

use crate::signal::{EventNotice, Signals, TextDelta};
use crate::{Accounts, Backend, ClaimLimits, Events, Queue, Result, Store};
use crate::{
    Environments, GithubTasks, Outbox, PushSubscriptions, Tasks, Tokens, Transcript, Webhooks,
};

/// What differs between the two databases; everything else is the same SQL on both.
pub(crate) trait Dialect: Send + Sync + Sized + 'static {
    type Db: Database;
    const BACKEND: Backend;
    /// The database clock in milliseconds since the epoch: the only clock the store reads.
    const NOW: &'static str;
    /// The statement that begins a write transaction.
    const BEGIN_WRITE: &'static str;
    /// Ends a `SELECT` of rows the transaction goes on to change, so that no other writer
    /// changes them first.
    const FOR_UPDATE: &'static str;
    /// As `FOR_UPDATE`, passing over the rows another writer holds.
    const FOR_UPDATE_SKIP_LOCKED: &'static str;
    /// The function that builds a JSON object from key, value, … arguments.
    const JSON_OBJECT: &'static str;
    /// Whether a step may change its task and write its event in one statement, outside a
    /// transaction (`WITH changed AS (UPDATE …), event AS (INSERT …) SELECT …`): one round
    /// trip instead of four. PostgreSQL's; SQLite's `WITH` cannot hold an `UPDATE`.
    const ONE_STATEMENT_STEPS: bool;

    /// How many rows a statement changed.
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;
    /// Tells other nodes' stream subscribers, once the transaction commits, about `notice`:
    /// a change to an account. (Task events and newly queued tasks are announced by the
    /// rows themselves: PostgreSQL's triggers, migration 0019.)
    fn notify_account(
        conn: &mut Conn<Self>,
        notice: EventNotice,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Hands text the model is writing to this node's streams, and other nodes'.
    fn publish_text(
        pool: &Pool<Self::Db>,
        signals: &Signals,
        delta: TextDelta,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Makes GitHub sign-ins take turns until the transaction ends.
    fn lock_sign_ins(conn: &mut Conn<Self>) -> impl Future<Output = Result<()>> + Send;
    /// Moves the next task the limits allow to `running`, leased to the node, inside the
    /// caller's write transaction (see `Queue::claim_next_task`), and takes the sequence
    /// number of its `running` event: the task's `last_event_seq` is that event's.
    fn claim(
        conn: &mut Conn<Self>,
        limits: &ClaimLimits,
    ) -> impl Future<Output = Result<Option<Task>>> + Send;
    /// The claim and its `running` event as one statement, outside any transaction, when
    /// that can decide it (see `ONE_STATEMENT_STEPS`); otherwise the caller claims in a
    /// transaction.
    fn claim_at_once(
        pool: &Pool<Self::Db>,
        limits: &ClaimLimits,
    ) -> impl Future<Output = Result<AtOnce<Option<Task>>>> + Send;
    /// Stops what the dialect runs beside its pools.
    fn stop(&self);
}

/// What a step tried as one statement came to.
pub(crate) enum AtOnce<T> {
    Done(T),
    /// Left to the step's transaction: someone hears of the task's news (the outbox is
    /// written in the same transaction), or a case the one statement does not decide.
    InTransaction,
}

// `D: Dialect` implies nothing about other types (that `Uuid` binds on `D::Db`, say), so each
// impl block below states the bounds its own statements need, in the short words that follow.

/// A connection of the dialect's database, alone or inside a transaction.
pub(crate) type Conn<D> = <<D as Dialect>::Db as Database>::Connection;
pub(crate) type Row<D> = <<D as Dialect>::Db as Database>::Row;
pub(crate) type Args<'q, D> = <<D as Dialect>::Db as Database>::Arguments<'q>;

/// A Rust type that binds as a parameter and decodes from a column: one line of a
/// where-clause instead of three.
pub(crate) trait Column<Db: Database>:
    for<'q> Encode<'q, Db> + for<'r> Decode<'r, Db> + Type<Db>
{
}

impl<Db: Database, T> Column<Db> for T where
    T: for<'q> Encode<'q, Db> + for<'r> Decode<'r, Db> + Type<Db>
{
}

/// Statuses in which an attempt holds its task.
const ACTIVE: &str = "('running', 'cancelling')";

pub(crate) struct SqlStore<D: Dialect> {
    dialect: D,
    /// Where writes go: SQLite's one writer connection, or the PostgreSQL pool.
    writer: Pool<D::Db>,
    /// Where reads go: SQLite's read-only connections, or the same PostgreSQL pool.
    readers: Pool<D::Db>,
    signals: Arc<Signals>,
    installation: String,
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    String: Column<D::Db>,
    usize: sqlx::ColumnIndex<Row<D>>,
{
    /// The store over its pools, once the database is migrated.
    async fn new(
        dialect: D,
        writer: Pool<D::Db>,
        readers: Pool<D::Db>,
        signals: Arc<Signals>,
    ) -> Result<Self> {
        let installation = sqlx::query_scalar("SELECT id FROM installation")
            .fetch_one(&writer)
            .await?;
        Ok(Self {
            dialect,
            writer,
            readers,
            signals,
            installation,
        })
    }
}

impl<D: Dialect> SqlStore<D> {
    async fn write(&self) -> Result<Transaction<'static, D::Db>> {
        Ok(self.writer.begin_with(D::BEGIN_WRITE).await?)
    }

    /// Tells this process's stream subscribers about an event, once its transaction committed.
    fn notify_subscribers(&self, notice: Option<EventNotice>) {
        if let Some(notice) = notice {
            self.signals.event_appended(notice);
        }
    }
}

#[async_trait]
impl<D: Dialect> Store for SqlStore<D>
where
    Self: Tasks
        + Events
        + Queue
        + Transcript
        + Tokens
        + Accounts
        + Outbox
        + GithubTasks
        + Webhooks
        + PushSubscriptions
        + Environments,
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
{
    fn backend(&self) -> Backend {
        D::BACKEND
    }

    fn installation_id(&self) -> &str {
        &self.installation
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn close(&self) {
        self.dialect.stop();
        self.readers.close().await;
        self.writer.close().await;
    }

    fn work_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signals.work()
    }

    fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<EventNotice> {
        self.signals.events()
    }

    async fn publish_text_delta(&self, delta: TextDelta) -> Result<()> {
        D::publish_text(&self.writer, &self.signals, delta).await
    }

    fn subscribe_text_deltas(&self) -> tokio::sync::broadcast::Receiver<Arc<TextDelta>> {
        self.signals.text_deltas()
    }
}
