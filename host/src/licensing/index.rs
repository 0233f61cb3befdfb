//! The in-memory view the call path reads: active licenses by number, key
//! hashes to scopes, installations, owners and dial permissions. Every
//! entry belongs to one customer, so a change is applied by reloading the
//! changed customers' rows alone ([`Index::load`] with a customer) and
//! swapping their entries in place ([`Index::replace`]): the cost of a
//! change grows with that customer, not with the service.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sqlx::{AnyConnection, Row};

use super::crypto::Sealer;
use crate::api::business::KeyScope;
use crate::dialing::DialPermissions;
use crate::number::E164;
use crate::pipeline::Target;
use crate::plugins::Installation;
use crate::plugins::capabilities::HostPattern;

/// Everything the call path needs.
#[derive(Default)]
pub struct Index {
    by_number: HashMap<E164, Vec<Target>>,
    by_installation: HashMap<String, Target>,
    by_key_hash: HashMap<String, KeyScope>,
    owners: HashMap<E164, String>,
    permissions: HashMap<String, DialPermissions>,
    /// What each customer put into the maps above, so that it can be
    /// taken out again when that customer changes.
    entries: HashMap<String, Entries>,
}

/// The keys one customer's rows occupy in the index's maps.
#[derive(Default)]
struct Entries {
    numbers: BTreeSet<E164>,
    installations: Vec<String>,
    key_hashes: Vec<String>,
    owned: Vec<E164>,
}

/// `query` restricted to one customer's rows by `column` when `customer`
/// is given (the customer id is then bound as `$1`).
fn scoped(query: &str, column: &str, customer: Option<&str>) -> String {
    match customer {
        None => query.to_owned(),
        Some(_) if query.contains(" WHERE ") => format!("{query} AND {column} = $1"),
        Some(_) => format!("{query} WHERE {column} = $1"),
    }
}

pub(super) async fn rows(
    c: &mut AnyConnection,
    query: &str,
    column: &str,
    customer: Option<&str>,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let sql = scoped(query, column, customer);
    let mut q = sqlx::query(&sql);
    if let Some(cid) = customer {
        q = q.bind(cid.to_owned());
    }
    q.fetch_all(&mut *c).await
}

impl Index {
    /// Loads the whole index (`customer` `None`), or the part of one
    /// customer, from the database.
    pub(super) async fn load(
        c: &mut AnyConnection,
        sealer: &Sealer,
        customer: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut blocked: HashMap<String, bool> = HashMap::new();
        let mut permissions = HashMap::new();
        for r in rows(
            c,
            "SELECT id, blocked_reason, allow_international, allow_premium FROM customers",
            "id",
            customer,
        )
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
        for r in rows(
            c,
            "SELECT id, consent_at_ms FROM telephony_accounts",
            "customer_id",
            customer,
        )
        .await?
        {
            consented.insert(r.try_get(0)?, r.try_get::<Option<i64>, _>(1)?.is_some());
        }
        let mut idx = Index {
            permissions,
            ..Default::default()
        };
        let mut consent_ok: HashMap<E164, bool> = HashMap::new();
        for r in rows(
            c,
            "SELECT e164, customer_id, telephony_account_id FROM numbers",
            "customer_id",
            customer,
        )
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
            let owner: String = r.try_get(1)?;
            idx.entries
                .entry(owner.clone())
                .or_default()
                .owned
                .push(n.clone());
            idx.owners.insert(n, owner);
        }
        let mut installations: HashMap<String, (Arc<Installation>, bool)> = HashMap::new();
        for r in rows(c, "SELECT id, customer_id, connector, config, secrets_sealed, granted_hosts, deliver_internal FROM installations", "customer_id", customer).await? {
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
        for r in rows(c, "SELECT k.id, k.license_id, k.secret_hash FROM license_keys k JOIN licenses l ON l.id = k.license_id WHERE k.revoked_at_ms IS NULL AND k.blocked_reason IS NULL", "l.customer_id", customer).await? {
            keys.entry(r.try_get(1)?).or_default().push((r.try_get(0)?, r.try_get(2)?));
        }
        for r in rows(c, "SELECT id, customer_id, installation_id, number FROM licenses WHERE state = 'provisioned' AND number IS NOT NULL", "customer_id", customer).await? {
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
        let entries = self.entries.entry(customer_id.to_owned()).or_default();
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
            entries.key_hashes.push(hash.clone());
        }
        if !self.owners.contains_key(&number) {
            self.owners.insert(number.clone(), customer_id.to_owned());
            entries.owned.push(number.clone());
        }
        if !self.by_installation.contains_key(&installation.id) {
            self.by_installation
                .insert(installation.id.clone(), target.clone());
            entries.installations.push(installation.id.clone());
        }
        entries.numbers.insert(number.clone());
        self.by_number.entry(number).or_default().push(target);
    }

    /// Replaces everything of `customer` with `part` (that customer's
    /// [`Index::load`]); returns the monitored numbers that went away and
    /// those that came.
    pub(super) fn replace(&mut self, customer: &str, mut part: Index) -> (Vec<E164>, Vec<E164>) {
        let old = self.entries.remove(customer).unwrap_or_default();
        for h in &old.key_hashes {
            self.by_key_hash.remove(h);
        }
        for i in &old.installations {
            self.by_installation.remove(i);
        }
        for n in &old.owned {
            self.owners.remove(n);
        }
        for n in &old.numbers {
            if let Some(targets) = self.by_number.get_mut(n) {
                targets.retain(|t| t.customer_id != customer);
                if targets.is_empty() {
                    self.by_number.remove(n);
                }
            }
        }
        self.permissions.remove(customer);
        let new = part.entries.remove(customer).unwrap_or_default();
        let gone = old.numbers.difference(&new.numbers).cloned().collect();
        let came = new.numbers.difference(&old.numbers).cloned().collect();
        self.by_key_hash.extend(part.by_key_hash);
        self.by_installation.extend(part.by_installation);
        self.owners.extend(part.owners);
        self.permissions.extend(part.permissions);
        for (n, targets) in part.by_number {
            self.by_number.entry(n).or_default().extend(targets);
        }
        self.entries.insert(customer.to_owned(), new);
        (gone, came)
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
