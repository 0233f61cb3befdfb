//! The sandboxed connector runtime: manifests, capabilities, API versions,
//! the engine and its compile cache, invocation, health and hot reload.

pub mod api;
pub mod capabilities;
pub mod cli;
pub mod dev;
pub mod egress;
pub mod engine;
pub mod kv;
pub mod manifest;
mod outbound;
pub mod runtime;
pub mod sandbox;
pub mod watcher;

pub use egress::Egress;
pub use kv::DbKv;
pub use runtime::{
    ConfigIssue, Delivery, GuestLog, HttpRequest, HttpResponse, InvokeError, PluginInfo,
    PluginRuntime, ReloadReport, Status,
};
pub use sandbox::{HostServices, Installation, MemoryServices};
