//! berth-proto
