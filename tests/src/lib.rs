//! Shared helpers for the end-to-end tests (`tests/all`).

pub mod plugins;
pub mod receiver;
