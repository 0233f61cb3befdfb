//! Which host runs each SIP connection when several hosts share one
//! PostgreSQL database: the host's own SIP provider (connection `host`)
//! and each `sip` telephony account (connection = the account id) are
//! owned by exactly one live host at a time, through a lease row in table
//! `telephony_owners`.
//!
//! The owner registers and subscribes; every other host keeps a dial-only
//! connection (no registration, no subscriptions), so click-to-call works
//! on any host and no number is monitored twice. The owner renews its
//! leases every third of the lease and writes the connection's status
//! beside it, so every host reports the owner's view. A host that stops
//! renewing (killed, cut off) loses its connections when the lease runs
//! out; the first host to claim one then registers and subscribes anew.
//! On SQLite (one host) the host owns everything and nothing is stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::store::{Backend, Db};

/// The connection id of the host's own SIP provider.
pub const HOST_CONNECTION: &str = "host";

/// Who owns a connection, and its status as the owner last reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    /// The owning host's id.
    pub host: String,
    /// The owner's last status of the connection (JSON of a
    /// [`super::ProviderStatus`]), if it reported one.
    pub status: Option<serde_json::Value>,
}

/// The lease rows of one database (cheap to clone).
#[derive(Clone)]
pub struct Ownership {
    db: Option<Db>,
    me: String,
    lease: Duration,
    /// Set by [`Ownership::release`]: this host claims nothing more.
    stopped: Arc<AtomicBool>,
}

fn now() -> i64 {
    crate::call::now_ms() as i64
}

impl Ownership {
    /// On PostgreSQL, leases in the database (creating the table); on
    /// SQLite this host owns everything.
    pub async fn open(db: &Db, me: &str, lease: Duration) -> anyhow::Result<Self> {
        if db.backend != Backend::Postgres {
            return Ok(Self {
                db: None,
                me: me.to_owned(),
                lease,
                stopped: Arc::default(),
            });
        }
        db.ensure(
            "telephony ownership",
            &["CREATE TABLE IF NOT EXISTS telephony_owners (
                    connection TEXT PRIMARY KEY,
                    owner TEXT NOT NULL,
                    lease_until_ms BIGINT NOT NULL,
                    status TEXT
                )"
            .to_owned()],
        )
        .await?;
        Ok(Self {
            db: Some(db.clone()),
            me: me.to_owned(),
            lease,
            stopped: Arc::default(),
        })
    }

    /// Whether several hosts may share the connections.
    pub fn is_shared(&self) -> bool {
        self.db.is_some()
    }

    /// This host's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// How long a lease lasts.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Renews this host's leases of `connections` (writing `statuses` of
    /// those it owns), claims those nobody holds or whose lease ran out,
    /// and returns every connection's owner. A connection missing from the
    /// answer could not be read (it is not owned here).
    pub async fn claim(
        &self,
        connections: &[String],
        statuses: &BTreeMap<String, serde_json::Value>,
    ) -> anyhow::Result<BTreeMap<String, Owner>> {
        let Some(db) = &self.db else {
            return Ok(connections
                .iter()
                .map(|c| {
                    (
                        c.clone(),
                        Owner {
                            host: self.me.clone(),
                            status: statuses.get(c).cloned(),
                        },
                    )
                })
                .collect());
        };
        if self.stopped.load(Ordering::SeqCst) {
            anyhow::bail!("this host is stopping");
        }
        let now = now();
        let until = now + self.lease.as_millis() as i64;
        let mut owners = BTreeMap::new();
        let mut tx = db.pool.begin().await?;
        for c in connections {
            let status = statuses.get(c).map(|s| s.to_string());
            // Ours to renew, free to take, or a dead host's: ours now.
            sqlx::query(
                "INSERT INTO telephony_owners (connection, owner, lease_until_ms, status) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (connection) DO UPDATE SET owner = excluded.owner, lease_until_ms = excluded.lease_until_ms,
                     status = CASE WHEN telephony_owners.owner = excluded.owner THEN excluded.status ELSE NULL END
                 WHERE telephony_owners.owner = excluded.owner OR telephony_owners.lease_until_ms < $5",
            )
            .bind(c)
            .bind(&self.me)
            .bind(until)
            .bind(status)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let (owner, status): (String, Option<String>) =
                sqlx::query_as("SELECT owner, status FROM telephony_owners WHERE connection = $1")
                    .bind(c)
                    .fetch_one(&mut *tx)
                    .await?;
            owners.insert(
                c.clone(),
                Owner {
                    host: owner,
                    status: status.and_then(|s| serde_json::from_str(&s).ok()),
                },
            );
        }
        tx.commit().await?;
        Ok(owners)
    }

    /// Gives up this host's leases at once (a host that stops cleanly), so
    /// another host takes its connections on its next claim.
    pub async fn release(&self) -> anyhow::Result<()> {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(db) = &self.db {
            sqlx::query("UPDATE telephony_owners SET lease_until_ms = 0 WHERE owner = $1")
                .bind(&self.me)
                .execute(&db.pool)
                .await?;
        }
        Ok(())
    }
}
