//! The in-memory view the call path reads: active licenses by number, key
//! hashes to scopes, installations, owners and dial permissions. Rebuilt
//! whole after every change and swapped in atomically.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sqlx::Row;

use super::crypto::Sealer;
use crate::api::business::KeyScope;
use crate::dialing::DialPermissions;
use crate::number::E164;
use crate::pipeline::Target;
use crate::plugins::Installation;
use crate::plugins::capabilities::HostPattern;
use crate::store::Db;

/// A snapshot of everything the call path needs.
#[derive(Default)]
pub struct Index {
    by_number: HashMap<E164, Vec<Target>>,
    by_installation: HashMap<String, Target>,
    by_key_hash: HashMap<String, KeyScope>,
    owners: HashMap<E164, String>,
    permissions: HashMap<String, DialPermissions>,
}

impl Index {
    pub(super) async fn load(db: &Db, sealer: &Sealer) -> anyhow::Result<Self> {
        let pool = &db.pool;
        let mut blocked: HashMap<String, bool> = HashMap::new();
        let mut permissions = HashMap::new();
        for r in sqlx::query(
            "SELECT id, blocked_reason, allow_international, allow_premium FROM customers",
        )
        .fetch_all(pool)
        .await?
        {
            let id: String = r.try_get(0)?;
            blocked.insert(id.clone(), r.try_get::<Option<String>, _>(1)?.is_some());
            permissions.insert(
                id,
                DialPermissions {
                    international: r.try_get::<i32, _>(2)? != 0,
                    premium_rate: r.try_get::<i32, _>(3)? != 0,
                },
            );
        }
        let mut consented: HashMap<String, bool> = HashMap::new();
        for r in sqlx::query("SELECT id, consent_at_ms FROM telephony_accounts")
            .fetch_all(pool)
            .await?
        {
            consented.insert(r.try_get(0)?, r.try_get::<Option<i64>, _>(1)?.is_some());
        }
        let mut owners = HashMap::new();
        let mut consent_ok: HashMap<E164, bool> = HashMap::new();
        for r in sqlx::query("SELECT e164, customer_id, telephony_account_id FROM numbers")
            .fetch_all(pool)
            .await?
        {
            let Ok(n) = E164::parse(&r.try_get::<String, _>(0)?) else {
                continue;
            };
            let account: Option<String> = r.try_get(2)?;
            // Numbers entered by an operator need no account consent.
            let ok = account
                .map(|a| consented.get(&a).copied().unwrap_or(false))
                .unwrap_or(true);
            consent_ok.insert(n.clone(), ok);
            owners.insert(n, r.try_get(1)?);
        }
        let mut installations: HashMap<String, (Arc<Installation>, bool)> = HashMap::new();
        for r in sqlx::query("SELECT id, customer_id, connector, config, secrets_sealed, granted_hosts, deliver_internal FROM installations").fetch_all(pool).await? {
            let id: String = r.try_get(0)?;
            let secrets: HashMap<String, String> = sealer
                .open(&r.try_get::<String, _>(4)?)
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&s).ok())
                .map(|m| m.into_iter().map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect())
                .unwrap_or_default();
            let hosts: Vec<String> = serde_json::from_str(&r.try_get::<String, _>(5)?).unwrap_or_default();
            let inst = Installation {
                id: id.clone(),
                customer_id: r.try_get(1)?,
                plugin: r.try_get(2)?,
                config: serde_json::from_str(&r.try_get::<String, _>(3)?).unwrap_or_default(),
                secrets,
                granted_hosts: hosts.iter().filter_map(|h| HostPattern::parse(h).ok()).collect(),
            };
            installations.insert(id, (Arc::new(inst), r.try_get::<i32, _>(6)? != 0));
        }
        let mut keys: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for r in sqlx::query("SELECT id, license_id, secret_hash FROM license_keys WHERE revoked_at_ms IS NULL AND blocked_reason IS NULL").fetch_all(pool).await? {
            keys.entry(r.try_get(1)?).or_default().push((r.try_get(0)?, r.try_get(2)?));
        }
        let mut idx = Index {
            owners,
            permissions,
            ..Default::default()
        };
        for r in sqlx::query("SELECT id, customer_id, installation_id, number FROM licenses WHERE state = 'provisioned' AND number IS NOT NULL").fetch_all(pool).await? {
            let lid: String = r.try_get(0)?;
            let cid: String = r.try_get(1)?;
            let iid: String = r.try_get(2)?;
            let Ok(number) = E164::parse(&r.try_get::<String, _>(3)?) else { continue };
            let active = !blocked.get(&cid).copied().unwrap_or(true)
                && consent_ok.get(&number).copied().unwrap_or(false)
                && keys.get(&lid).is_some_and(|k| !k.is_empty());
            let Some((inst, internal)) = installations.get(&iid) else { continue };
            if !active {
                continue;
            }
            idx.add(&lid, &cid, number, inst.clone(), *internal, &keys[&lid]);
        }
        Ok(idx)
    }

    /// Adds one active license with its keys `(key id, secret hash)`.
    pub fn add(
        &mut self,
        license_id: &str,
        customer_id: &str,
        number: E164,
        installation: Arc<Installation>,
        deliver_internal: bool,
        keys: &[(String, String)],
    ) {
        let target = Target {
            license_id: license_id.to_owned(),
            customer_id: customer_id.to_owned(),
            installation: installation.clone(),
            deliver_internal,
            lookup: false,
        };
        for (kid, hash) in keys {
            self.by_key_hash.insert(
                hash.clone(),
                KeyScope {
                    key_id: kid.clone(),
                    license_id: license_id.to_owned(),
                    customer_id: customer_id.to_owned(),
                    installation_id: installation.id.clone(),
                    number: number.clone(),
                },
            );
        }
        self.owners
            .entry(number.clone())
            .or_insert_with(|| customer_id.to_owned());
        self.by_installation
            .entry(installation.id.clone())
            .or_insert_with(|| target.clone());
        self.by_number.entry(number).or_default().push(target);
    }

    /// Active targets of a number.
    pub fn targets(&self, number: &E164) -> &[Target] {
        self.by_number.get(number).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The active target of an installation.
    pub fn installation(&self, id: &str) -> Option<&Target> {
        self.by_installation.get(id)
    }

    /// The scope of a presented key (by its hash), if active.
    pub fn key(&self, secret: &str) -> Option<&KeyScope> {
        let h = super::keys::hash(secret);
        self.by_key_hash.get(&h)
    }

    /// Owner of a number.
    pub fn owner(&self, number: &E164) -> Option<&String> {
        self.owners.get(number)
    }

    /// Dial permissions of a customer.
    pub fn permissions(&self, customer: &str) -> DialPermissions {
        self.permissions.get(customer).cloned().unwrap_or_default()
    }

    /// Numbers with at least one active license.
    pub fn monitored(&self) -> BTreeSet<E164> {
        self.by_number.keys().cloned().collect()
    }
}
