//! This process's hubs, and the one listener that routes the store's notices to them: an
//! event wakes its task's hub and its owner's task-list hub; the model's text as it comes
//! goes to its task's hub; a change to an account tells that user's open streams to check
//! their credentials.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use berth_proto::{StreamFrame, UserId};
use berth_store::{EventNotice, Store};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::credentials::CredentialChecks;
use super::follow::{TaskLog, UserLog};
use super::frame::Frame;
use super::hub::{Hubs, Reads};

/// Database reads made for streams since the server started (see [`Streams::reads`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamReads {
    /// Made by hubs, each once for every subscriber of its task or task list.
    pub hubs: u64,
    /// Made by single subscribers: replaying what they missed, or catching up after falling
    /// behind their hub.
    pub catching_up: u64,
    /// Made to check that the credentials streams were opened with still hold, each for all
    /// the streams of one credential.
    pub credentials: u64,
}

pub struct Streams {
    store: Arc<dyn Store>,
    pub(crate) tasks: Hubs<TaskLog>,
    pub(crate) users: Hubs<UserLog>,
    /// Users whose credentials may have changed (the nil id stands for everyone), and when
    /// that was heard: a check must read after it.
    accounts: broadcast::Sender<(UserId, Instant)>,
    pub(crate) credentials: CredentialChecks,
    reads: Arc<Reads>,
}

impl Streams {
    /// Hubs that keep `buffer` reads for subscribers that are behind.
    pub fn new(store: Arc<dyn Store>, buffer: usize) -> Self {
        let reads = Arc::new(Reads::default());
        Self {
            tasks: Hubs::new(store.clone(), reads.clone(), buffer),
            users: Hubs::new(store.clone(), reads.clone(), buffer),
            credentials: CredentialChecks::new(store.clone(), reads.clone()),
            store,
            accounts: broadcast::channel(256).0,
            reads,
        }
    }

    pub fn reads(&self) -> StreamReads {
        StreamReads {
            hubs: self.reads.hubs.load(Ordering::Relaxed),
            catching_up: self.reads.catching_up.load(Ordering::Relaxed),
            credentials: self.reads.credentials.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub(crate) fn accounts(&self) -> broadcast::Receiver<(UserId, Instant)> {
        self.accounts.subscribe()
    }

    /// Routes the store's notices to the hubs until `shutdown`.
    pub(crate) async fn route_notices(self: Arc<Self>, shutdown: CancellationToken) {
        let mut notices = self.store.subscribe_events();
        let mut deltas = self.store.subscribe_text_deltas();
        loop {
            tokio::select! {
                // Text is published before the event that stores it is written, so taking
                // text first hands each delta on before the stored event that supersedes it.
                biased;
                delta = deltas.recv() => match delta {
                    Ok(delta) => {
                        let frame = Frame::new(&StreamFrame::TextDelta {
                            attempt: delta.fence.attempt,
                            text: delta.text.clone(),
                        });
                        self.tasks.live(&delta.fence.task_id, frame);
                    }
                    // Deltas may be lost; the stored text supersedes them.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                notice = notices.recv() => match notice {
                    Ok(notice) if notice.is_user_change() => {
                        let _ = self.accounts.send((notice.owner_id, Instant::now()));
                    }
                    Ok(notice) if notice == EventNotice::RESYNC => self.resync(),
                    Ok(notice) => {
                        self.tasks.notice(&notice.task_id, Some(notice.seq));
                        self.users.notice(&notice.owner_id, Some(notice.seq));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.resync();
                        let _ = self.accounts.send((UserId(uuid::Uuid::nil()), Instant::now()));
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Notices may have been lost: every hub reads again.
    fn resync(&self) {
        self.tasks.resync();
        self.users.resync();
    }
}
