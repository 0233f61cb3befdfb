//! The one path every licensing mutation takes: its writes, its audit
//! entry and its change record commit in one transaction, or none of them
//! do. The change records form the change feed every host follows to keep
//! its in-memory index current (see [`Licensing::follow_changes`]).
//!
//! Mutations are serialised: on SQLite by the database's write turn, on
//! PostgreSQL by one transaction-scoped advisory lock taken first. So the
//! checks a mutation makes inside its transaction still hold when it
//! commits, and change sequence numbers commit in order — a host that has
//! applied change `n` has seen every change before it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Actor, Index, Licensing, Lines, Result};
use crate::call::now_ms;
use crate::number::E164;
use crate::store::{Backend, WriteTx};

/// The advisory lock every licensing mutation holds on PostgreSQL
/// ("LSLIC" in ASCII).
const MUTATION_LOCK: i64 = 0x4c_53_4c_49_43;

/// The PostgreSQL notification channel that carries new change sequences.
pub(super) const CHANGES_CHANNEL: &str = "leansync_changes";

/// More new changes than this at once (a host back from a long outage)
/// are applied by loading the whole index instead.
const WHOLE_RELOAD_AFTER: i64 = 10_000;

/// How often a host looks for changes it was not notified of.
const CATCH_UP_EVERY: Duration = Duration::from_secs(1);

/// A licensing mutation in progress: statements run on [`Mutation::conn`];
/// [`Licensing::commit`] records and commits it. Dropped without commit,
/// nothing of it is stored.
pub(super) struct Mutation {
    tx: WriteTx,
    notifications: Vec<(String, String, String)>,
    /// Further customers the change touches (beside its record's).
    also: Vec<String>,
}

impl Mutation {
    /// Records that this change also touches `customer` (a number moved
    /// between customers): every host reloads that customer too.
    pub(super) fn also_touches(&mut self, customer: &str) {
        self.also.push(customer.to_owned());
    }

    /// The transaction's connection.
    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Tells the customer `customer` about this change once it commits
    /// (stored in the same transaction; the webhook is called after it).
    pub(super) async fn notify(
        &mut self,
        customer: &str,
        kind: &str,
        message: String,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO notifications (at_ms, customer_id, kind, message) VALUES ($1, $2, $3, $4)",
        )
        .bind(now_ms() as i64)
        .bind(customer)
        .bind(kind)
        .bind(&message)
        .execute(&mut *self.tx)
        .await?;
        self.notifications
            .push((customer.to_owned(), kind.to_owned(), message));
        Ok(())
    }
}

/// What a mutation did, for its audit entry and change record.
pub(super) struct Record<'a> {
    /// Who did it.
    pub actor: &'a Actor,
    /// The customer concerned (`None`: the whole service, e.g. prices).
    pub customer: Option<&'a str>,
    /// What, e.g. `license.assign`.
    pub action: &'a str,
    /// On what (an id).
    pub target: &'a str,
    /// State before, if there was one.
    pub before: Option<serde_json::Value>,
    /// State after, if there is one.
    pub after: Option<serde_json::Value>,
    /// What of the in-memory index the change can affect.
    pub touches: Touches,
}

/// What of the index a change can affect, so hosts reload just that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Touches {
    /// Nothing the call path reads (accounts, prices, orders).
    Nothing,
    /// One license and its keys.
    License(String),
    /// Anything of the record's customer (its block, permissions,
    /// telephony accounts, consent, numbers, installations).
    Customer,
}

impl Touches {
    fn column(&self) -> (&'static str, Option<String>) {
        match self {
            Touches::Nothing => ("none", None),
            Touches::License(l) => ("license", Some(l.clone())),
            Touches::Customer => ("customer", None),
        }
    }
}

impl<'a> Record<'a> {
    /// A change of `target` from `before` to `after`.
    pub fn change(
        actor: &'a Actor,
        customer: Option<&'a str>,
        action: &'a str,
        target: &'a str,
        before: &impl Serialize,
        after: &impl Serialize,
    ) -> Self {
        Self {
            actor,
            customer,
            action,
            target,
            before: serde_json::to_value(before).ok(),
            after: serde_json::to_value(after).ok(),
            touches: Touches::Customer,
        }
    }

    /// The change concerns license `lid` alone.
    pub fn license(mut self, lid: &str) -> Self {
        self.touches = Touches::License(lid.to_owned());
        self
    }

    /// The change touches nothing the call path reads.
    pub fn no_index(mut self) -> Self {
        self.touches = Touches::Nothing;
        self
    }

    /// Something new: no state before.
    pub fn created(
        actor: &'a Actor,
        customer: Option<&'a str>,
        action: &'a str,
        target: &'a str,
        after: &impl Serialize,
    ) -> Self {
        Self {
            before: None,
            ..Self::change(actor, customer, action, target, &(), after)
        }
    }
}

impl Licensing {
    /// Audits an operator action outside licensing data (e.g. loading a
    /// connector from a development folder), through the same path.
    pub async fn audit_operator_action(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        after: &impl Serialize,
    ) -> Result<()> {
        actor.require_operator()?;
        let m = self.begin().await?;
        self.commit(
            m,
            Record::created(actor, None, action, target, after).no_index(),
        )
        .await
    }

    /// Starts a mutation (waits for the one before it to commit).
    pub(super) async fn begin(&self) -> Result<Mutation> {
        let mut tx = self.db.begin_write().await?;
        if self.db.backend == Backend::Postgres {
            // `SELECT 1 FROM`: the functions return `void`, which sqlx's `Any` rows cannot hold.
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(MUTATION_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        Ok(Mutation {
            tx,
            notifications: Vec::new(),
            also: Vec::new(),
        })
    }

    /// Audits and records `m` as `rec`, commits it, and brings this host's
    /// index up to it. The change is stored once this returns `Ok`; if the
    /// index cannot be brought up to date at once, the change follower
    /// retries (the error is logged, not returned: the change is made).
    pub(super) async fn commit(&self, mut m: Mutation, rec: Record<'_>) -> Result<()> {
        let at = now_ms() as i64;
        sqlx::query("INSERT INTO audit (at_ms, actor_id, actor_name, impersonal, customer_id, action, target, before_json, after_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(at)
            .bind(&rec.actor.account_id)
            .bind(&rec.actor.name)
            .bind(rec.actor.impersonal as i32)
            .bind(rec.customer.map(str::to_owned))
            .bind(rec.action)
            .bind(rec.target)
            .bind(rec.before.map(|v| v.to_string()))
            .bind(rec.after.map(|v| v.to_string()))
            .execute(&mut *m.tx)
            .await?;
        let (scope, license) = rec.touches.column();
        let seq: i64 = sqlx::query(
            "INSERT INTO changes (at_ms, customer_id, action, target, scope, license_id) VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        )
        .bind(at)
        .bind(rec.customer.map(str::to_owned))
        .bind(rec.action)
        .bind(rec.target)
        .bind(scope)
        .bind(license)
        .fetch_one(&mut *m.tx)
        .await?
        .try_get(0)?;
        let mut seq = seq;
        for customer in std::mem::take(&mut m.also) {
            seq = sqlx::query(
                "INSERT INTO changes (at_ms, customer_id, action, target, scope, license_id) VALUES ($1, $2, $3, $4, 'customer', NULL) RETURNING seq",
            )
            .bind(at)
            .bind(customer)
            .bind(rec.action)
            .bind(rec.target)
            .fetch_one(&mut *m.tx)
            .await?
            .try_get(0)?;
        }
        if self.db.backend == Backend::Postgres {
            // Delivered to listeners when (and only if) the transaction commits.
            sqlx::query("SELECT 1 FROM pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(seq.to_string())
                .execute(&mut *m.tx)
                .await?;
        }
        m.tx.commit().await?;
        for (customer, kind, message) in m.notifications {
            self.send_notification(&customer, &kind, &message);
        }
        if let Err(e) = self.catch_up().await {
            tracing::error!(error = %e, seq, "licensing change committed, but the index could not be brought up to it; retrying in the background");
        }
        Ok(())
    }

    /// Brings the index up to the newest committed change, if it is not
    /// there yet, reloading only the customers the new changes concern.
    /// One catch-up runs at a time and each reads the database after the
    /// one before it, so concurrent changes cannot leave an older state in
    /// place (a just-revoked key stays revoked).
    pub async fn catch_up(&self) -> anyhow::Result<()> {
        let _turn = self.applying.lock().await;
        let applied = self.applied.load(Ordering::Acquire);
        let mut c = self.db.pool.acquire().await?;
        if applied < 0 {
            return self.reload_all(&mut c).await;
        }
        let news = sqlx::query(
            "SELECT seq, customer_id, scope, license_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(applied)
        .bind(WHOLE_RELOAD_AFTER + 1)
        .fetch_all(&mut *c)
        .await?;
        let Some(last) = news.last() else {
            return Ok(());
        };
        if news.len() as i64 > WHOLE_RELOAD_AFTER {
            return self.reload_all(&mut c).await;
        }
        let latest: i64 = last.try_get(0)?;
        let (mut customers, mut licenses) = (BTreeSet::new(), BTreeSet::new());
        for r in &news {
            let customer: Option<String> = r.try_get(1)?;
            match (r.try_get::<String, _>(2)?.as_str(), customer) {
                ("license", _) => {
                    licenses.insert(r.try_get::<Option<String>, _>(3)?.unwrap_or_default());
                }
                ("customer", Some(cid)) => {
                    customers.insert(cid);
                }
                _ => {}
            }
        }
        // Read after the change list: each part holds at least those changes.
        for cid in &customers {
            let part = Index::load(&mut c, &self.sealer, Some(cid)).await?;
            let lines = Lines::load(&mut c, &self.sealer, Some(cid)).await?;
            // Accounts first: a number's own connection exists before the
            // number is handed to it.
            self.lines
                .send_if_modified(|current| Arc::make_mut(current).replace(cid, lines));
            let moved = self.index.write().replace(cid, part);
            self.publish_monitored(moved);
        }
        for lid in &licenses {
            let part = Index::load_license(&mut c, &self.sealer, lid).await?;
            let moved = self.index.write().replace_license(lid, part);
            self.publish_monitored(moved);
        }
        self.applied.store(latest, Ordering::Release);
        Ok(())
    }

    /// Tells the telephony side which numbers stopped and started being
    /// monitored.
    fn publish_monitored(&self, (gone, came): (Vec<E164>, Vec<E164>)) {
        self.monitored.send_if_modified(|set| {
            let changed = !gone.is_empty() || !came.is_empty();
            for n in &gone {
                set.remove(n);
            }
            set.extend(came);
            changed
        });
    }

    /// Loads the whole index (at start, and after a long outage).
    async fn reload_all(&self, c: &mut AnyConnection) -> anyhow::Result<()> {
        let latest: Option<i64> = sqlx::query("SELECT MAX(seq) FROM changes")
            .fetch_one(&mut *c)
            .await?
            .try_get(0)?;
        let idx = Index::load(c, &self.sealer, None).await?;
        let lines = Lines::load(c, &self.sealer, None).await?;
        let numbers = idx.monitored();
        *self.index.write() = idx;
        self.lines.send_if_modified(|current| {
            let changed = **current != lines;
            if changed {
                *current = Arc::new(lines);
            }
            changed
        });
        self.monitored.send_replace(numbers);
        self.applied.store(latest.unwrap_or(0), Ordering::Release);
        Ok(())
    }

    /// The change sequence this host's index reflects.
    pub fn applied_change(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Keeps this host's index current with changes other hosts make on the
    /// same database: woken by PostgreSQL notifications, and every
    /// [`CATCH_UP_EVERY`] regardless, so a lost notification (or a dropped
    /// listener connection) delays a change by at most that long. Runs
    /// until the runtime stops.
    pub fn follow_changes(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut listener = None;
            loop {
                if me.db.backend == Backend::Postgres && listener.is_none() {
                    listener = me.listen().await;
                }
                let woken = match listener.as_mut() {
                    Some(l) => match tokio::time::timeout(CATCH_UP_EVERY, l.recv()).await {
                        Ok(Ok(_)) => true,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "licensing change listener lost; catching up by sequence and reconnecting");
                            listener = None;
                            false
                        }
                        Err(_) => false,
                    },
                    None => {
                        tokio::time::sleep(CATCH_UP_EVERY).await;
                        false
                    }
                };
                if let Err(e) = me.catch_up().await {
                    tracing::warn!(error = %e, woken, "cannot apply licensing changes yet; retrying");
                }
            }
        });
    }

    async fn listen(&self) -> Option<sqlx::postgres::PgListener> {
        let mut l = match sqlx::postgres::PgListener::connect(self.db.url()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for licensing changes; polling every second");
                return None;
            }
        };
        match l.listen(CHANGES_CHANNEL).await {
            Ok(()) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for licensing changes; polling every second");
                None
            }
        }
    }
}
