//! Connector API versions this host links. Each released WIT version is
//! frozen in its own module; a plugin is bound to the version it was built
//! against, so 1.0.0 plugins keep working when 1.1.0 is added.
//!
//! What the versions share lives here: the `host` import's behaviour (each
//! version's bindings only convert its types and forward), and the
//! version-independent [`Request`] and [`Reply`] the runtime speaks.

pub mod v1_0_0;
pub mod v1_1_0;

use semver::{Version, VersionReq};
use wasmtime::component::{Component, Linker};

use super::runtime::{ConfigIssue, Delivery, HttpRequest, HttpResponse, InvokeError};
use super::sandbox::StoreState;
use crate::call::{CallEvent, Contact};

/// Every connector API version this host supports, oldest first.
pub const SUPPORTED: &[Version] = &[Version::new(1, 0, 0), Version::new(1, 1, 0)];

/// Human list of supported versions for messages, e.g. `1.0.0, 1.1.0`.
pub fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The newest supported version matching a manifest's requirement.
pub fn resolve(req: &VersionReq) -> Option<&'static Version> {
    SUPPORTED.iter().rev().find(|v| req.matches(v))
}

/// Adds every supported version's host interfaces (and WASI) to a linker.
pub fn add_to_linker(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    v1_0_0::add_to_linker(linker)?;
    v1_1_0::add_to_linker(linker)?;
    Ok(())
}

/// Pre-instantiated plugin, bound to the API version it exports.
#[derive(Clone)]
pub enum Bindings {
    /// Built against `leansync:connector@1.0.0`.
    V1_0(v1_0_0::PluginPre<StoreState>),
    /// Built against `leansync:connector@1.1.0`.
    V1_1(v1_1_0::PluginPre<StoreState>),
}

/// An instantiated component of one API version.
pub enum Instance {
    /// 1.0.0.
    V1_0(v1_0_0::Plugin),
    /// 1.1.0.
    V1_1(v1_1_0::Plugin),
}

impl Bindings {
    /// Binds a component exporting `version`.
    pub fn new(
        linker: &Linker<StoreState>,
        component: &Component,
        version: &Version,
    ) -> anyhow::Result<Self> {
        let pre = linker.instantiate_pre(component)?;
        match (version.major, version.minor) {
            (1, 0) => Ok(Bindings::V1_0(v1_0_0::PluginPre::new(pre)?)),
            (1, 1) => Ok(Bindings::V1_1(v1_1_0::PluginPre::new(pre)?)),
            _ => anyhow::bail!("no bindings for connector API {version}"),
        }
    }

    /// A fresh instance in `store`.
    pub async fn instantiate(
        &self,
        store: &mut wasmtime::Store<StoreState>,
    ) -> wasmtime::Result<Instance> {
        Ok(match self {
            Bindings::V1_0(pre) => Instance::V1_0(pre.instantiate_async(store).await?),
            Bindings::V1_1(pre) => Instance::V1_1(pre.instantiate_async(store).await?),
        })
    }

    /// Runs one export on `instance`, or on a fresh instance when none is warm.
    pub async fn call(
        &self,
        store: &mut wasmtime::Store<StoreState>,
        instance: Option<Instance>,
        request: Request,
    ) -> wasmtime::Result<Reply> {
        let instance = match instance {
            Some(i) => i,
            None => self.instantiate(store).await?,
        };
        match instance {
            Instance::V1_0(i) => v1_0_0::call(&i, store, request).await,
            Instance::V1_1(i) => v1_1_0::call(&i, store, request).await,
        }
    }
}

/// One export call, in the host's own types.
pub enum Request {
    /// `on-call-event`.
    Event {
        /// The event.
        event: Box<CallEvent>,
        /// The installation it is delivered to.
        installation: String,
        /// A contact resolved before delivery.
        contact: Option<Contact>,
        /// Delivery metadata.
        delivery: Delivery,
    },
    /// `lookup-contact` with an E.164 number.
    Lookup(String),
    /// `handle-http`.
    Http(HttpRequest),
    /// `validate-config` with the config as JSON text.
    Validate(String),
}

/// What an export returned, in the host's own types.
pub enum Reply {
    /// From `on-call-event`.
    Event(Result<(), InvokeError>),
    /// From `lookup-contact`.
    Lookup(Result<Option<Contact>, InvokeError>),
    /// From `handle-http`.
    Http(HttpResponse),
    /// From `validate-config`.
    Validate(Result<(), Vec<ConfigIssue>>),
}

/// The connector API version a component exports, read from its type.
pub fn exported_version(component: &Component, engine: &wasmtime::Engine) -> Option<Version> {
    let ty = component.component_type();
    ty.exports(engine).find_map(|(name, _)| {
        name.strip_prefix("leansync:connector/connector@")
            .and_then(|v| Version::parse(v).ok())
    })
}

/// The `host` import, whichever version a guest calls it through.
impl StoreState {
    pub(crate) fn host_log(&mut self, level: &'static str, message: String) {
        let plugin = &*self.scope.plugin;
        let installation = &self.scope.installation.id;
        let message: String = message.chars().take(4096).collect();
        self.scope
            .services
            .guest_log(&self.scope.installation, level, &message);
        if self.scope.log_bus.receiver_count() > 0 {
            let _ = self.scope.log_bus.send(super::runtime::GuestLog {
                at_ms: crate::call::now_ms(),
                plugin: plugin.to_owned(),
                installation: installation.clone(),
                customer_id: self.scope.installation.customer_id.clone(),
                level,
                message: message.clone(),
            });
        }
        match level {
            "trace" => tracing::trace!(plugin, installation, "{message}"),
            "debug" => tracing::debug!(plugin, installation, "{message}"),
            "info" => tracing::info!(plugin, installation, "{message}"),
            "warn" => tracing::warn!(plugin, installation, "{message}"),
            _ => tracing::error!(plugin, installation, "{message}"),
        }
    }

    pub(crate) fn host_config(&self) -> String {
        self.scope.installation.config.to_string()
    }

    pub(crate) fn host_secret(&self, name: String) -> Option<String> {
        if !self.scope.secrets {
            tracing::warn!(plugin = %self.scope.plugin, "secret('{name}') refused: the manifest does not ask for `capabilities.secrets = true`");
            return None;
        }
        self.scope.installation.secrets.get(&name).cloned()
    }

    pub(crate) async fn host_kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        if !self.scope.key_value {
            return None;
        }
        self.scope
            .services
            .kv_get(&self.scope.installation.id, &key)
            .await
    }

    pub(crate) async fn host_kv_set(
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

    pub(crate) async fn host_kv_delete(&mut self, key: String) {
        if self.scope.key_value {
            self.scope
                .services
                .kv_delete(&self.scope.installation.id, &key)
                .await;
        }
    }

    pub(crate) async fn host_place_call(
        &mut self,
        from: String,
        to: String,
    ) -> Result<String, String> {
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

    pub(crate) fn host_push_to_screen(
        &mut self,
        event: Result<CallEvent, crate::number::NumberError>,
    ) {
        match event {
            Ok(ev) => self
                .scope
                .services
                .push_to_screen(&self.scope.installation, ev),
            Err(e) => tracing::warn!(plugin = %self.scope.plugin, "push-to-screen ignored: {e}"),
        }
    }
}

/// The glue every version module has: its `host` import forwarding to
/// [`StoreState`], conversions between its records and the host's types,
/// and [`Request`] → export call → [`Reply`]. `$extra` names the
/// `option<string>` fields of `call-event` the version adds beyond 1.0.0,
/// spelled as in [`CallEvent`].
macro_rules! version_glue {
    ($($extra:ident),*) => {
        use wasmtime::component::HasSelf;

        use super::super::runtime::{ConfigIssue, HttpResponse, InvokeError};
        use super::super::sandbox::StoreState;
        use super::{Reply, Request};
        use crate::call::{self, CallEvent, Contact};

        pub use exports::leansync::connector::connector::ConnectorError;
        pub use leansync::connector::types;

        /// Adds this version's `host` interface to the linker.
        pub fn add_to_linker(
            linker: &mut wasmtime::component::Linker<StoreState>,
        ) -> wasmtime::Result<()> {
            Plugin::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)
        }

        impl types::Host for StoreState {}

        impl leansync::connector::host::Host for StoreState {
            async fn log(&mut self, level: types::LogLevel, message: String) {
                let level = match level {
                    types::LogLevel::Trace => "trace",
                    types::LogLevel::Debug => "debug",
                    types::LogLevel::Info => "info",
                    types::LogLevel::Warn => "warn",
                    types::LogLevel::Error => "error",
                };
                self.host_log(level, message)
            }

            async fn config(&mut self) -> String {
                self.host_config()
            }

            async fn secret(&mut self, name: String) -> Option<String> {
                self.host_secret(name)
            }

            async fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
                self.host_kv_get(key).await
            }

            async fn kv_set(
                &mut self,
                key: String,
                value: Vec<u8>,
                ttl_secs: Option<u32>,
            ) -> Result<(), String> {
                self.host_kv_set(key, value, ttl_secs).await
            }

            async fn kv_delete(&mut self, key: String) {
                self.host_kv_delete(key).await
            }

            async fn place_call(&mut self, from: String, to: String) -> Result<String, String> {
                self.host_place_call(from, to).await
            }

            async fn push_to_screen(&mut self, event: types::CallEvent) {
                self.host_push_to_screen(from_wit(event))
            }
        }

        /// Converts a domain event for one installation into this version's record.
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
                $($extra: ev.$extra.clone(),)*
            }
        }

        fn contact_to_wit(c: &Contact) -> types::Contact {
            types::Contact {
                name: c.name.clone(),
                organisation: c.organisation.clone(),
                deep_link: c.deep_link.clone(),
                source: c.source.clone(),
            }
        }

        fn contact_from_wit(c: types::Contact) -> Contact {
            Contact {
                name: c.name,
                organisation: c.organisation,
                deep_link: c.deep_link,
                source: c.source,
            }
        }

        fn from_wit(ev: types::CallEvent) -> Result<CallEvent, crate::number::NumberError> {
            use crate::number::E164;
            #[allow(unused_mut)]
            let mut out = CallEvent {
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
                answered_by: None,
            };
            $(out.$extra = ev.$extra;)*
            Ok(out)
        }

        fn connector_error(e: ConnectorError) -> InvokeError {
            match e {
                ConnectorError::Retryable(r) => InvokeError::Retryable {
                    message: r.message,
                    retry_after_ms: r.retry_after_ms,
                },
                ConnectorError::Permanent(m) => InvokeError::Permanent(m),
            }
        }

        /// Runs one export of an instance of this version.
        pub async fn call(
            instance: &Plugin,
            store: &mut wasmtime::Store<StoreState>,
            request: Request,
        ) -> wasmtime::Result<Reply> {
            let guest = instance.leansync_connector_connector();
            Ok(match request {
                Request::Event {
                    event,
                    installation,
                    contact,
                    delivery,
                } => {
                    let ev = to_wit(&event, &installation, contact.as_ref());
                    let d = types::Delivery {
                        idempotency_key: delivery.idempotency_key,
                        attempt: delivery.attempt,
                    };
                    Reply::Event(
                        guest
                            .call_on_call_event(&mut *store, &ev, &d)
                            .await?
                            .map_err(connector_error),
                    )
                }
                Request::Lookup(n) => Reply::Lookup(
                    guest
                        .call_lookup_contact(&mut *store, &n)
                        .await?
                        .map(|c| c.map(contact_from_wit))
                        .map_err(connector_error),
                ),
                Request::Http(r) => {
                    let r = types::HttpRequest {
                        method: r.method,
                        path: r.path,
                        query: r.query,
                        headers: r.headers,
                        body: r.body,
                    };
                    let res = guest.call_handle_http(&mut *store, &r).await?;
                    Reply::Http(HttpResponse {
                        status: res.status,
                        headers: res.headers,
                        body: res.body,
                    })
                }
                Request::Validate(c) => Reply::Validate(
                    guest
                        .call_validate_config(&mut *store, &c)
                        .await?
                        .map_err(|list| {
                            list.into_iter()
                                .map(|i| ConfigIssue {
                                    field: i.field,
                                    message: i.message,
                                })
                                .collect()
                        }),
                ),
            })
        }
    };
}
pub(crate) use version_glue;
