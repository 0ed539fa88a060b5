//! Berth's sandboxes as Fly Machines: one machine per attempt, made and driven through Fly's
//! published Machines REST API, for a server that should not (or cannot) run task containers
//! on its own Docker engine. See docs/fly.md for what is and is not honoured.

pub mod api;
mod backend;
mod sandbox;
mod settings;

pub use api::{ApiError, MachinesClient};
pub use backend::{FlySandboxes, METADATA_INSTALLATION, METADATA_KIND};
pub use sandbox::FlySandbox;
pub use settings::{Backend, Settings, DEFAULT_API_URL};
