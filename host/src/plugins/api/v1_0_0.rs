//! Bindings and host implementation for the frozen `leansync:connector@1.0.0`.
//!
//! When 1.1.0 ships, it gets its own module generated from `wit/v1.1.0`; this
//! one keeps linking 1.0.0 plugins and forwards to the newest implementation.

use wasmtime::component::HasSelf;

use super::super::sandbox::StoreState;
use crate::call::{self, CallEvent, Contact};

wasmtime::component::bindgen!({
    path: "../plugin-api/wit/v1.0.0",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});

pub use exports::leansync::connector::connector::ConnectorError;
pub use leansync::connector::types;

/// Adds the 1.0.0 `host` interface to the linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<StoreState>) -> wasmtime::Result<()> {
    Plugin::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)
}

impl types::Host for StoreState {}

impl leansync::connector::host::Host for StoreState {
    async fn log(&mut self, level: types::LogLevel, message: String) {
        let plugin = &*self.scope.plugin;
        let installation = &self.scope.installation.id;
        let message: String = message.chars().take(4096).collect();
        let name = match level {
            types::LogLevel::Trace => "trace",
            types::LogLevel::Debug => "debug",
            types::LogLevel::Info => "info",
            types::LogLevel::Warn => "warn",
            types::LogLevel::Error => "error",
        };
        self.scope
            .services
            .guest_log(&self.scope.installation, name, &message);
        match level {
            types::LogLevel::Trace => tracing::trace!(plugin, installation, "{message}"),
            types::LogLevel::Debug => tracing::debug!(plugin, installation, "{message}"),
            types::LogLevel::Info => tracing::info!(plugin, installation, "{message}"),
            types::LogLevel::Warn => tracing::warn!(plugin, installation, "{message}"),
            types::LogLevel::Error => tracing::error!(plugin, installation, "{message}"),
        }
    }

    async fn config(&mut self) -> String {
        self.scope.installation.config.to_string()
    }

    async fn secret(&mut self, name: String) -> Option<String> {
        if !self.scope.secrets {
            tracing::warn!(plugin = %self.scope.plugin, "secret('{name}') refused: the manifest does not ask for `capabilities.secrets = true`");
            return None;
        }
        self.scope.installation.secrets.get(&name).cloned()
    }

    async fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        if !self.scope.key_value {
            return None;
        }
        self.scope
            .services
            .kv_get(&self.scope.installation.id, &key)
            .await
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_secs: Option<u32>,
    ) -> Result<(), String> {
        if !self.scope.key_value {
            return Err(format!(
                "key-value state is not enabled for plugin '{}': add `key-value = true` under [capabilities] in plugin.toml",
                self.scope.plugin
            ));
        }
        self.scope
            .services
            .kv_set(&self.scope.installation.id, &key, value, ttl_secs)
            .await
    }

    async fn kv_delete(&mut self, key: String) {
        if self.scope.key_value {
            self.scope
                .services
                .kv_delete(&self.scope.installation.id, &key)
                .await;
        }
    }

    async fn place_call(&mut self, from: String, to: String) -> Result<String, String> {
        if !self.scope.place_calls {
            return Err(format!(
                "placing calls is not enabled for plugin '{}': add `place-calls = true` under [capabilities] in plugin.toml",
                self.scope.plugin
            ));
        }
        self.scope
            .services
            .place_call(&self.scope.installation, from, to)
            .await
    }

    async fn push_to_screen(&mut self, event: types::CallEvent) {
        match from_wit(event) {
            Ok(ev) => self
                .scope
                .services
                .push_to_screen(&self.scope.installation, ev),
            Err(e) => tracing::warn!(plugin = %self.scope.plugin, "push-to-screen ignored: {e}"),
        }
    }
}

/// Converts a domain event for one installation into the 1.0.0 record.
pub fn to_wit(
    ev: &CallEvent,
    installation_id: &str,
    contact: Option<&Contact>,
) -> types::CallEvent {
    types::CallEvent {
        call_id: ev.call_id.clone(),
        event_id: ev.event_id(),
        direction: match ev.direction {
            call::Direction::Inbound => types::Direction::Inbound,
            call::Direction::Outbound => types::Direction::Outbound,
            call::Direction::Internal => types::Direction::Internal,
        },
        state: match ev.state {
            call::CallState::Ringing => types::CallState::Ringing,
            call::CallState::Answered => types::CallState::Answered,
            call::CallState::Ended => types::CallState::Ended,
            call::CallState::Missed => types::CallState::Missed,
        },
        caller: ev.caller.as_ref().map(|n| n.to_string()),
        callee: ev.callee.to_string(),
        licensed_number: ev.monitored.to_string(),
        installation_id: installation_id.to_owned(),
        started_at_ms: ev.started_at_ms,
        answered_at_ms: ev.answered_at_ms,
        ended_at_ms: ev.ended_at_ms,
        duration_secs: ev.duration_secs,
        contact: contact.map(contact_to_wit),
    }
}

/// Converts a domain contact into the 1.0.0 record.
pub fn contact_to_wit(c: &Contact) -> types::Contact {
    types::Contact {
        name: c.name.clone(),
        organisation: c.organisation.clone(),
        deep_link: c.deep_link.clone(),
        source: c.source.clone(),
    }
}

/// Converts a 1.0.0 contact back into the domain type.
pub fn contact_from_wit(c: types::Contact) -> Contact {
    Contact {
        name: c.name,
        organisation: c.organisation,
        deep_link: c.deep_link,
        source: c.source,
    }
}

fn from_wit(ev: types::CallEvent) -> Result<CallEvent, crate::number::NumberError> {
    use crate::number::E164;
    Ok(CallEvent {
        call_id: ev.call_id,
        direction: match ev.direction {
            types::Direction::Inbound => call::Direction::Inbound,
            types::Direction::Outbound => call::Direction::Outbound,
            types::Direction::Internal => call::Direction::Internal,
        },
        state: match ev.state {
            types::CallState::Ringing => call::CallState::Ringing,
            types::CallState::Answered => call::CallState::Answered,
            types::CallState::Ended => call::CallState::Ended,
            types::CallState::Missed => call::CallState::Missed,
        },
        caller: ev.caller.as_deref().map(E164::parse).transpose()?,
        callee: E164::parse(&ev.callee)?,
        monitored: E164::parse(&ev.licensed_number)?,
        started_at_ms: ev.started_at_ms,
        answered_at_ms: ev.answered_at_ms,
        ended_at_ms: ev.ended_at_ms,
        duration_secs: ev.duration_secs,
    })
}
