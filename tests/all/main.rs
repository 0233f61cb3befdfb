//! End-to-end tests, compiled into one binary; one file per behaviour.

mod admin_api;
mod api_versions;
mod author_kit;
mod carddav;
mod crash;
mod egress;
mod licensing_e2e;
mod pipeline_delivery;
mod plugin_faults;
mod plugin_http;
mod plugin_loading;
mod plugin_reload;
mod portal;
mod saas;
mod scale_out;
mod schema;
mod sip;
mod tryton;
mod webhook;
