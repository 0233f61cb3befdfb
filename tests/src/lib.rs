//! Shared helpers for the end-to-end tests (`tests/all`).

pub mod db;
pub mod host;
pub mod plugins;
pub mod radicale;
pub mod receiver;
pub mod saas;
pub mod tryton;
