//! Per-repository environments: the repository's `.berth/environment.toml` ([`file`]), the
//! server's rules that narrow it ([`resolve`]), and the prepared image kept per cache key
//! ([`cache`]), so that a repository's setup runs once and not for every task.

pub mod cache;
pub mod file;
pub mod resolve;

pub use cache::EnvironmentCache;
pub use file::{read, Declared, EnvironmentFile, ENVIRONMENT_FILE};
pub use resolve::{resolve, Environment, EnvironmentRules};
