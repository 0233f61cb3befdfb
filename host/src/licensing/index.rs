//! The in-memory view the call path reads: active licenses by number, key
//! hashes to scopes, installations, owners and dial permissions. Every
//! entry belongs to one license of one customer, so a change is applied by
//! reloading only what it concerns: one license ([`Index::load_license`],
//! [`Index::replace_license`]) for license and key changes, one customer's
//! rows ([`Index::load`] with a customer, [`Index::replace`]) for the rarer
//! changes of a customer, its accounts, consent, numbers or installations.
//! The cost of a key or license change does not grow with the customer.

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
    /// Active targets of each installation (webhook routes use the first).
    by_installation: HashMap<String, Vec<Target>>,
    by_key_hash: HashMap<String, KeyScope>,
    owners: HashMap<E164, String>,
    permissions: HashMap<String, DialPermissions>,
    /// The numbers each customer owns, and its active licenses, so that
    /// they can be taken out again when that customer changes.
    entries: HashMap<String, Entries>,
    /// What each active license put into the maps above.
    licenses: HashMap<String, LicenseEntries>,
}

/// A customer's numbers and active licenses.
#[derive(Default)]
struct Entries {
    owned: Vec<E164>,
    licenses: BTreeSet<String>,
}

/// A license taken out of a part: its entries, its target and its keys as
/// (key id, hash) pairs.
type TakenLicense = (LicenseEntries, Target, Vec<(String, String)>);

/// The keys one active license occupies in the index's maps.
struct LicenseEntries {
    customer: String,
    number: E164,
    installation: String,
    key_hashes: Vec<String>,
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

/// An installation row (id, customer, connector, config, sealed secrets,
/// granted hosts, deliver_internal) with its secrets opened.
fn installation_of(
    r: &sqlx::any::AnyRow,
    sealer: &Sealer,
) -> Result<(Arc<Installation>, bool), sqlx::Error> {
    let secrets: HashMap<String, String> = sealer
        .open(&r.try_get::<String, _>(4)?)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&s).ok())
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let hosts: Vec<String> = serde_json::from_str(&r.try_get::<String, _>(5)?).unwrap_or_default();
    let inst = Installation {
        id: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        plugin: r.try_get(2)?,
        config: serde_json::from_str(&r.try_get::<String, _>(3)?).unwrap_or_default(),
        secrets,
        granted_hosts: hosts
            .iter()
            .filter_map(|h| HostPattern::parse(h).ok())
            .collect(),
        allow_networks: r
            .try_get::<Option<String>, _>(7)?
            .and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok())
            .and_then(|l| crate::egress::networks("allow_networks", &l).ok())
            .unwrap_or_default(),
    };
    Ok((Arc::new(inst), r.try_get::<i32, _>(6)? != 0))
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
        for r in rows(c, "SELECT id, customer_id, connector, config, secrets_sealed, granted_hosts, deliver_internal, allow_networks FROM installations", "customer_id", customer).await? {
            installations.insert(r.try_get(0)?, installation_of(&r, sealer)?);
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
        self.remove_license(license_id);
        let target = Target {
            license_id: license_id.to_owned(),
            customer_id: customer_id.to_owned(),
            installation: installation.clone(),
            deliver_internal,
            lookup: false,
        };
        let mut key_hashes = Vec::with_capacity(keys.len());
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
            key_hashes.push(hash.clone());
        }
        let entries = self.entries.entry(customer_id.to_owned()).or_default();
        if !self.owners.contains_key(&number) {
            self.owners.insert(number.clone(), customer_id.to_owned());
            entries.owned.push(number.clone());
        }
        entries.licenses.insert(license_id.to_owned());
        self.by_installation
            .entry(installation.id.clone())
            .or_default()
            .push(target.clone());
        self.by_number
            .entry(number.clone())
            .or_default()
            .push(target);
        self.licenses.insert(
            license_id.to_owned(),
            LicenseEntries {
                customer: customer_id.to_owned(),
                number,
                installation: installation.id.clone(),
                key_hashes,
            },
        );
    }

    /// Takes license `lid` out (if it was active); returns its number when
    /// that number has no active license left.
    fn remove_license(&mut self, lid: &str) -> Option<E164> {
        let e = self.licenses.remove(lid)?;
        for h in &e.key_hashes {
            self.by_key_hash.remove(h);
        }
        if let Some(targets) = self.by_installation.get_mut(&e.installation) {
            targets.retain(|t| t.license_id != lid);
            if targets.is_empty() {
                self.by_installation.remove(&e.installation);
            }
        }
        if let Some(c) = self.entries.get_mut(&e.customer) {
            c.licenses.remove(lid);
        }
        let targets = self.by_number.get_mut(&e.number)?;
        targets.retain(|t| t.license_id != lid);
        if targets.is_empty() {
            self.by_number.remove(&e.number);
            return Some(e.number);
        }
        None
    }

    /// Loads license `lid` alone, by key lookups only: `Some` with it if it
    /// is active (provisioned, assigned, a live key, customer not blocked,
    /// number consented), by the same rules as [`Index::load`].
    pub(super) async fn load_license(
        c: &mut AnyConnection,
        sealer: &Sealer,
        lid: &str,
    ) -> anyhow::Result<Option<Self>> {
        let Some(l) = sqlx::query("SELECT customer_id, installation_id, number FROM licenses WHERE id = $1 AND state = 'provisioned' AND number IS NOT NULL")
            .bind(lid)
            .fetch_optional(&mut *c)
            .await?
        else {
            return Ok(None);
        };
        let cid: String = l.try_get(0)?;
        let iid: String = l.try_get(1)?;
        let Ok(number) = E164::parse(&l.try_get::<String, _>(2)?) else {
            return Ok(None);
        };
        let blocked = sqlx::query("SELECT blocked_reason FROM customers WHERE id = $1")
            .bind(&cid)
            .fetch_optional(&mut *c)
            .await?
            .map(|r| r.try_get::<Option<String>, _>(0))
            .transpose()?
            .is_none_or(|reason| reason.is_some());
        // Numbers entered by an operator (no account) need no consent.
        let consented = match sqlx::query("SELECT n.telephony_account_id, t.consent_at_ms FROM numbers n LEFT JOIN telephony_accounts t ON t.id = n.telephony_account_id WHERE n.e164 = $1 AND n.customer_id = $2")
            .bind(number.as_str())
            .bind(&cid)
            .fetch_optional(&mut *c)
            .await?
        {
            None => false,
            Some(r) => {
                r.try_get::<Option<String>, _>(0)?.is_none()
                    || r.try_get::<Option<i64>, _>(1)?.is_some()
            }
        };
        let keys: Vec<(String, String)> = sqlx::query("SELECT id, secret_hash FROM license_keys WHERE license_id = $1 AND revoked_at_ms IS NULL AND blocked_reason IS NULL")
            .bind(lid)
            .fetch_all(&mut *c)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        if blocked || !consented || keys.is_empty() {
            return Ok(None);
        }
        let Some(r) = sqlx::query("SELECT id, customer_id, connector, config, secrets_sealed, granted_hosts, deliver_internal, allow_networks FROM installations WHERE id = $1")
            .bind(&iid)
            .fetch_optional(&mut *c)
            .await?
        else {
            return Ok(None);
        };
        let (inst, internal) = installation_of(&r, sealer)?;
        let mut part = Index::default();
        part.add(lid, &cid, number, inst, internal, &keys);
        Ok(Some(part))
    }

    /// Takes license `lid` out of this part: its entries, its target and
    /// its keys as (key id, hash) pairs.
    fn take_license(&mut self, lid: &str) -> Option<TakenLicense> {
        let e = self.licenses.remove(lid)?;
        let target = self
            .by_number
            .get(&e.number)?
            .iter()
            .find(|t| t.license_id == lid)?
            .clone();
        let keys = e
            .key_hashes
            .iter()
            .filter_map(|h| {
                self.by_key_hash
                    .get(h)
                    .map(|k| (k.key_id.clone(), h.clone()))
            })
            .collect();
        Some((e, target, keys))
    }

    /// Replaces license `lid` with `part` (its [`Index::load_license`]);
    /// returns the monitored numbers that went away and those that came.
    pub fn replace_license(&mut self, lid: &str, part: Option<Index>) -> (Vec<E164>, Vec<E164>) {
        let mut numbers: Vec<E164> = self
            .licenses
            .get(lid)
            .map(|e| e.number.clone())
            .into_iter()
            .collect();
        let new = part.as_ref().and_then(|p| p.licenses.get(lid));
        if let Some(e) = new
            && !numbers.contains(&e.number)
        {
            numbers.push(e.number.clone());
        }
        let was: Vec<bool> = numbers
            .iter()
            .map(|n| self.by_number.contains_key(n))
            .collect();
        self.remove_license(lid);
        if let Some((e, target, keys)) = part.and_then(|mut p| p.take_license(lid)) {
            self.add(
                lid,
                &e.customer,
                e.number,
                target.installation,
                target.deliver_internal,
                &keys,
            );
        }
        let (mut gone, mut came) = (Vec::new(), Vec::new());
        for (n, was) in numbers.into_iter().zip(was) {
            match (was, self.by_number.contains_key(&n)) {
                (true, false) => gone.push(n),
                (false, true) => came.push(n),
                _ => {}
            }
        }
        (gone, came)
    }

    /// Replaces everything of `customer` with `part` (that customer's
    /// [`Index::load`]); returns the monitored numbers that went away and
    /// those that came.
    pub(super) fn replace(&mut self, customer: &str, mut part: Index) -> (Vec<E164>, Vec<E164>) {
        let old = self.entries.remove(customer).unwrap_or_default();
        let mut before = BTreeSet::new();
        for lid in &old.licenses {
            if let Some(e) = self.licenses.get(lid) {
                before.insert(e.number.clone());
            }
            self.remove_license(lid);
        }
        for n in &old.owned {
            self.owners.remove(n);
        }
        self.permissions.remove(customer);
        self.permissions.extend(part.permissions.drain());
        let new = part.entries.remove(customer).unwrap_or_default();
        for n in &new.owned {
            if let Some(o) = part.owners.remove(n) {
                self.owners.insert(n.clone(), o);
            }
        }
        self.entries.entry(customer.to_owned()).or_default().owned = new.owned;
        let mut after = BTreeSet::new();
        for lid in &new.licenses {
            if let Some((e, target, keys)) = part.take_license(lid) {
                after.insert(e.number.clone());
                self.add(
                    lid,
                    customer,
                    e.number,
                    target.installation,
                    target.deliver_internal,
                    &keys,
                );
            }
        }
        let gone = before
            .difference(&after)
            .filter(|n| !self.by_number.contains_key(*n))
            .cloned()
            .collect();
        let came = after.difference(&before).cloned().collect();
        (gone, came)
    }

    /// Active targets of a number.
    pub fn targets(&self, number: &E164) -> &[Target] {
        self.by_number.get(number).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The active target of an installation.
    pub fn installation(&self, id: &str) -> Option<&Target> {
        self.by_installation.get(id).and_then(|t| t.first())
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
