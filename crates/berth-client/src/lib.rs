//! berth-client
