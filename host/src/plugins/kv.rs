//! Connectors' key-value state in the database: every host of one database
//! sees the same entries (a lookup cached or a journal marker written on
//! one host holds on every other) and a restart keeps them. The limits of
//! the in-memory store hold per installation, across hosts.

use std::time::Duration;

use futures::future::BoxFuture;

use super::sandbox::{KV_MAX_KEYS, check_kv_write, kv_quota_full};
fn now_ms() -> i64 {
    crate::call::now_ms() as i64
}
use crate::store::{Backend, Db};

/// How often each host deletes expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// The key-value state of every installation, in table `plugin_kv`.
#[derive(Clone)]
pub struct DbKv {
    db: Db,
}

impl DbKv {
    /// Opens the store, creating its table.
    pub async fn open(db: Db) -> anyhow::Result<Self> {
        let blob = match db.backend {
            Backend::Sqlite => "BLOB",
            Backend::Postgres => "BYTEA",
        };
        db.ensure(
            "plugin key-value",
            &[format!(
                "CREATE TABLE IF NOT EXISTS plugin_kv (
                    installation_id TEXT NOT NULL,
                    key TEXT NOT NULL,
                    value {blob} NOT NULL,
                    expires_at_ms BIGINT,
                    PRIMARY KEY (installation_id, key)
                )"
            )],
        )
        .await?;
        Ok(Self { db })
    }

    /// The live value of `key`, if any.
    pub async fn get(&self, installation: &str, key: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT value FROM plugin_kv WHERE installation_id = $1 AND key = $2
             AND (expires_at_ms IS NULL OR expires_at_ms > $3)",
        )
        .bind(installation)
        .bind(key)
        .bind(now_ms())
        .fetch_optional(&self.db.pool)
        .await
    }

    /// Writes `key`; a new key is refused once the installation holds
    /// [`KV_MAX_KEYS`] live ones. Hosts writing new keys of one installation
    /// at the same instant may pass the quota by as many keys as they are.
    pub async fn set(
        &self,
        installation: &str,
        key: &str,
        value: Vec<u8>,
        ttl_secs: Option<u32>,
    ) -> Result<(), String> {
        check_kv_write(key, &value)?;
        let now = now_ms();
        let expires = ttl_secs.map(|s| now + i64::from(s) * 1000);
        let failed = |e: sqlx::Error| format!("key-value state is unavailable ({e}); retry later");
        let mut tx = self.db.begin_write().await.map_err(failed)?;
        let updated = sqlx::query(
            "UPDATE plugin_kv SET value = $1, expires_at_ms = $2 WHERE installation_id = $3 AND key = $4",
        )
        .bind(&value)
        .bind(expires)
        .bind(installation)
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(failed)?
        .rows_affected();
        if updated == 0 {
            let mut held = count(&mut tx, installation).await.map_err(failed)?;
            if held >= KV_MAX_KEYS as i64 {
                // Expired entries do not count: a lookup cache with a TTL
                // per number would otherwise fill the quota for good.
                sqlx::query(
                    "DELETE FROM plugin_kv WHERE installation_id = $1 AND expires_at_ms <= $2",
                )
                .bind(installation)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
                held = count(&mut tx, installation).await.map_err(failed)?;
            }
            if held >= KV_MAX_KEYS as i64 {
                return Err(kv_quota_full());
            }
            // Another host may have made the key since the update.
            sqlx::query(
                "INSERT INTO plugin_kv (installation_id, key, value, expires_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (installation_id, key)
                 DO UPDATE SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
            )
            .bind(installation)
            .bind(key)
            .bind(&value)
            .bind(expires)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)
    }

    /// Deletes `key`.
    pub async fn delete(&self, installation: &str, key: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM plugin_kv WHERE installation_id = $1 AND key = $2")
            .bind(installation)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Deletes every expired entry; how many.
    pub async fn sweep(&self) -> Result<u64, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let n = sqlx::query("DELETE FROM plugin_kv WHERE expires_at_ms <= $1")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Sweeps expired entries every few minutes while the host runs.
    pub fn spawn_sweeper(&self) {
        let kv = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match kv.sweep().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::debug!(entries = n, "expired plugin key-value entries deleted")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "plugin key-value sweep failed; will retry")
                    }
                }
            }
        });
    }

    /// The store as the futures the plugin bridge hands out.
    pub fn get_boxed(&self, installation: &str, key: &str) -> BoxFuture<'static, Option<Vec<u8>>> {
        let (kv, i, k) = (self.clone(), installation.to_owned(), key.to_owned());
        Box::pin(async move {
            // A connector reads a missing entry as "not cached yet": it asks
            // its app again, which is the safe side of a database hiccup.
            kv.get(&i, &k).await.unwrap_or_else(|e| {
                tracing::warn!(installation = %i, error = %e, "plugin key-value read failed");
                None
            })
        })
    }

    /// See [`DbKv::set`].
    pub fn set_boxed(
        &self,
        installation: &str,
        key: &str,
        value: Vec<u8>,
        ttl_secs: Option<u32>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let (kv, i, k) = (self.clone(), installation.to_owned(), key.to_owned());
        Box::pin(async move { kv.set(&i, &k, value, ttl_secs).await })
    }

    /// See [`DbKv::delete`].
    pub fn delete_boxed(&self, installation: &str, key: &str) -> BoxFuture<'static, ()> {
        let (kv, i, k) = (self.clone(), installation.to_owned(), key.to_owned());
        Box::pin(async move {
            if let Err(e) = kv.delete(&i, &k).await {
                tracing::warn!(installation = %i, error = %e, "plugin key-value delete failed");
            }
        })
    }
}

/// How many entries an installation holds (expired ones included).
async fn count(tx: &mut crate::store::WriteTx, installation: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM plugin_kv WHERE installation_id = $1")
        .bind(installation)
        .fetch_one(&mut **tx)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite(dir: &tempfile::TempDir) -> Db {
        Db::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("kv.db").display()
        ))
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn two_hosts_on_one_database_see_one_state_and_a_reopen_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = DbKv::open(sqlite(&dir).await).await.unwrap();
        let b = DbKv::open(sqlite(&dir).await).await.unwrap();
        a.set("inst-1", "written:k1", b"1".to_vec(), Some(3600))
            .await
            .unwrap();
        assert_eq!(
            b.get("inst-1", "written:k1").await.unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            b.get("inst-2", "written:k1").await.unwrap(),
            None,
            "another installation's state is not visible"
        );
        b.set("inst-1", "written:k1", b"2".to_vec(), None)
            .await
            .unwrap();
        drop((a, b));
        let c = DbKv::open(sqlite(&dir).await).await.unwrap();
        assert_eq!(
            c.get("inst-1", "written:k1").await.unwrap(),
            Some(b"2".to_vec())
        );
        c.delete("inst-1", "written:k1").await.unwrap();
        assert_eq!(c.get("inst-1", "written:k1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_quota_holds_in_the_database_and_expired_entries_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let kv = DbKv::open(sqlite(&dir).await).await.unwrap();
        // Fill the quota in one statement per batch (a set per key would
        // take a while on a debug build).
        let mut tx = kv.db.begin_write().await.unwrap();
        for i in 0..KV_MAX_KEYS {
            sqlx::query("INSERT INTO plugin_kv (installation_id, key, value, expires_at_ms) VALUES ($1, $2, $3, NULL)")
                .bind("inst")
                .bind(format!("k{i}"))
                .bind(vec![1u8])
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let err = kv.set("inst", "one-more", vec![1], None).await.unwrap_err();
        assert!(err.contains("delete some or set a ttl"), "{err}");
        kv.set("inst", "k7", vec![9], None)
            .await
            .expect("an existing key may change");
        kv.set("other", "k", vec![1], None)
            .await
            .expect("other installations are not affected");

        // Entries whose TTL ran out make room.
        sqlx::query("UPDATE plugin_kv SET expires_at_ms = 1 WHERE installation_id = 'inst' AND key IN ('k1', 'k2')")
            .execute(&kv.db.pool)
            .await
            .unwrap();
        assert_eq!(
            kv.get("inst", "k1").await.unwrap(),
            None,
            "expired reads as absent"
        );
        kv.set("inst", "one-more", vec![1], Some(60)).await.unwrap();
        let mut tx = kv.db.begin_write().await.unwrap();
        assert_eq!(
            count(&mut tx, "inst").await.unwrap(),
            KV_MAX_KEYS as i64 - 1,
            "both expired entries made room, one new key took one"
        );
        drop(tx);
        // The sweeper deletes expired entries of every installation.
        kv.set("other", "old", vec![1], Some(0)).await.unwrap();
        assert_eq!(kv.sweep().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn oversized_keys_and_values_are_refused_with_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let kv = DbKv::open(sqlite(&dir).await).await.unwrap();
        let err = kv
            .set(
                "inst",
                "k",
                vec![0; super::super::sandbox::KV_MAX_VALUE + 1],
                None,
            )
            .await
            .unwrap_err();
        assert!(err.contains("the limit is 65536 bytes"), "{err}");
        let err = kv
            .set("inst", &"x".repeat(600), vec![1], None)
            .await
            .unwrap_err();
        assert!(err.contains("the limit is 512 bytes"), "{err}");
        assert_eq!(kv.get("inst", "k").await.unwrap(), None);
    }
}
