//! Whether the credentials that open streams were made with still hold. Streams opened with
//! one credential share its check: a read started after what prompted the check answers all
//! of them, so 10,000 streams of one token make one read, not 10,000.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use berth_proto::{TokenId, UserId};
use berth_store::{Principal, Store};
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use super::hub::{read_with_retries, Reads, POLL};

type Answer = Shared<BoxFuture<'static, Result<bool, ()>>>;

/// One read of a credential, started at `started`, its answer shared by every waiter.
#[derive(Clone)]
struct Check {
    started: Instant,
    answer: Answer,
}

pub(crate) struct CredentialChecks {
    store: Arc<dyn Store>,
    reads: Arc<Reads>,
    checks: Mutex<HashMap<(UserId, TokenId), Check>>,
}

impl CredentialChecks {
    pub fn new(store: Arc<dyn Store>, reads: Arc<Reads>) -> Self {
        Self {
            store,
            reads,
            checks: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `principal` still holds, as read by a check started at or after `since`; `Err`
    /// when the database could not answer.
    pub async fn still_valid(&self, principal: &Principal, since: Instant) -> Result<bool, ()> {
        let key = (principal.user.id, principal.token_id);
        let answer = {
            let mut checks = self.checks.lock().expect("credential checks lock");
            match checks.get(&key) {
                Some(check) if check.started >= since => check.answer.clone(),
                _ => {
                    // Checks older than a poll answer nobody any more.
                    checks.retain(|_, check| check.started.elapsed() < POLL);
                    let store = self.store.clone();
                    let principal = principal.clone();
                    let answer =
                        async move { read_with_retries(|| store.still_valid(&principal)).await }
                            .boxed()
                            .shared();
                    self.reads.credentials.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let check = Check { started, answer };
                    checks.insert(key, check.clone());
                    check.answer
                }
            }
        };
        answer.await
    }
}
