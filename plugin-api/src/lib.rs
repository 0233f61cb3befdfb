//! Guest SDK for LeanSync Voice connectors.
//!
//! A connector is a `wasm32-wasip2` component implementing [`Connector`]:
//!
//! ```ignore
//! use leansync_plugin_api::{export, Connector, CallEvent, CallState, Delivery, ConnectorError, log};
//!
//! struct Hello;
//!
//! impl Connector for Hello {
//!     fn on_call_event(event: CallEvent, _delivery: Delivery) -> Result<(), ConnectorError> {
//!         if event.state == CallState::Ringing {
//!             let caller = event.caller.as_deref().unwrap_or("anonymous");
//!             log::info(&format!("{caller} is calling {}", event.licensed_number));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export!(Hello);
//! ```
//!
//! Helpers most connectors need: [`phone`] (what apps store → E.164, search
//! variants), [`cache`] (lookup results per installation with a short TTL),
//! [`policy`] (shared-number rule, internal-call filter, own numbers).
//!
//! Build with `cargo build --target wasm32-wasip2 --release`, put the `.wasm`
//! next to a `plugin.toml`, and check it with `leansync plugin check DIR`.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/v1.1.0",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "leansync_plugin_api::bindings",
    });
}

pub mod cache;
pub mod http;
pub mod phone;
pub mod policy;
#[cfg(not(target_family = "wasm"))]
pub mod testing;
pub mod time;

/// The `host` import: the host's in a component, [`testing::TestHost`]'s
/// in a native `cargo test`.
#[cfg(target_family = "wasm")]
mod imports {
    pub use super::bindings::leansync::connector::host::*;
}
#[cfg(not(target_family = "wasm"))]
use testing::imports;

pub use bindings::leansync::connector::types::{
    CallEvent, CallState, ConfigIssue, ConnectorError, Contact, Delivery, Direction, HttpRequest,
    HttpResponse, LogLevel, RetryableError,
};
#[doc(hidden)]
pub use serde_json as __serde_json;

/// What a connector implements. Only [`Connector::on_call_event`] is required.
pub trait Connector {
    /// Handles one call event for one installation. Return
    /// [`ConnectorError::Retryable`] when a later attempt may succeed.
    fn on_call_event(event: CallEvent, delivery: Delivery) -> Result<(), ConnectorError>;

    /// Checks an installation's config beyond its JSON schema.
    fn validate_config(_config: serde_json::Value) -> Result<(), Vec<ConfigIssue>> {
        Ok(())
    }

    /// Resolves an E.164 number to a contact (set `lookup = true` in plugin.toml).
    fn lookup_contact(_number: String) -> Result<Option<Contact>, ConnectorError> {
        Ok(None)
    }

    /// Handles a webhook request from the business app.
    fn handle_http(_request: HttpRequest) -> HttpResponse {
        json_response(
            404,
            &serde_json::json!({ "error": "this connector has no webhook routes" }),
        )
    }
}

/// Exports a [`Connector`] implementation as the component's `connector` interface.
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        const _: () = {
            struct __LeanSyncExport;
            impl $crate::bindings::exports::leansync::connector::connector::Guest for __LeanSyncExport {
                fn validate_config(config: String) -> Result<(), Vec<$crate::ConfigIssue>> {
                    match $crate::__serde_json::from_str(&config) {
                        Ok(value) => <$ty as $crate::Connector>::validate_config(value),
                        Err(e) => Err(vec![$crate::ConfigIssue {
                            field: String::new(),
                            message: format!("config is not JSON: {e}"),
                        }]),
                    }
                }
                fn on_call_event(
                    event: $crate::CallEvent,
                    delivery: $crate::Delivery,
                ) -> Result<(), $crate::ConnectorError> {
                    <$ty as $crate::Connector>::on_call_event(event, delivery)
                }
                fn lookup_contact(number: String) -> Result<Option<$crate::Contact>, $crate::ConnectorError> {
                    <$ty as $crate::Connector>::lookup_contact(number)
                }
                fn handle_http(request: $crate::HttpRequest) -> $crate::HttpResponse {
                    <$ty as $crate::Connector>::handle_http(request)
                }
            }
            $crate::bindings::__export_plugin!(__LeanSyncExport with_types_in $crate::bindings);
        };
    };
}

/// A JSON HTTP response for [`Connector::handle_http`].
pub fn json_response(status: u16, body: &serde_json::Value) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

/// A retryable error, optionally with the wait the app asked for.
pub fn retryable(message: impl Into<String>, retry_after_ms: Option<u64>) -> ConnectorError {
    ConnectorError::Retryable(RetryableError {
        message: message.into(),
        retry_after_ms,
    })
}

/// A permanent error: retrying will not help.
pub fn permanent(message: impl Into<String>) -> ConnectorError {
    ConnectorError::Permanent(message.into())
}

/// Logging into the host's log, tagged with plugin and installation.
pub mod log {
    use super::LogLevel;
    use super::imports as host;

    /// Logs at debug level.
    pub fn debug(message: &str) {
        host::log(LogLevel::Debug, message)
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        host::log(LogLevel::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        host::log(LogLevel::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        host::log(LogLevel::Error, message)
    }
}

/// The installation's configuration (secrets removed), deserialized.
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, ConnectorError> {
    let raw = imports::config();
    serde_json::from_str(&raw).map_err(|e| {
        permanent(format!(
            "installation config does not fit this connector: {e}"
        ))
    })
}

/// A secret config field (marked `"x-secret": true` in the schema).
pub fn secret(name: &str) -> Option<String> {
    imports::secret(name)
}

/// Per-installation key-value state (needs `key-value = true`).
pub mod kv {
    use super::imports as host;

    /// Reads a value.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        host::kv_get(key)
    }
    /// Writes a value, optionally expiring after `ttl_secs`.
    pub fn set(key: &str, value: &[u8], ttl_secs: Option<u32>) -> Result<(), String> {
        host::kv_set(key, value, ttl_secs)
    }
    /// Deletes a value.
    pub fn delete(key: &str) {
        host::kv_delete(key)
    }
}

/// Places a click-to-call from a number licensed to this installation.
pub fn place_call(from: &str, to: &str) -> Result<String, String> {
    imports::place_call(from, to)
}

/// Shows a call on the live screens of the installation's users.
pub fn push_to_screen(event: &CallEvent) {
    imports::push_to_screen(event)
}
