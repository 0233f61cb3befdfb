//! Host configuration: embedded defaults, overridden by a TOML file, then by
//! `LEANSYNC_*` environment variables, then by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Everything `leansync serve` needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API, portal and widget listen on.
    pub listen: SocketAddr,
    /// Directory for the SQLite database, compiled-plugin cache and keys.
    pub data_dir: PathBuf,
    /// Directory holding one folder per connector plugin.
    pub plugins_dir: PathBuf,
    /// sqlx database URL; empty means SQLite in `data_dir/leansync.db`.
    pub database_url: String,
    /// Plugin sandbox limits.
    pub plugins: PluginLimits,
    /// Telephony provider selection and settings.
    pub telephony: TelephonyConfig,
    /// Days after which call event data (personal data) is purged.
    pub retention_days: u32,
    /// File with the 32-byte key that encrypts stored secrets; empty means
    /// `data_dir/secret.key` (created on first start).
    pub secret_key_file: PathBuf,
    /// Click-to-call rate limits and the burst rule.
    pub dialing: crate::dialing::RateLimits,
    /// Seconds SIGTERM waits for in-flight deliveries.
    pub drain_timeout_secs: u64,
    /// Compiled-plugin cache; empty means `data_dir/cache`.
    pub cache_dir: PathBuf,
    /// URL that receives every customer notification (consent granted or
    /// revoked) as a JSON POST; empty: notifications are only listed.
    pub notify_webhook: String,
    /// Days a new or rotated admin API token works (0: until rotated).
    pub admin_token_ttl_days: u32,
    /// Retry schedule of deliveries to business apps.
    pub delivery: DeliveryConfig,
}

/// Retry schedule of deliveries: attempt `n` waits about
/// `base_backoff_ms * 2^(n-1)` (with jitter), at most `max_backoff_secs`
/// unless the app asked for longer (Retry-After); after `max_attempts` the
/// delivery is a dead letter an admin can re-drive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Attempts before a delivery becomes a dead letter (1 to 100).
    pub max_attempts: u32,
    /// First retry delay in milliseconds (10 to 60000).
    pub base_backoff_ms: u64,
    /// Longest retry delay in seconds (1 to 86400).
    pub max_backoff_secs: u64,
    /// Seconds a delivery stays its host's without renewal (2 to 300):
    /// after a host dies, the others take its pending deliveries over
    /// within this.
    pub lease_secs: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_backoff_ms: 500,
            max_backoff_secs: 300,
            lease_secs: 6,
        }
    }
}

impl DeliveryConfig {
    /// Refuses values outside the documented bounds, naming the key.
    pub fn check(&self) -> anyhow::Result<()> {
        let bad = |key: &str, v: u64, lo: u64, hi: u64| {
            anyhow::anyhow!(
                "delivery.{key} = {v} is out of range: use {lo} to {hi} (env LEANSYNC_DELIVERY_{})",
                key.to_uppercase()
            )
        };
        if !(1..=100).contains(&self.max_attempts) {
            return Err(bad("max_attempts", self.max_attempts.into(), 1, 100));
        }
        if !(10..=60_000).contains(&self.base_backoff_ms) {
            return Err(bad("base_backoff_ms", self.base_backoff_ms, 10, 60_000));
        }
        if !(1..=86_400).contains(&self.max_backoff_secs) {
            return Err(bad("max_backoff_secs", self.max_backoff_secs, 1, 86_400));
        }
        if !(2..=300).contains(&self.lease_secs) {
            return Err(bad("lease_secs", self.lease_secs, 2, 300));
        }
        if self.base_backoff_ms > self.max_backoff_secs * 1000 {
            return Err(anyhow::anyhow!(
                "delivery.base_backoff_ms ({}) is longer than delivery.max_backoff_secs ({} s): raise the maximum or lower the base",
                self.base_backoff_ms,
                self.max_backoff_secs
            ));
        }
        Ok(())
    }
}

/// Limits applied to every plugin invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Wall-clock deadline for one export call, milliseconds.
    pub call_timeout_ms: u64,
    /// Linear memory cap per instance, MiB.
    pub memory_limit_mib: u64,
    /// Consecutive failures after which a plugin is shown as `degraded`.
    pub degraded_after: u32,
    /// Upper bound on concurrently live instances across all plugins.
    pub max_instances: u32,
    /// Instances per plugin created ahead of time, off the call path, so a
    /// call does not wait for instantiation. Each is used for one call only
    /// (no state crosses calls or installations). 0 (the default) disables:
    /// on the 2-core machines measured so far (BENCHMARKS.md) a warm
    /// instance's call was not faster than instantiating inline.
    pub warm_instances: u32,
    /// Address ranges plugins may reach although they are loopback,
    /// private, link-local or otherwise not public (e.g. `["10.20.0.0/16"]`
    /// for an app in the operator's own network). Empty, the default:
    /// public addresses only. The host's own listener is never reachable.
    pub allow_networks: Vec<String>,
    /// Whether operators may load a connector from any folder on this host
    /// (`POST /api/v1/plugins/dev`, what `leansync plugin watch` uses).
    /// Off by default: a production host loads only its plugins directory.
    pub dev_installs: bool,
}

/// Which telephony provider the host uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelephonyConfig {
    /// `sim` (built-in simulated PBX, the default) or `sip`.
    pub provider: String,
    /// Settings of the `sip` provider.
    pub sip: crate::telephony::sip::SipConfig,
    /// Address ranges customers' `sip` telephony accounts may connect to
    /// although they are not public (by default only public PBXs).
    pub allow_networks: Vec<String>,
    /// Whether operators may make simulated (`sim`) telephony accounts for
    /// customers (demos, tests). Customer admins never can; a production
    /// host turns them off.
    pub sim_accounts: bool,
    /// Seconds a host keeps a SIP connection without renewing its lease
    /// (2 to 60; several hosts on PostgreSQL): after a host dies, another
    /// registers and subscribes its connections within about this.
    pub lease_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            data_dir: PathBuf::from("./data"),
            plugins_dir: PathBuf::from("./plugins"),
            database_url: String::new(),
            plugins: PluginLimits::default(),
            telephony: TelephonyConfig::default(),
            retention_days: 90,
            secret_key_file: PathBuf::new(),
            dialing: crate::dialing::RateLimits::default(),
            drain_timeout_secs: 10,
            cache_dir: PathBuf::new(),
            notify_webhook: String::new(),
            admin_token_ttl_days: crate::licensing::DEFAULT_TOKEN_TTL_DAYS,
            delivery: DeliveryConfig::default(),
        }
    }
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            call_timeout_ms: 5_000,
            memory_limit_mib: 64,
            degraded_after: 5,
            max_instances: 1_000,
            warm_instances: 0,
            allow_networks: Vec::new(),
            dev_installs: false,
        }
    }
}

impl Default for TelephonyConfig {
    fn default() -> Self {
        Self {
            provider: "sim".into(),
            sip: Default::default(),
            allow_networks: Vec::new(),
            sim_accounts: true,
            lease_secs: 6,
        }
    }
}

impl Config {
    /// Loads the optional TOML file, then applies `LEANSYNC_*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| {
                    format!(
                        "config file {} is invalid (see README.md, section Configuration, for the keys)",
                        path.display()
                    )
                })?
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = get("LEANSYNC_LISTEN") {
            self.listen = v.parse().with_context(|| {
                format!("LEANSYNC_LISTEN='{v}' is not an address like 127.0.0.1:8080")
            })?;
        }
        if let Some(v) = get("LEANSYNC_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("LEANSYNC_PLUGINS_DIR") {
            self.plugins_dir = v.into();
        }
        if let Some(v) = get("LEANSYNC_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("LEANSYNC_SIP_SERVER") {
            self.telephony.sip.server = v;
        }
        if let Some(v) = get("LEANSYNC_SIP_DOMAIN") {
            self.telephony.sip.domain = v;
        }
        if let Some(v) = get("LEANSYNC_SIP_USERNAME") {
            self.telephony.sip.username = v;
        }
        if let Some(v) = get("LEANSYNC_SIP_PASSWORD") {
            self.telephony.sip.password = v;
        }
        if let Some(v) = get("LEANSYNC_SIP_BIND") {
            self.telephony.sip.bind = v;
        }
        if let Some(v) = get("LEANSYNC_SIP_TRANSPORT") {
            self.telephony.sip.transport = v
                .parse()
                .map_err(|e| anyhow::anyhow!("LEANSYNC_SIP_TRANSPORT: {e}"))?;
        }
        if let Some(v) = get("LEANSYNC_SIP_REGISTER") {
            self.telephony.sip.register = v.parse().map_err(|_| {
                anyhow::anyhow!("LEANSYNC_SIP_REGISTER='{v}' is neither true nor false")
            })?;
        }
        for (var, field) in [
            (
                "LEANSYNC_SIP_RING_TIMEOUT_SECS",
                &mut self.telephony.sip.ring_timeout_secs,
            ),
            (
                "LEANSYNC_SIP_ANSWER_TIMEOUT_SECS",
                &mut self.telephony.sip.answer_timeout_secs,
            ),
            (
                "LEANSYNC_SIP_KEEPALIVE_SECS",
                &mut self.telephony.sip.keepalive_secs,
            ),
        ] {
            if let Some(v) = get(var) {
                *field = v.parse().map_err(|_| {
                    anyhow::anyhow!("{var}='{v}' is not a number of seconds like 30")
                })?;
            }
        }
        if let Some(v) = get("LEANSYNC_NOTIFY_WEBHOOK") {
            self.notify_webhook = v;
        }
        if let Some(v) = get("LEANSYNC_CACHE_DIR") {
            self.cache_dir = v.into();
        }
        if let Some(v) = get("LEANSYNC_SECRET_KEY_FILE") {
            self.secret_key_file = v.into();
        }
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let Some(v) = get("LEANSYNC_PLUGINS_ALLOW_NETWORKS") {
            self.plugins.allow_networks = list(v);
        }
        if let Some(v) = get("LEANSYNC_TELEPHONY_ALLOW_NETWORKS") {
            self.telephony.allow_networks = list(v);
        }
        if let Some(v) = get("LEANSYNC_ADMIN_TOKEN_TTL_DAYS") {
            self.admin_token_ttl_days = v.parse().map_err(|_| {
                anyhow::anyhow!(
                    "LEANSYNC_ADMIN_TOKEN_TTL_DAYS='{v}' is not a number of days like 90 (0: tokens never expire)"
                )
            })?;
        }
        if let Some(v) = get("LEANSYNC_PLUGINS_DEV_INSTALLS") {
            self.plugins.dev_installs = v.parse().map_err(|_| {
                anyhow::anyhow!("LEANSYNC_PLUGINS_DEV_INSTALLS='{v}' is neither true nor false")
            })?;
        }
        if let Some(v) = get("LEANSYNC_TELEPHONY_SIM_ACCOUNTS") {
            self.telephony.sim_accounts = v.trim().parse().map_err(|_| {
                anyhow::anyhow!("LEANSYNC_TELEPHONY_SIM_ACCOUNTS='{v}' is neither true nor false")
            })?;
        }
        if let Some(v) = get("LEANSYNC_TELEPHONY_PROVIDER") {
            self.telephony.provider = v;
        }
        let number = |var: &str, v: String| -> anyhow::Result<u64> {
            v.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{var}='{v}' is not a whole number"))
        };
        if let Some(v) = get("LEANSYNC_DELIVERY_MAX_ATTEMPTS") {
            self.delivery.max_attempts = number("LEANSYNC_DELIVERY_MAX_ATTEMPTS", v)?
                .try_into()
                .unwrap_or(u32::MAX);
        }
        if let Some(v) = get("LEANSYNC_DELIVERY_BASE_BACKOFF_MS") {
            self.delivery.base_backoff_ms = number("LEANSYNC_DELIVERY_BASE_BACKOFF_MS", v)?;
        }
        if let Some(v) = get("LEANSYNC_DELIVERY_MAX_BACKOFF_SECS") {
            self.delivery.max_backoff_secs = number("LEANSYNC_DELIVERY_MAX_BACKOFF_SECS", v)?;
        }
        if let Some(v) = get("LEANSYNC_DELIVERY_LEASE_SECS") {
            self.delivery.lease_secs = number("LEANSYNC_DELIVERY_LEASE_SECS", v)?;
        }
        if let Some(v) = get("LEANSYNC_TELEPHONY_LEASE_SECS") {
            self.telephony.lease_secs = number("LEANSYNC_TELEPHONY_LEASE_SECS", v)?;
        }
        if let Some(v) = get("LEANSYNC_PLUGINS_CALL_TIMEOUT_MS") {
            self.plugins.call_timeout_ms = number("LEANSYNC_PLUGINS_CALL_TIMEOUT_MS", v)?;
        }
        if let Some(v) = get("LEANSYNC_PLUGINS_DEGRADED_AFTER") {
            self.plugins.degraded_after = number("LEANSYNC_PLUGINS_DEGRADED_AFTER", v)?
                .try_into()
                .unwrap_or(u32::MAX);
        }
        self.delivery.check()?;
        if !(2..=60).contains(&self.telephony.lease_secs) {
            anyhow::bail!(
                "telephony.lease_secs = {} is out of range: use 2 to 60 (env LEANSYNC_TELEPHONY_LEASE_SECS)",
                self.telephony.lease_secs
            );
        }
        Ok(())
    }

    /// The database URL in force: the configured one or SQLite in the data dir.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("leansync.db").display()
            )
        } else {
            self.database_url.clone()
        }
    }

    /// The key file that encrypts stored secrets.
    pub fn secret_key_path(&self) -> PathBuf {
        if self.secret_key_file.as_os_str().is_empty() {
            self.data_dir.join("secret.key")
        } else {
            self.secret_key_file.clone()
        }
    }

    /// Where compiled plugin artifacts are cached.
    pub fn cache_dir(&self) -> PathBuf {
        if self.cache_dir.as_os_str().is_empty() {
            self.data_dir.join("cache")
        } else {
            self.cache_dir.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_defaults() {
        let mut cfg: Config = toml::from_str("listen = \"127.0.0.1:9000\"").unwrap();
        cfg.apply_env(|k| (k == "LEANSYNC_DATA_DIR").then(|| "/tmp/x".to_string()))
            .unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.telephony.provider, "sim");
    }

    #[test]
    fn the_retry_schedule_is_bounded_and_names_the_key() {
        let mut cfg: Config =
            toml::from_str("[delivery]\nmax_attempts = 3\nbase_backoff_ms = 100").unwrap();
        cfg.apply_env(|_| None).unwrap();
        assert_eq!(
            (cfg.delivery.max_attempts, cfg.delivery.base_backoff_ms),
            (3, 100)
        );
        let err = Config::default()
            .apply_env(|k| (k == "LEANSYNC_DELIVERY_MAX_ATTEMPTS").then(|| "0".to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("delivery.max_attempts = 0") && err.contains("1 to 100"),
            "{err}"
        );
        let mut cfg: Config =
            toml::from_str("[delivery]\nbase_backoff_ms = 5000\nmax_backoff_secs = 2").unwrap();
        let err = cfg.apply_env(|_| None).unwrap_err().to_string();
        assert!(
            err.contains("longer than delivery.max_backoff_secs"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("lisen = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn sip_transport_and_registration_come_from_file_or_env() {
        let cfg: Config =
            toml::from_str("[telephony.sip]\ntransport = \"tcp\"\nregister = false").unwrap();
        assert_eq!(
            cfg.telephony.sip.transport,
            crate::telephony::sip::SipTransport::Tcp
        );
        assert!(!cfg.telephony.sip.register);
        let mut cfg = Config::default();
        assert!(cfg.telephony.sip.register, "registers by default");
        cfg.apply_env(|k| match k {
            "LEANSYNC_SIP_TRANSPORT" => Some("tcp".into()),
            "LEANSYNC_SIP_REGISTER" => Some("false".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            cfg.telephony.sip.transport,
            crate::telephony::sip::SipTransport::Tcp
        );
        assert!(!cfg.telephony.sip.register);
    }

    #[test]
    fn a_bad_sip_transport_names_the_key_and_the_allowed_values() {
        let err = toml::from_str::<Config>("[telephony.sip]\ntransport = \"sctp\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("transport") && err.contains("'sctp'") && err.contains("\"tcp\""),
            "{err}"
        );
        let err = Config::default()
            .apply_env(|k| (k == "LEANSYNC_SIP_TRANSPORT").then(|| "tls".to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LEANSYNC_SIP_TRANSPORT") && err.contains("not supported yet"),
            "{err}"
        );
        let err = Config::default()
            .apply_env(|k| (k == "LEANSYNC_SIP_REGISTER").then(|| "yes please".to_string()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("LEANSYNC_SIP_REGISTER='yes please'"), "{err}");
    }

    #[test]
    fn bad_listen_env_names_the_variable() {
        let mut cfg = Config::default();
        let err = cfg
            .apply_env(|k| (k == "LEANSYNC_LISTEN").then(|| "nope".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("LEANSYNC_LISTEN='nope'"));
    }
}
