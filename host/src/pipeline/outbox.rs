//! The durable outbox: call events and one delivery row per (event, license),
//! written in one transaction before the event counts as accepted.
//!
//! Works on SQLite (embedded default, WAL) and PostgreSQL through sqlx's
//! `Any` driver; only the DDL differs by backend.

use sqlx::{AnyPool, Row};

use crate::call::{CallEvent, Contact, now_ms};
use crate::store::Db;

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

/// One delivery to be made: where, what, and how often it was tried.
#[derive(Debug, Clone, serde::Serialize)]
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

/// Handle to the outbox tables.
#[derive(Clone)]
pub struct Outbox {
    pool: AnyPool,
    db: Db,
}

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
        };
        outbox.migrate().await?;
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
            "CREATE INDEX IF NOT EXISTS call_events_created ON call_events (created_at_ms)".into(),
            format!(
                "CREATE TABLE IF NOT EXISTS deliveries (
                    id {serial},
                    event_seq BIGINT NOT NULL,
                    installation_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    customer_id TEXT NOT NULL,
                    call_id TEXT NOT NULL,
                    idempotency_key TEXT NOT NULL UNIQUE,
                    status TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT,
                    created_at_ms BIGINT NOT NULL,
                    updated_at_ms BIGINT NOT NULL
                )"
            ),
            "CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (status, id)".into(),
            "CREATE INDEX IF NOT EXISTS deliveries_installation ON deliveries (installation_id, status, id)".into(),
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
        let mut tx = self.pool.begin().await?;
        let now = now_ms() as i64;
        let mut out = Vec::with_capacity(batch.len());
        for (event, targets) in batch {
            let payload = serde_json::to_string(event)?;
            let inserted = sqlx::query(
                "INSERT INTO call_events (call_id, event_id, number, state, payload, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING RETURNING seq",
            )
            .bind(&event.call_id)
            .bind(event.event_id())
            .bind(event.monitored.as_str())
            .bind(event.state.as_str())
            .bind(payload)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(inserted) = inserted else {
                let seq: i64 = sqlx::query("SELECT seq FROM call_events WHERE event_id = $1")
                    .bind(event.event_id())
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                out.push((seq, None));
                continue;
            };
            let seq: i64 = inserted.try_get(0)?;
            let mut rows = Vec::with_capacity(targets.len());
            for t in targets {
                let key = format!(
                    "{}:{}:{}",
                    event.event_id(),
                    t.installation_id,
                    t.license_id
                );
                let id: i64 = sqlx::query(
                    "INSERT INTO deliveries (event_seq, installation_id, license_id, customer_id, call_id, idempotency_key, status, attempts, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8) RETURNING id",
                )
                .bind(seq)
                .bind(&t.installation_id)
                .bind(&t.license_id)
                .bind(&t.customer_id)
                .bind(&event.call_id)
                .bind(&key)
                .bind(now)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
                rows.push(DeliveryRow {
                    id,
                    event_seq: seq,
                    installation_id: t.installation_id.clone(),
                    license_id: t.license_id.clone(),
                    customer_id: t.customer_id.clone(),
                    call_id: event.call_id.clone(),
                    idempotency_key: key,
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    last_error: None,
                    created_at_ms: now,
                });
            }
            out.push((seq, Some(rows)));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records attempt outcomes in one transaction.
    pub async fn record(
        &self,
        updates: &[(i64, DeliveryStatus, i32, Option<String>)],
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms() as i64;
        for (id, status, attempts, error) in updates {
            sqlx::query("UPDATE deliveries SET status = $1, attempts = $2, last_error = $3, updated_at_ms = $4 WHERE id = $5")
                .bind(status.as_str())
                .bind(*attempts)
                .bind(error.clone())
                .bind(now)
                .bind(*id)
                .execute(&mut *tx)
                .await?;
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

    /// Every delivery still pending, oldest first (crash recovery).
    pub async fn pending(&self) -> anyhow::Result<Vec<DeliveryRow>> {
        self.deliveries_where("status = 'pending'", None).await
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
            "SELECT id, event_seq, installation_id, license_id, customer_id, call_id, idempotency_key, status, attempts, last_error, created_at_ms
             FROM deliveries WHERE {cond} AND ($1 = '' OR customer_id = $2) ORDER BY id"
        );
        let c = customer_id.unwrap_or("");
        let rows = sqlx::query(&sql)
            .bind(c)
            .bind(c)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// One delivery by id.
    pub async fn delivery(&self, id: i64) -> anyhow::Result<Option<DeliveryRow>> {
        let row = sqlx::query(
            "SELECT id, event_seq, installation_id, license_id, customer_id, call_id, idempotency_key, status, attempts, last_error, created_at_ms FROM deliveries WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    /// Puts a dead letter back to pending with a fresh attempt budget.
    pub async fn redrive(&self, id: i64) -> anyhow::Result<bool> {
        let r = sqlx::query("UPDATE deliveries SET status = 'pending', attempts = 0, updated_at_ms = $1 WHERE id = $2 AND status = 'dead'")
            .bind(now_ms() as i64)
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM deliveries WHERE created_at_ms < $1 AND status <> 'pending'")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM call_events WHERE created_at_ms < $1 AND seq NOT IN (SELECT event_seq FROM deliveries)")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }
}

fn delivery_from_row(r: &sqlx::any::AnyRow) -> anyhow::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.try_get(0)?,
        event_seq: r.try_get(1)?,
        installation_id: r.try_get(2)?,
        license_id: r.try_get(3)?,
        customer_id: r.try_get(4)?,
        call_id: r.try_get(5)?,
        idempotency_key: r.try_get(6)?,
        status: DeliveryStatus::parse(&r.try_get::<String, _>(7)?),
        attempts: r.try_get(8)?,
        last_error: r.try_get(9)?,
        created_at_ms: r.try_get(10)?,
    })
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
