//! LeanSync Voice host: licensing, telephony, the sandboxed connector
//! runtime and the HTTP surfaces, wired together by [`app`].

pub mod api;
pub mod app;
pub mod call;
pub mod config;
pub mod dialing;
pub mod egress;
pub mod licensing;
pub mod number;
pub mod pipeline;
pub mod plugins;
pub mod portal;
pub mod store;
pub mod telephony;
pub mod wiring;
