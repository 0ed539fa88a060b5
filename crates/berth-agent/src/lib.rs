//! Berth's agent. The brain stays outside the sandbox: the model loop runs in the runner,
//! speaking to a model provider, and only the tool calls run in the task's container.

pub mod anthropic;
pub mod context_window;
mod conversation;
pub mod model;
pub mod openai;
pub mod prices;
pub mod prompt;
pub mod run;
mod settings;
pub mod tools;

pub use model::{Block, Message, Provider, ProviderError, RetryPolicy, Role, Tool, TurnRequest};
pub use settings::{AgentProvider, Settings};
