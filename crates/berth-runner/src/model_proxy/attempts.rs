//! Which attempts may use the proxy, and what each has spent. An attempt is admitted with a
//! fresh random token that is good until its [`Pass`] is dropped (the attempt ended) or the
//! database refuses its writes (another attempt owns the task now).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_proto::{Budget, EventKind, Usage};
use berth_store::{Fence, Store, StoreError};
use rand::RngCore;
use serde_json::json;

use super::usage::TokenCounts;

/// What the proxy needs to meter one attempt.
pub struct Admission {
    pub fence: Fence,
    pub store: Arc<dyn Store>,
    /// The task's budget, counted from the attempt's start.
    pub budget: Budget,
}

/// The attempts the proxy serves, by token.
#[derive(Default)]
pub(super) struct Attempts {
    live: Mutex<HashMap<String, Arc<Meter>>>,
}

impl Attempts {
    pub(super) fn admit(self: &Arc<Self>, admission: Admission) -> Pass {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token: String = secret.iter().map(|byte| format!("{byte:02x}")).collect();
        let token = format!("berth-proxy-{token}");
        let meter = Arc::new(Meter {
            admission,
            spent: Mutex::new(Spent::default()),
        });
        self.lock().insert(token.clone(), meter.clone());
        Pass {
            token,
            meter,
            attempts: self.clone(),
        }
    }

    pub(super) fn meter(&self, token: &str) -> Option<Arc<Meter>> {
        self.lock().get(token).cloned()
    }

    fn revoke(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Meter>>> {
        self.live.lock().expect("proxy attempts lock")
    }
}

/// An attempt's right to use the proxy: its token works while the pass is held.
pub struct Pass {
    token: String,
    meter: Arc<Meter>,
    attempts: Arc<Attempts>,
}

impl Pass {
    /// The token the attempt's agent sends as its API key.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Why the proxy refused the attempt a turn, once it has for its budget.
    pub fn budget_refusal(&self) -> Option<String> {
        self.meter.spent().refused.clone()
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.attempts.revoke(&self.token);
    }
}

impl std::fmt::Debug for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pass(..)")
    }
}

#[derive(Default)]
struct Spent {
    /// Why a turn was refused, once one was.
    refused: Option<String>,
    turns: u32,
    tokens: u64,
    usd: f64,
}

/// One attempt's spending, checked before each model request and added to after it.
pub(super) struct Meter {
    admission: Admission,
    spent: Mutex<Spent>,
}

impl Meter {
    /// Counts a new turn, or says why the budget allows none. Like Berth's own loop, the
    /// turn that crosses a limit finishes; the next one is refused.
    pub(super) fn start_turn(&self) -> Result<(), String> {
        let mut spent = self.spent();
        let refused = Self::spent_reason(&self.admission.budget, &spent);
        match refused {
            Some(reason) => {
                spent.refused = Some(reason.clone());
                Err(reason)
            }
            None => {
                spent.turns += 1;
                Ok(())
            }
        }
    }

    fn spent(&self) -> std::sync::MutexGuard<'_, Spent> {
        self.spent.lock().expect("proxy meter lock")
    }

    fn spent_reason(budget: &Budget, spent: &Spent) -> Option<String> {
        if let Some(max) = budget.max_turns.filter(|max| spent.turns >= *max) {
            return Some(format!("this task's budget of {max} model turns is spent"));
        }
        if let Some(max) = budget.max_tokens.filter(|max| spent.tokens >= *max) {
            return Some(format!(
                "this task's budget of {max} tokens is spent ({} used)",
                spent.tokens
            ));
        }
        if let Some(max) = budget.max_usd.filter(|max| spent.usd >= *max) {
            return Some(format!(
                "this task's budget of ${max:.2} is spent (${:.4} used)",
                spent.usd
            ));
        }
        None
    }

    /// Adds one answer's usage to the attempt and the task, and tells it in a `usage` event.
    /// `cost` is `None` for a model missing from the price table.
    pub(super) async fn record(
        &self,
        model: &str,
        counts: TokenCounts,
        cost: Option<f64>,
    ) -> Result<(), StoreError> {
        {
            let mut spent = self.spent();
            spent.tokens += counts.total();
            spent.usd += cost.unwrap_or(0.0);
        }
        let Admission { fence, store, .. } = &self.admission;
        let usage = Usage {
            input_tokens: counts.input,
            output_tokens: counts.output,
            cache_write_tokens: counts.cache_write,
            cache_read_tokens: counts.cache_read,
            cost_usd: cost.unwrap_or(0.0),
        };
        store.add_usage(*fence, &usage).await?;
        let event = json!({
            "source": "model_proxy",
            "model": model,
            "input_tokens": counts.input,
            "output_tokens": counts.output,
            "cache_write_tokens": counts.cache_write,
            "cache_read_tokens": counts.cache_read,
            "total_tokens": counts.total(),
            "cost_usd": cost.unwrap_or(0.0),
            "priced": cost.is_some(),
        });
        store.append_event(*fence, EventKind::Usage, event).await?;
        Ok(())
    }
}
