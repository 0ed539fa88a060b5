//! Wire types shared by Berth's server, runners and clients: tasks, events, tokens and the
//! bodies of the HTTP API. Everything here is plain data with serde and OpenAPI schemas.

mod api;
mod event;
mod ids;
mod stream;
mod task;

pub use api::*;
pub use event::*;
pub use ids::*;
pub use stream::*;
pub use task::*;
