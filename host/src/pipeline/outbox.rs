//! The durable outbox: call events and one delivery row per (event, license),
//! written in one transaction before the event counts as accepted.
//!
//! Works on SQLite (embedded default, WAL) and PostgreSQL through sqlx's
//! `Any` driver; only the DDL differs by backend.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use sqlx::{AnyPool, Row};

use crate::call::{CallEvent, Contact, now_ms};
use crate::on_conn;
use crate::store::{Backend, Db};

/// State of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for (another) attempt.
    Pending,
    /// The plugin accepted it.
    Delivered,
    /// Out of attempts or permanently refused; an admin may re-drive it.
    Dead,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "delivered" => DeliveryStatus::Delivered,
            "dead" => DeliveryStatus::Dead,
            _ => DeliveryStatus::Pending,
        }
    }
}

impl From<String> for DeliveryStatus {
    fn from(s: String) -> Self {
        Self::parse(&s)
    }
}

/// One delivery to be made: where, what, and how often it was tried.
/// Read from a row by column name (`SELECT` [`DELIVERY_COLUMNS`]).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    /// Row id.
    pub id: i64,
    /// Sequence number of the event.
    pub event_seq: i64,
    /// Target installation.
    pub installation_id: String,
    /// License the delivery is made under.
    pub license_id: String,
    /// Customer owning the license.
    pub customer_id: String,
    /// Call the event belongs to.
    pub call_id: String,
    /// Stable key handed to the plugin on every attempt.
    pub idempotency_key: String,
    /// Current state.
    #[sqlx(try_from = "String")]
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i32,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// When the row was written.
    pub created_at_ms: i64,
}

/// A stored event with its sequence number (the SSE event id).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredEvent {
    /// Monotonic sequence number.
    pub seq: i64,
    /// The event.
    pub event: CallEvent,
    /// Contact resolved for the caller, if any.
    pub contact: Option<Contact>,
}

/// Where a new event must be delivered.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Target installation.
    pub installation_id: String,
    /// License.
    pub license_id: String,
    /// Customer.
    pub customer_id: String,
}

/// Most rows per multi-row INSERT: well under both backends' bind-parameter
/// limits (8 parameters per delivery row).
const ROWS_PER_STATEMENT: usize = 512;

/// Splits `items` into chunks whose lengths are powers of two (at most
/// [`ROWS_PER_STATEMENT`]), so a handful of distinct statements cover every
/// batch size and stay in the prepared-statement cache.
fn chunks<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let n = ROWS_PER_STATEMENT.min(1 << items.len().ilog2());
        let (head, rest) = items.split_at(n);
        out.push(head);
        items = rest;
    }
    out
}

/// Bind parameters `first..first + n` as a comma-separated list. SQLite gets
/// anonymous `?`: it looks a named or numbered parameter (`$7`) up by a
/// linear scan, which made binding a 4,000-parameter insert quadratic (the
/// larger part of the SQLite outbox's time); PostgreSQL needs `$n`.
fn params(backend: Backend, first: usize, n: usize) -> String {
    let mut out = String::with_capacity(n * 6);
    for i in first..first + n {
        if i > first {
            out.push_str(", ");
        }
        match backend {
            Backend::Sqlite => out.push('?'),
            Backend::Postgres => {
                out.push('$');
                out.push_str(&i.to_string());
            }
        }
    }
    out
}

/// `(p1, …, p_cols, literals…), (…)` for `rows` rows (see [`params`]).
fn placeholders(backend: Backend, rows: usize, cols: usize, literals: &[&str]) -> String {
    let mut out = String::with_capacity(rows * (cols * 6 + 4));
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        out.push_str(&params(backend, r * cols + 1, cols));
        for l in literals {
            out.push_str(", ");
            out.push_str(l);
        }
        out.push(')');
    }
    out
}

/// The columns a [`DeliveryRow`] is read from.
pub const DELIVERY_COLUMNS: &str = "id, event_seq, installation_id, license_id, customer_id, call_id, idempotency_key, status, attempts, last_error, created_at_ms";

/// Handle to the outbox tables.
#[derive(Clone)]
pub struct Outbox {
    pool: AnyPool,
    db: Db,
    /// This process among the hosts sharing the database: it owns the
    /// deliveries it works on, under a lease it keeps renewing.
    me: Arc<str>,
    /// Lease length, ms.
    lease: Arc<std::sync::atomic::AtomicI64>,
}

/// How long a delivery stays its host's without a renewal: when a host
/// dies, another takes its pending deliveries over after at most this.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(6);

impl Outbox {
    /// Connects to `url` (sqlite:… or postgres:…) and creates the tables.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::open(Db::connect(url).await?).await
    }

    /// Uses an open database and creates the tables.
    pub async fn open(db: Db) -> anyhow::Result<Self> {
        let outbox = Self {
            pool: db.pool.clone(),
            db,
            me: uuid::Uuid::now_v7().simple().to_string().into(),
            lease: Arc::new(std::sync::atomic::AtomicI64::new(
                DEFAULT_LEASE.as_millis() as i64
            )),
        };
        outbox.migrate().await?;
        // Delivery leases (several hosts on one database).
        outbox.db.add_column("deliveries", "owner", "TEXT").await?;
        outbox
            .db
            .add_column("deliveries", "lease_until_ms", "BIGINT")
            .await?;
        Ok(outbox)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let serial = self.db.serial();
        let ddl = [
            format!(
                "CREATE TABLE IF NOT EXISTS call_events (
                    seq {serial},
                    call_id TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    number TEXT NOT NULL,
                    state TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    contact TEXT,
                    created_at_ms BIGINT NOT NULL
                )"
            ),
            "CREATE INDEX IF NOT EXISTS call_events_number ON call_events (number, seq)".into(),
            "CREATE INDEX IF NOT EXISTS call_events_call ON call_events (call_id, seq)".into(),
            // An event re-sent after a lost acknowledgement is stored once.
            "CREATE UNIQUE INDEX IF NOT EXISTS call_events_event ON call_events (event_id)".into(),
            // Every index is written on each append. Retention finds its
            // boundary through the primary key (rows are appended in time
            // order), so no index on created_at_ms; nothing reads deliveries
            // by installation. Databases created before keep working without
            // these two.
            "DROP INDEX IF EXISTS call_events_created".into(),
            format!(
                "CREATE TABLE IF NOT EXISTS deliveries (
                    id {serial},
                    event_seq BIGINT NOT NULL,
                    installation_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    customer_id TEXT NOT NULL,
                    call_id TEXT NOT NULL,
                    -- unique by construction: rows are written only for
                    -- an event stored just now, one per license
                    idempotency_key TEXT NOT NULL,
                    status TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT,
                    created_at_ms BIGINT NOT NULL,
                    updated_at_ms BIGINT NOT NULL
                )"
            ),
            "CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (status, id)".into(),
            "DROP INDEX IF EXISTS deliveries_installation".into(),
        ];
        self.db.ensure("outbox", &ddl).await
    }

    /// Writes events and their deliveries in one transaction; returns, per
    /// event, its sequence number and the delivery rows created. An event
    /// already stored (same event id: a sender retrying after a lost
    /// acknowledgement) keeps its sequence number and gets no new rows:
    /// `None` in place of the rows.
    pub async fn append(
        &self,
        batch: &[(CallEvent, Vec<NewDelivery>)],
    ) -> anyhow::Result<Vec<(i64, Option<Vec<DeliveryRow>>)>> {
        let now = now_ms() as i64;
        // New deliveries are this host's, under a first lease.
        let owner = format!("'{}'", self.me);
        let lease = (now + self.lease_ms()).to_string();
        // Multi-row statements: a handful of round trips per batch instead
        // of one per row (what PostgreSQL throughput hinges on).
        let mut tx = self.db.begin_typed().await?;
        let mut seqs: HashMap<String, i64> = HashMap::new();
        let mut fresh: HashSet<String> = HashSet::new();
        let mut unique: Vec<&CallEvent> = Vec::with_capacity(batch.len());
        {
            let mut seen = HashSet::new();
            for (event, _) in batch {
                if seen.insert(event.event_id()) {
                    unique.push(event);
                }
            }
        }
        for chunk in chunks(&unique) {
            let sql = format!(
                "INSERT INTO call_events (call_id, event_id, number, state, payload, created_at_ms) VALUES {} ON CONFLICT (event_id) DO NOTHING RETURNING seq, event_id",
                placeholders(self.db.backend, chunk.len(), 6, &[])
            );
            let payloads = chunk
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()?;
            let stored: Vec<(i64, String)> = on_conn!(tx, c => {
                let mut q = sqlx::query_as(&sql);
                for (event, payload) in chunk.iter().zip(&payloads) {
                    q = q
                        .bind(event.call_id.clone())
                        .bind(event.event_id())
                        .bind(event.monitored.as_str().to_owned())
                        .bind(event.state.as_str())
                        .bind(payload.clone())
                        .bind(now);
                }
                q.fetch_all(&mut *c).await?
            });
            for (seq, event_id) in stored {
                seqs.insert(event_id.clone(), seq);
                fresh.insert(event_id);
            }
            // Events already stored (a sender retrying after a lost ack).
            let known: Vec<String> = chunk
                .iter()
                .map(|e| e.event_id())
                .filter(|id| !seqs.contains_key(id))
                .collect();
            if !known.is_empty() {
                let sql = format!(
                    "SELECT seq, event_id FROM call_events WHERE event_id IN ({})",
                    params(self.db.backend, 1, known.len())
                );
                let found: Vec<(i64, String)> = on_conn!(tx, c => {
                    let mut q = sqlx::query_as(&sql);
                    for id in &known {
                        q = q.bind(id.clone());
                    }
                    q.fetch_all(&mut *c).await?
                });
                for (seq, event_id) in found {
                    seqs.insert(event_id, seq);
                }
            }
        }
        // Delivery rows for the events stored just now (each event once,
        // even when the batch repeats it).
        let mut out = Vec::with_capacity(batch.len());
        let mut rows: Vec<DeliveryRow> = Vec::new();
        let mut spans = Vec::with_capacity(batch.len());
        for (event, targets) in batch {
            let id = event.event_id();
            let seq = *seqs
                .get(&id)
                .ok_or_else(|| anyhow::anyhow!("event {id} was neither stored nor found"))?;
            if !fresh.remove(&id) {
                spans.push((seq, None));
                continue;
            }
            let start = rows.len();
            for t in targets {
                rows.push(DeliveryRow {
                    id: 0,
                    event_seq: seq,
                    installation_id: t.installation_id.clone(),
                    license_id: t.license_id.clone(),
                    customer_id: t.customer_id.clone(),
                    call_id: event.call_id.clone(),
                    idempotency_key: format!("{id}:{}:{}", t.installation_id, t.license_id),
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    last_error: None,
                    created_at_ms: now,
                });
            }
            spans.push((seq, Some(start..rows.len())));
        }
        let mut ids: HashMap<String, i64> = HashMap::with_capacity(rows.len());
        for chunk in chunks(&rows) {
            let sql = format!(
                "INSERT INTO deliveries (event_seq, installation_id, license_id, customer_id, call_id, idempotency_key, created_at_ms, updated_at_ms, status, attempts, owner, lease_until_ms) VALUES {} RETURNING id, idempotency_key",
                placeholders(
                    self.db.backend,
                    chunk.len(),
                    8,
                    &["'pending'", "0", &owner, &lease]
                )
            );
            let made: Vec<(i64, String)> = on_conn!(tx, c => {
                let mut q = sqlx::query_as(&sql);
                for r in chunk {
                    q = q
                        .bind(r.event_seq)
                        .bind(r.installation_id.clone())
                        .bind(r.license_id.clone())
                        .bind(r.customer_id.clone())
                        .bind(r.call_id.clone())
                        .bind(r.idempotency_key.clone())
                        .bind(now)
                        .bind(now);
                }
                q.fetch_all(&mut *c).await?
            });
            for (id, key) in made {
                ids.insert(key, id);
            }
        }
        tx.commit().await?;
        for r in &mut rows {
            r.id = *ids
                .get(&r.idempotency_key)
                .ok_or_else(|| anyhow::anyhow!("delivery {} was not stored", r.idempotency_key))?;
        }
        for (seq, span) in spans {
            out.push((seq, span.map(|range| rows[range].to_vec())));
        }
        Ok(out)
    }

    /// Records attempt outcomes in one transaction. Outcomes that read the
    /// same (mostly "delivered on the first attempt") are written by one
    /// `UPDATE … WHERE id IN (…)` per chunk; a delivery listed twice keeps
    /// its last outcome.
    pub async fn record(
        &self,
        updates: &[(i64, DeliveryStatus, i32, Option<String>)],
    ) -> anyhow::Result<()> {
        let mut last = HashMap::with_capacity(updates.len());
        for (i, (id, ..)) in updates.iter().enumerate() {
            last.insert(*id, i);
        }
        let mut groups: BTreeMap<(&str, i32, Option<&str>), Vec<i64>> = BTreeMap::new();
        for (i, (id, status, attempts, error)) in updates.iter().enumerate() {
            if last[id] == i {
                groups
                    .entry((status.as_str(), *attempts, error.as_deref()))
                    .or_default()
                    .push(*id);
            }
        }
        let now = now_ms() as i64;
        let mut tx = self.db.begin_typed().await?;
        for ((status, attempts, error), ids) in &groups {
            for chunk in chunks(ids) {
                let b = self.db.backend;
                let sql = format!(
                    "UPDATE deliveries SET status = {}, attempts = {}, last_error = {}, updated_at_ms = {} WHERE id IN ({})",
                    params(b, 1, 1),
                    params(b, 2, 1),
                    params(b, 3, 1),
                    params(b, 4, 1),
                    params(b, 5, chunk.len())
                );
                on_conn!(tx, c => {
                    let mut q = sqlx::query(&sql)
                        .bind(*status)
                        .bind(*attempts)
                        .bind(error.map(str::to_owned))
                        .bind(now);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    q.execute(&mut *c).await?;
                });
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores the contact resolved for an event.
    pub async fn set_contact(&self, seq: i64, contact: &Contact) -> anyhow::Result<()> {
        sqlx::query("UPDATE call_events SET contact = $1 WHERE seq = $2")
            .bind(serde_json::to_string(contact)?)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every delivery still pending, oldest first.
    pub async fn pending(&self) -> anyhow::Result<Vec<DeliveryRow>> {
        self.deliveries_where("status = 'pending'", None).await
    }

    /// The database kind.
    pub fn backend(&self) -> Backend {
        self.db.backend
    }

    /// This host's id among the hosts sharing the database.
    pub fn host(&self) -> &str {
        &self.me
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Gives this host a lasting id (kept in its data directory), so a
    /// restarted host resumes its own deliveries at once, in order, instead
    /// of waiting for the leases of its previous run to expire.
    pub fn with_host(mut self, id: &str) -> Self {
        self.me = id.into();
        self
    }

    /// How long a delivery stays this host's without a renewal.
    pub fn lease_ms(&self) -> i64 {
        self.lease.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the lease (default [`DEFAULT_LEASE`]).
    pub fn set_lease(&self, lease: std::time::Duration) {
        self.lease.store(
            lease.as_millis() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Extends the lease of every pending delivery this host owns.
    pub async fn renew(&self) -> anyhow::Result<u64> {
        let r = sqlx::query(
            "UPDATE deliveries SET lease_until_ms = $1 WHERE owner = $2 AND status = 'pending'",
        )
        .bind(now_ms() as i64 + self.lease_ms())
        .bind(self.me.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Ends the leases of this host's pending deliveries now.
    pub async fn release(&self) -> anyhow::Result<u64> {
        let r = sqlx::query(
            "UPDATE deliveries SET lease_until_ms = 0 WHERE owner = $1 AND status = 'pending'",
        )
        .bind(self.me.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Takes over, oldest first, up to `limit` pending deliveries whose
    /// lease ran out before `before_ms` (their host died or lost the
    /// database) or that have none: they become this host's. On
    /// PostgreSQL hosts claiming at once skip each other's rows (`FOR
    /// UPDATE SKIP LOCKED`), so each row goes to one host.
    pub async fn claim_expired(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        self.claim(before_ms, limit, false).await
    }

    /// Like [`Outbox::claim_expired`], also taking this host's own pending
    /// deliveries whatever their lease (a restart: its previous run's).
    pub async fn claim_own_and_expired(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        self.claim(before_ms, limit, true).await
    }

    async fn claim(
        &self,
        before_ms: i64,
        limit: i64,
        own: bool,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        let lock = if self.db.backend == Backend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE deliveries SET owner = $1, lease_until_ms = $2 WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' AND (lease_until_ms IS NULL OR lease_until_ms < $3 OR (owner = $5 AND $6 = 1)) ORDER BY id LIMIT $4{lock}) RETURNING {DELIVERY_COLUMNS}"
        );
        let mut tx = self.db.begin_typed().await?;
        let mut out: Vec<DeliveryRow> = on_conn!(tx, c => {
            sqlx::query_as(&sql)
                .bind(self.me.to_string())
                .bind(now_ms() as i64 + self.lease_ms())
                .bind(before_ms)
                .bind(limit)
                .bind(self.me.to_string())
                .bind(own as i32)
                .fetch_all(&mut *c)
                .await?
        });
        tx.commit().await?;
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    /// Dead letters, optionally of one customer.
    pub async fn dead(&self, customer_id: Option<&str>) -> anyhow::Result<Vec<DeliveryRow>> {
        self.deliveries_where("status = 'dead'", customer_id).await
    }

    /// Recent deliveries, newest first, optionally of one customer.
    pub async fn recent(
        &self,
        customer_id: Option<&str>,
        limit: i64,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        let mut rows = self.deliveries_where("1 = 1", customer_id).await?;
        rows.reverse();
        rows.truncate(limit.max(0) as usize);
        Ok(rows)
    }

    async fn deliveries_where(
        &self,
        cond: &str,
        customer_id: Option<&str>,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {cond} AND ($1 = '' OR customer_id = $2) ORDER BY id"
        );
        let c = customer_id.unwrap_or("");
        Ok(sqlx::query_as(&sql)
            .bind(c)
            .bind(c)
            .fetch_all(&self.pool)
            .await?)
    }

    /// One delivery by id.
    pub async fn delivery(&self, id: i64) -> anyhow::Result<Option<DeliveryRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Puts a dead letter back to pending with a fresh attempt budget.
    pub async fn redrive(&self, id: i64) -> anyhow::Result<bool> {
        let now = now_ms() as i64;
        let r = sqlx::query("UPDATE deliveries SET status = 'pending', attempts = 0, updated_at_ms = $1, owner = $2, lease_until_ms = $3 WHERE id = $4 AND status = 'dead'")
            .bind(now)
            .bind(self.me.to_string())
            .bind(now + self.lease_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The stored event with that sequence number.
    pub async fn event(&self, seq: i64) -> anyhow::Result<Option<StoredEvent>> {
        let row = sqlx::query("SELECT seq, payload, contact FROM call_events WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// The stored events with these sequence numbers, oldest first.
    pub async fn events_by_seq(&self, seqs: &[i64]) -> anyhow::Result<Vec<StoredEvent>> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(500) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let rows = sqlx::query(&format!(
                "SELECT seq, payload, contact FROM call_events WHERE seq IN ({list}) ORDER BY seq"
            ))
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                out.push(event_from_row(r)?);
            }
        }
        Ok(out)
    }

    /// Events on `number` after sequence `after`, oldest first (SSE resume).
    pub async fn events_after(
        &self,
        number: &str,
        after: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<StoredEvent>> {
        let rows = sqlx::query("SELECT seq, payload, contact FROM call_events WHERE number = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(number)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// All events of one call, oldest first.
    pub async fn call_events(&self, call_id: &str) -> anyhow::Result<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT seq, payload, contact FROM call_events WHERE call_id = $1 ORDER BY seq",
        )
        .bind(call_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Deletes call events (personal data) and finished deliveries older
    /// than `cutoff_ms`; returns the number of events removed.
    pub async fn purge_before(&self, cutoff_ms: i64) -> anyhow::Result<u64> {
        // Rows are appended in time order, so the first row at or after the
        // cutoff (found by walking the primary key over the rows that are
        // about to go) bounds the old ones.
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "DELETE FROM deliveries WHERE status <> 'pending' AND id < COALESCE(
                (SELECT id FROM deliveries WHERE created_at_ms >= $1 ORDER BY id LIMIT 1),
                (SELECT MAX(id) + 1 FROM deliveries), 0)",
        )
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await?;
        let r = sqlx::query(
            "DELETE FROM call_events WHERE seq < COALESCE(
                (SELECT seq FROM call_events WHERE created_at_ms >= $1 ORDER BY seq LIMIT 1),
                (SELECT MAX(seq) + 1 FROM call_events), 0)
             AND seq NOT IN (SELECT event_seq FROM deliveries)",
        )
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }
}

fn event_from_row(r: &sqlx::any::AnyRow) -> anyhow::Result<StoredEvent> {
    let payload: String = r.try_get(1)?;
    let contact: Option<String> = r.try_get(2)?;
    Ok(StoredEvent {
        seq: r.try_get(0)?,
        event: serde_json::from_str(&payload)?,
        contact: contact.map(|c| serde_json::from_str(&c)).transpose()?,
    })
}

/// Helpers for tests of the outbox and of the pipeline around it.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::call::{CallState, Direction};
    use crate::number::E164;

    /// An outbox in a fresh SQLite file (kept while the directory lives).
    pub(crate) async fn temp_outbox() -> (tempfile::TempDir, Outbox) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
        let outbox = Outbox::connect(&url).await.unwrap();
        (dir, outbox)
    }

    /// An inbound event of `call` on +41441234567.
    pub(crate) fn ev(call: &str, state: CallState) -> CallEvent {
        let n = E164::parse("+41441234567").unwrap();
        CallEvent {
            call_id: call.into(),
            direction: Direction::Inbound,
            state,
            caller: None,
            callee: n.clone(),
            monitored: n,
            started_at_ms: 1,
            answered_at_ms: None,
            ended_at_ms: None,
            duration_secs: None,
            answered_by: None,
        }
    }

    /// A delivery to `installation` under license `lic-<installation>`.
    pub(crate) fn to(installation: &str) -> NewDelivery {
        NewDelivery {
            installation_id: installation.into(),
            license_id: format!("lic-{installation}"),
            customer_id: "cus".into(),
        }
    }

    /// Stores `n` ringing events with one delivery each; their delivery ids.
    pub(crate) async fn pending_deliveries(outbox: &Outbox, n: usize) -> Vec<i64> {
        let batch: Vec<(CallEvent, Vec<NewDelivery>)> = (0..n)
            .map(|i| (ev(&format!("c{i}"), CallState::Ringing), vec![to("a")]))
            .collect();
        outbox
            .append(&batch)
            .await
            .unwrap()
            .iter()
            .flat_map(|(_, r)| r.as_ref().unwrap().iter().map(|d| d.id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::call::CallState;

    #[tokio::test]
    async fn a_live_lease_keeps_a_delivery_its_hosts_an_expired_one_moves_once() {
        let (dir, a) = temp_outbox().await;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
        let b = Outbox::connect(&url).await.unwrap();
        assert_ne!(a.host(), b.host());
        a.set_lease(std::time::Duration::from_millis(300));
        let ids = pending_deliveries(&a, 3).await;
        let now = now_ms() as i64;
        assert!(
            b.claim_expired(now, 10).await.unwrap().is_empty(),
            "taken while a renews"
        );
        a.renew().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let moved: Vec<i64> = b
            .claim_expired(now_ms() as i64, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            moved, ids,
            "a stopped renewing: b takes every one, oldest first"
        );
        assert!(
            a.claim_expired(now_ms() as i64, 10)
                .await
                .unwrap()
                .is_empty(),
            "each moves once"
        );
        // Released leases move at once.
        assert_eq!(b.release().await.unwrap(), 3);
        assert_eq!(a.claim_expired(now_ms() as i64, 10).await.unwrap().len(), 3);
    }

    #[test]
    fn parameters_are_anonymous_on_sqlite_and_numbered_on_postgres() {
        assert_eq!(params(Backend::Sqlite, 3, 3), "?, ?, ?");
        assert_eq!(params(Backend::Postgres, 3, 3), "$3, $4, $5");
        assert_eq!(
            placeholders(Backend::Postgres, 2, 2, &["0"]),
            "($1, $2, 0), ($3, $4, 0)"
        );
        assert_eq!(placeholders(Backend::Sqlite, 2, 1, &[]), "(?), (?)");
    }

    #[test]
    fn chunks_are_powers_of_two_covering_everything_in_order() {
        let items: Vec<u32> = (0..1300).collect();
        let parts = chunks(&items);
        let lens: Vec<usize> = parts.iter().map(|c| c.len()).collect();
        assert_eq!(lens, [512, 512, 256, 16, 4]);
        assert_eq!(parts.concat(), items);
        assert!(chunks::<u32>(&[]).is_empty());
        assert_eq!(chunks(&[7]).concat(), [7]);
    }

    #[tokio::test]
    async fn batches_store_each_event_once_in_order_with_its_deliveries() {
        let (_dir, outbox) = temp_outbox().await;
        // 1,200 events (more than one multi-row statement), two targets each,
        // and the first event repeated inside the batch.
        let mut batch: Vec<(CallEvent, Vec<NewDelivery>)> = (0..1200)
            .map(|i| {
                (
                    ev(&format!("c{i}"), CallState::Ringing),
                    vec![to("a"), to("b")],
                )
            })
            .collect();
        batch.push((ev("c0", CallState::Ringing), vec![to("a"), to("b")]));
        let out = outbox.append(&batch).await.unwrap();
        assert_eq!(out.len(), 1201);
        let seqs: Vec<i64> = out.iter().map(|(s, _)| *s).collect();
        assert!(
            seqs[..1200].windows(2).all(|w| w[0] < w[1]),
            "seq follows batch order"
        );
        assert_eq!(seqs[1200], seqs[0], "a repeat keeps the first seq");
        assert!(out[1200].1.is_none(), "a repeat gets no deliveries");
        let rows: Vec<&DeliveryRow> = out[..1200]
            .iter()
            .flat_map(|(_, r)| r.as_ref().unwrap())
            .collect();
        assert_eq!(rows.len(), 2400);
        assert!(
            rows.windows(2).all(|w| w[0].id < w[1].id),
            "ids follow batch order"
        );
        assert_eq!(rows[0].idempotency_key, "c0:ringing:a:lic-a");
        assert_eq!(rows[0].event_seq, seqs[0]);
        let stored = outbox.delivery(rows[2399].id).await.unwrap().unwrap();
        assert_eq!(stored.idempotency_key, rows[2399].idempotency_key);
        assert_eq!(outbox.pending().await.unwrap().len(), 2400);

        // The same events again (a sender retrying after a lost ack): same
        // seqs, nothing new; a new event in the same batch is stored.
        let again = vec![
            (ev("c5", CallState::Ringing), vec![to("a")]),
            (ev("c5", CallState::Answered), vec![to("a")]),
        ];
        let out2 = outbox.append(&again).await.unwrap();
        assert_eq!(out2[0].0, seqs[5]);
        assert!(out2[0].1.is_none());
        assert!(out2[1].0 > seqs[1199]);
        assert_eq!(out2[1].1.as_ref().unwrap().len(), 1);
        assert_eq!(outbox.pending().await.unwrap().len(), 2401);
    }

    #[tokio::test]
    async fn retention_removes_finished_old_calls_and_keeps_pending_and_recent_ones() {
        let (_dir, outbox) = temp_outbox().await;
        let append = |call: &'static str| {
            let outbox = outbox.clone();
            async move {
                let out = outbox
                    .append(&[(ev(call, CallState::Ringing), vec![to("a")])])
                    .await
                    .unwrap();
                (out[0].0, out[0].1.as_ref().unwrap()[0].id)
            }
        };
        let old_done = append("old-done").await;
        let old_pending = append("old-pending").await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let cutoff = now_ms() as i64;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let recent = append("recent").await;
        let delivered = |id| (id, DeliveryStatus::Delivered, 1, None);
        outbox
            .record(&[delivered(old_done.1), delivered(recent.1)])
            .await
            .unwrap();

        assert_eq!(outbox.purge_before(cutoff).await.unwrap(), 1);
        assert!(outbox.event(old_done.0).await.unwrap().is_none());
        assert!(outbox.delivery(old_done.1).await.unwrap().is_none());
        // A delivery still to be made keeps itself and its event.
        assert!(outbox.event(old_pending.0).await.unwrap().is_some());
        assert_eq!(outbox.pending().await.unwrap().len(), 1);
        assert!(outbox.event(recent.0).await.unwrap().is_some());
        assert!(outbox.delivery(recent.1).await.unwrap().is_some());
        // Past every row: only what is pending stays.
        assert_eq!(outbox.purge_before(now_ms() as i64 + 1).await.unwrap(), 1);
        assert!(outbox.event(recent.0).await.unwrap().is_none());
        assert!(outbox.event(old_pending.0).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn outcomes_are_recorded_per_delivery_and_the_last_one_wins() {
        let (_dir, outbox) = temp_outbox().await;
        let ids = pending_deliveries(&outbox, 700).await;
        // 600 delivered at once (more than one statement), one dead after
        // three attempts, one retried then delivered, the rest untouched.
        let mut updates: Vec<(i64, DeliveryStatus, i32, Option<String>)> = ids[..600]
            .iter()
            .map(|id| (*id, DeliveryStatus::Delivered, 1, None))
            .collect();
        updates.push((ids[600], DeliveryStatus::Dead, 3, Some("HTTP 410".into())));
        updates.push((ids[601], DeliveryStatus::Dead, 1, Some("first".into())));
        updates.push((ids[601], DeliveryStatus::Delivered, 2, None));
        outbox.record(&updates).await.unwrap();

        let pending = outbox.pending().await.unwrap();
        assert_eq!(pending.len(), 98);
        assert_eq!(pending[0].id, ids[602]);
        let dead = outbox.dead(None).await.unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!((dead[0].id, dead[0].attempts), (ids[600], 3));
        assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 410"));
        let retried = outbox.delivery(ids[601]).await.unwrap().unwrap();
        assert_eq!(
            (retried.status, retried.attempts, retried.last_error),
            (DeliveryStatus::Delivered, 2, None)
        );
        let first = outbox.delivery(ids[599]).await.unwrap().unwrap();
        assert_eq!(
            (first.status, first.attempts),
            (DeliveryStatus::Delivered, 1)
        );
    }
}
