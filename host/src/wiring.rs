//! Adapters that join the parts: licensing answers routing, key and guard
//! questions; the plugin runtime is the connector catalogue; telephony
//! originates click-to-calls; plugins reach the host through [`HostBridge`].

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;

use crate::api::ApiError;
use crate::api::business::{Dialer, KeyResolver, KeyScope};
use crate::call::CallEvent;
use crate::dialing::{DialPermissions, Guard, Originator};
use crate::licensing::{Actor, ConnectorCatalog, Licensing};
use crate::number::E164;
use crate::pipeline::{Routing, Target};
use crate::plugins::kv::DbKv;
use crate::plugins::sandbox::HostServices;
use crate::plugins::{Installation, PluginRuntime};
use crate::telephony::{Originate, Provider};

/// Routing, key resolution and dial guard backed by the licensing index.
#[derive(Clone)]
pub struct Licensed {
    /// Licensing service.
    pub licensing: Licensing,
    /// Plugins (to know which connectors resolve contacts).
    pub plugins: PluginRuntime,
}

impl Licensed {
    fn with_lookup(&self, mut t: Target) -> Target {
        t.lookup = self
            .plugins
            .get(&t.installation.plugin)
            .is_some_and(|p| p.manifest.lookup);
        t
    }
}

impl Routing for Licensed {
    fn targets(&self, number: &E164) -> Vec<Target> {
        self.licensing
            .index()
            .targets(number)
            .iter()
            .cloned()
            .map(|t| self.with_lookup(t))
            .collect()
    }

    fn installation(&self, installation_id: &str) -> Option<Target> {
        self.licensing
            .index()
            .installation(installation_id)
            .cloned()
            .map(|t| self.with_lookup(t))
    }

    fn customer_of(&self, number: &E164) -> Option<String> {
        self.licensing.index().owner(number).cloned()
    }
}

impl KeyResolver for Licensed {
    fn resolve(&self, secret: &str) -> Option<KeyScope> {
        self.licensing.index().key(secret).cloned()
    }

    fn seal_ticket(&self, secret: &str, expires_at_ms: u64) -> String {
        self.licensing.seal_ticket(secret, expires_at_ms)
    }

    fn open_ticket(&self, ticket: &str) -> Option<(String, u64)> {
        self.licensing.open_ticket(ticket)
    }

    fn visible_since(&self, scope: &KeyScope) -> BoxFuture<'static, Result<u64, ApiError>> {
        let licensing = self.licensing.clone();
        let (key, number) = (scope.key_id.clone(), scope.number.clone());
        Box::pin(async move {
            licensing
                .key_visible_since(&key, &number)
                .await
                .map_err(ApiError::from)
        })
    }
}

impl Guard for Licensed {
    fn permissions(&self, customer_id: &str) -> DialPermissions {
        self.licensing.index().permissions(customer_id)
    }

    fn block_key(&self, key_id: &str, reason: &str) {
        let licensing = self.licensing.clone();
        let (key_id, reason) = (key_id.to_owned(), reason.to_owned());
        tokio::spawn(async move {
            // A plugin's calls draw on the same limits; tripping them stops
            // that installation's dialling, as a key's would.
            if let Some(iid) = key_id.strip_prefix("installation:") {
                if let Err(e) = licensing
                    .set_installation_dial_block(
                        &Actor::system(),
                        iid,
                        Some(&format!("automatic: {reason}")),
                    )
                    .await
                {
                    tracing::error!(installation = %iid, error = %e, "could not block dialling");
                }
                return;
            }
            if let Err(e) = licensing
                .set_key_block(
                    &Actor::system(),
                    &key_id,
                    Some(&format!("automatic: {reason}")),
                )
                .await
            {
                tracing::error!(key = %key_id, error = %e, "could not block key");
            }
        });
    }

    fn notify(&self, customer_id: &str, kind: &str, message: &str) {
        let licensing = self.licensing.clone();
        let (c, k, m) = (customer_id.to_owned(), kind.to_owned(), message.to_owned());
        tokio::spawn(async move {
            if let Err(e) = licensing.notify_customer(&c, &k, &m).await {
                tracing::error!(customer = %c, error = %e, "could not store a notification");
            }
        });
    }
}

/// The plugin runtime as the catalogue licensing validates configs against.
pub struct Catalog(pub PluginRuntime);

impl ConnectorCatalog for Catalog {
    fn secret_fields(&self, connector: &str) -> Option<Vec<String>> {
        self.0.get(connector).map(|p| p.manifest.secret_fields())
    }

    fn validate(
        &self,
        connector: &str,
        config: &serde_json::Value,
    ) -> BoxFuture<'static, Result<Vec<String>, String>> {
        let rt = self.0.clone();
        let (connector, config) = (connector.to_owned(), config.clone());
        Box::pin(async move {
            rt.validate_config(&connector, &config)
                .await
                .map(|issues| {
                    issues
                        .into_iter()
                        .map(|i| {
                            if i.field.is_empty() {
                                i.message
                            } else {
                                format!("{}: {}", i.field, i.message)
                            }
                        })
                        .collect()
                })
                .map_err(|e| e.to_string())
        })
    }
}

/// Telephony as the click-to-call originator.
pub struct Telephony(pub Arc<dyn Provider>);

impl Originator for Telephony {
    fn originate(&self, from: E164, to: E164) -> BoxFuture<'static, Result<String, String>> {
        let f = self.0.originate(Originate {
            phone: from,
            destination: to,
        });
        Box::pin(async move { f.await.map_err(|e| e.to_string()) })
    }
}

/// What plugins call back into: key-value state, click-to-call through the
/// same policy as the API, push-to-screen on the live stream.
pub struct HostBridge {
    kv: DbKv,
    licensed: Licensed,
    dialer: OnceLock<Arc<dyn Dialer>>,
    pipeline: OnceLock<crate::pipeline::Pipeline>,
}

impl HostBridge {
    /// New bridge; [`HostBridge::set_dialer`] completes it.
    pub fn new(licensed: Licensed, kv: DbKv) -> Self {
        Self {
            kv,
            licensed,
            dialer: OnceLock::new(),
            pipeline: OnceLock::new(),
        }
    }

    /// The dialer used for plugin-initiated calls.
    pub fn set_dialer(&self, dialer: Arc<dyn Dialer>) {
        let _ = self.dialer.set(dialer);
    }

    /// The pipeline whose live listeners see plugins' screen pushes.
    pub fn set_pipeline(&self, pipeline: crate::pipeline::Pipeline) {
        let _ = self.pipeline.set(pipeline);
    }
}

impl HostServices for HostBridge {
    fn kv_get(&self, installation: &str, key: &str) -> BoxFuture<'static, Option<Vec<u8>>> {
        self.kv.get_boxed(installation, key)
    }

    fn kv_set(
        &self,
        installation: &str,
        key: &str,
        value: Vec<u8>,
        ttl_secs: Option<u32>,
    ) -> BoxFuture<'static, Result<(), String>> {
        self.kv.set_boxed(installation, key, value, ttl_secs)
    }

    fn kv_delete(&self, installation: &str, key: &str) -> BoxFuture<'static, ()> {
        self.kv.delete_boxed(installation, key)
    }

    fn place_call(
        &self,
        installation: &Installation,
        from: String,
        to: String,
    ) -> BoxFuture<'static, Result<String, String>> {
        // A plugin may dial only from a number its installation is
        // actively licensed for, through the same policy as the API.
        let scope = E164::parse(&from).ok().and_then(|n| {
            self.licensed
                .targets(&n)
                .into_iter()
                .find(|t| t.installation.id == installation.id)
                .map(|t| KeyScope {
                    key_id: format!("installation:{}", installation.id),
                    license_id: t.license_id,
                    customer_id: t.customer_id,
                    installation_id: installation.id.clone(),
                    number: n,
                })
        });
        let dialer = self.dialer.get().cloned();
        let licensing = self.licensed.licensing.clone();
        let iid = installation.id.clone();
        Box::pin(async move {
            let scope = scope.ok_or_else(|| {
                format!(
                    "{from} has no active license for this installation; assign one in the portal"
                )
            })?;
            match licensing.installation_dial_block(&iid).await {
                Ok(None) => {}
                Ok(Some(why)) => {
                    return Err(format!(
                        "this installation may not place calls ({why}); an operator can lift the block: DELETE /api/v1/installations/{iid}/dial-block"
                    ));
                }
                Err(e) => return Err(format!("could not check the dialling block: {}", e.message)),
            }
            let dialer = dialer.ok_or("click-to-call is not available yet; retry shortly")?;
            dialer.place(scope, to).await.map_err(|e| e.message)
        })
    }

    fn push_to_screen(&self, installation: &Installation, event: CallEvent) {
        if let Some(p) = self.pipeline.get() {
            p.push_to_screen(&installation.id, event);
        }
    }
}
