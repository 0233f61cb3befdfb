//! Shared helpers for the end-to-end tests (`tests/all`).

pub mod db;
pub mod plugins;
pub mod receiver;
