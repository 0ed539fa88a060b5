//! Wire types shared by Berth's server, runners and clients: tasks, events, tokens and the
//! bodies of the HTTP API. Everything here is plain data with serde and OpenAPI schemas, plus
//! the [`Secret`] and the list parsing every part's settings use.

mod api;
mod environment;
mod event;
mod ids;
mod pull_request;
mod push;
pub mod settings;
mod stream;
mod task;
mod webhook;

pub use api::*;
pub use environment::*;
pub use event::*;
pub use ids::*;
pub use pull_request::*;
pub use push::*;
pub use settings::Secret;
pub use stream::*;
pub use task::*;
pub use webhook::*;
