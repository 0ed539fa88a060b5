//! The agent as the work phase of the runner's lifecycle: a conversation with the model whose
//! tool calls run in the task's sandbox. Cloning, restoring the workspace, the setup phase,
//! the diff and publishing are the lifecycle's ([`berth_runner::attempt`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_runner::attempt::{Ending, Job, Work};

use crate::conversation::Conversation;
use crate::prices::PriceTable;
use crate::Provider;

/// How the agent works, from the server's configuration.
#[derive(Clone)]
pub struct AgentSettings {
    /// The model of tasks that name none.
    pub model: String,
    /// Most tokens the model writes in one turn.
    pub max_tokens_per_turn: u32,
    /// The model's context window, in tokens (see [`crate::context_window`]).
    pub context_tokens: u64,
    /// Turns a request may take when its task sets no `max_turns`.
    pub max_turns: u32,
    /// Longest one bash command may run.
    pub command_timeout: Duration,
    pub prices: PriceTable,
}

pub struct Agent {
    pub provider: Arc<dyn Provider>,
    pub settings: AgentSettings,
}

#[async_trait]
impl Work for Agent {
    async fn run(&self, job: Job<'_>) -> Ending {
        let model = job
            .task
            .model
            .clone()
            .unwrap_or_else(|| self.settings.model.clone());
        let price = self.settings.prices.price(&model);
        if job.task.budget.max_usd.is_some() && price.is_none() {
            return Ending::Failed(format!(
                "the task has a max_usd budget but the server has no price for model {model}; \
                 add it to the `prices` setting"
            ));
        }
        let conversation = Conversation {
            provider: self.provider.as_ref(),
            settings: &self.settings,
            job,
            model: &model,
            price,
        };
        conversation.run().await
    }
}
