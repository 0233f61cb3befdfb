//! HTTP surfaces: health, plugin catalogue, admin API, business-app API,
//! plugin webhooks. Handlers are thin: extract, call the domain, map errors.

pub mod admin;
pub mod auth;
pub mod business;
pub mod error;
pub mod flow;
pub mod health;
pub mod plugins;
pub mod widget;

pub use error::ApiError;
