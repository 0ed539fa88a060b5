//! One reader per followed log in this process: a hub reads what is new once, when a notice
//! says so, and hands it to every subscriber of that log. A subscriber that falls behind the
//! hub's buffer, or joins after what the hub sent, reads the database itself until it has
//! caught up (`follow.rs`). Hubs live while someone follows them.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use berth_proto::TaskStatus;
use berth_store::{Store, StoreError};
use tokio::sync::{broadcast, Notify};
use tokio::task::AbortHandle;

use super::frame::Frame;

/// Most entries one read returns.
pub const PAGE: i64 = 500;
/// Looked again at this interval even with no notice: notices are hints, not the only path.
/// Lagging behind the notices, or losing PostgreSQL's LISTEN connection, already makes every
/// hub look again at once; this only bounds what an unforeseen loss could cost.
pub const POLL: Duration = Duration::from_secs(30);

/// Something streams follow: a task's event log, or the changes to a user's tasks.
pub trait Log: Send + Sync + 'static {
    type Key: Copy + Eq + Hash + Send + Sync + 'static;
    /// Where a subscriber stands: a sequence number, or a cursor.
    type Pos: Copy + Ord + Send + Sync + std::fmt::Debug + 'static;
    /// At most [`PAGE`] entries after `after`, oldest first; `None` once the log is gone.
    fn read(
        &self,
        store: &dyn Store,
        after: Self::Pos,
    ) -> impl Future<Output = Result<Option<Vec<Entry<Self::Pos>>>, StoreError>> + Send;
    /// Whether a notice of sequence number `seq` tells nothing new to a reader at `at`.
    fn covers(at: Self::Pos, seq: i64) -> bool;
    /// The sequence number a position stands for, where the log has them.
    fn seq(pos: Self::Pos) -> i64;
}

/// One entry of a log, ready to send.
#[derive(Debug)]
pub struct Entry<P> {
    pub pos: P,
    pub frame: Frame,
    /// The status a task's `status` event announces.
    pub status: Option<TaskStatus>,
}

/// What a hub hands its subscribers.
#[derive(Debug)]
pub enum Batch<P> {
    /// The entries after `after`, as one read found them.
    Entries { after: P, entries: Vec<Entry<P>> },
    /// A frame that is not stored (the model's text as it comes), for subscribers at `at`.
    Live { at: P, frame: Frame },
    /// The database kept failing.
    Failed,
    /// The log no longer exists.
    Gone,
}

/// Database reads made for streams in this process.
#[derive(Debug, Default)]
pub struct Reads {
    /// By hubs, once for all their subscribers.
    pub(crate) hubs: AtomicU64,
    /// By subscribers catching up: replaying what they missed before joining, or after
    /// falling behind the hub.
    pub(crate) catching_up: AtomicU64,
    /// By checks that the credentials streams were opened with still hold.
    pub(crate) credentials: AtomicU64,
}

struct Position<P> {
    /// Where the hub has read to; `None` until its first subscriber has caught up.
    at: Option<P>,
    /// The newest sequence number a notice told of since the last read began.
    noticed: Option<i64>,
    /// Read even if no notice asks for it.
    forced: bool,
}

/// What a hub's reader and its subscribers share.
pub struct Shared<L: Log> {
    log: L,
    store: Arc<dyn Store>,
    position: Mutex<Position<L::Pos>>,
    batches: broadcast::Sender<Arc<Batch<L::Pos>>>,
    wake: Notify,
    reads: Arc<Reads>,
}

/// The hubs of one kind of log that someone follows, by key.
type Registry<L> = Mutex<HashMap<<L as Log>::Key, Weak<Hub<L>>>>;

/// A subscriber's handle on a hub: the hub stops when the last one is dropped.
pub struct Hub<L: Log> {
    pub shared: Arc<Shared<L>>,
    key: L::Key,
    reader: AbortHandle,
    hubs: Weak<Registry<L>>,
}

impl<L: Log> Drop for Hub<L> {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(hubs) = self.hubs.upgrade() {
            let mut hubs = hubs.lock().expect("hubs lock");
            if hubs
                .get(&self.key)
                .is_some_and(|hub| hub.strong_count() == 0)
            {
                hubs.remove(&self.key);
            }
        }
    }
}

impl<L: Log> Shared<L> {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch<L::Pos>>> {
        self.batches.subscribe()
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// A subscriber has caught up to `pos`: a hub that has not read yet starts there.
    pub fn start_at(&self, pos: L::Pos) {
        let mut position = self.position.lock().expect("hub lock");
        if position.at.is_none() {
            position.at = Some(pos);
            if position.forced || position.noticed.is_some() {
                self.wake.notify_one();
            }
        }
    }

    /// A notice of sequence number `seq` (or of any change, with `None`).
    fn notice(&self, seq: Option<i64>) {
        let mut position = self.position.lock().expect("hub lock");
        match (seq, position.at) {
            (Some(seq), Some(at)) if L::covers(at, seq) => return,
            (Some(seq), _) => position.noticed = position.noticed.max(Some(seq)),
            (None, _) => position.forced = true,
        }
        self.wake.notify_one();
    }

    /// Hands a frame that is not stored to the subscribers that are up to date.
    fn live(&self, frame: Frame) {
        let position = self.position.lock().expect("hub lock");
        if let Some(at) = position.at {
            let _ = self.batches.send(Arc::new(Batch::Live { at, frame }));
        }
    }

    /// Where to read from next, if anything asks for a read.
    fn due(&self) -> Option<L::Pos> {
        let mut position = self.position.lock().expect("hub lock");
        let at = position.at?;
        let noticed = position.noticed.take();
        let due = position.forced || noticed.is_some_and(|seq| !L::covers(at, seq));
        position.forced = false;
        due.then_some(at)
    }

    async fn read_new(&self) {
        while let Some(after) = self.due() {
            let read = read_with_retries(|| self.log.read(self.store.as_ref(), after)).await;
            self.reads.hubs.fetch_add(1, Ordering::Relaxed);
            let entries = match read {
                Ok(Some(entries)) => entries,
                Ok(None) => return self.publish(None, Batch::Gone),
                Err(()) => {
                    // Tried again on the next notice or poll.
                    self.position.lock().expect("hub lock").forced = true;
                    return self.publish(None, Batch::Failed);
                }
            };
            let Some(last) = entries.last().map(|entry| entry.pos) else {
                continue;
            };
            if entries.len() as i64 == PAGE {
                self.position.lock().expect("hub lock").forced = true;
            }
            self.publish(Some(last), Batch::Entries { after, entries });
        }
    }

    fn publish(&self, at: Option<L::Pos>, batch: Batch<L::Pos>) {
        let mut position = self.position.lock().expect("hub lock");
        if at.is_some() {
            position.at = at;
        }
        // No receiver is fine: the last subscriber just left.
        let _ = self.batches.send(Arc::new(batch));
    }
}

async fn read_loop<L: Log>(shared: Arc<Shared<L>>) {
    loop {
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(POLL) => shared.position.lock().expect("hub lock").forced = true,
        }
        shared.read_new().await;
    }
}

/// A read that a busy database may fail for a moment (a full pool, say): tried a few times
/// before the stream gives up and tells its clients to resume.
pub async fn read_with_retries<T, F, Fut>(read: F) -> Result<T, ()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut wait = Duration::from_millis(100);
    for _ in 0..4 {
        match read().await {
            Ok(value) => return Ok(value),
            Err(err) => tracing::warn!(error = %err, "a stream's read failed; trying again"),
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    read().await.map_err(|err| {
        tracing::error!(error = %err, "a stream could not read the database");
    })
}

/// The hubs of one kind of log in this process, by key.
pub struct Hubs<L: Log> {
    hubs: Arc<Registry<L>>,
    store: Arc<dyn Store>,
    reads: Arc<Reads>,
    /// Batches a hub keeps for subscribers that are behind.
    capacity: usize,
}

impl<L: Log> Hubs<L> {
    pub fn new(store: Arc<dyn Store>, reads: Arc<Reads>, capacity: usize) -> Self {
        Self {
            hubs: Arc::default(),
            store,
            reads,
            capacity: capacity.max(1),
        }
    }

    /// The hub of `key`, started with `log` if nobody follows it yet.
    pub fn hub(&self, key: L::Key, log: impl FnOnce() -> L) -> Arc<Hub<L>> {
        let mut hubs = self.hubs.lock().expect("hubs lock");
        if let Some(hub) = hubs.get(&key).and_then(Weak::upgrade) {
            return hub;
        }
        let shared = Arc::new(Shared {
            log: log(),
            store: self.store.clone(),
            position: Mutex::new(Position {
                at: None,
                noticed: None,
                forced: false,
            }),
            batches: broadcast::channel(self.capacity).0,
            wake: Notify::new(),
            reads: self.reads.clone(),
        });
        let reader = tokio::spawn(read_loop(shared.clone())).abort_handle();
        let hub = Arc::new(Hub {
            shared,
            key,
            reader,
            hubs: Arc::downgrade(&self.hubs),
        });
        hubs.insert(key, Arc::downgrade(&hub));
        hub
    }

    fn get(&self, key: &L::Key) -> Option<Arc<Hub<L>>> {
        let hubs = self.hubs.lock().expect("hubs lock");
        hubs.get(key).and_then(Weak::upgrade)
    }

    /// Tells the hub of `key`, if any, of a new entry (`None`: of some change).
    pub fn notice(&self, key: &L::Key, seq: Option<i64>) {
        if let Some(hub) = self.get(key) {
            hub.shared.notice(seq);
        }
    }

    /// Hands a frame that is not stored to the hub of `key`, if any.
    pub fn live(&self, key: &L::Key, frame: Frame) {
        if let Some(hub) = self.get(key) {
            hub.shared.live(frame);
        }
    }

    /// Makes every hub read again: notices may have been lost.
    pub fn resync(&self) {
        let hubs: Vec<_> = {
            let hubs = self.hubs.lock().expect("hubs lock");
            hubs.values().filter_map(Weak::upgrade).collect()
        };
        for hub in hubs {
            hub.shared.notice(None);
        }
    }
}
