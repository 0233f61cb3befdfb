//! End-to-end tests, compiled into one binary; one file per behaviour.

mod pipeline_delivery;
mod plugin_faults;
mod plugin_http;
mod plugin_loading;
mod plugin_reload;
mod webhook;
