//! Small pieces of state every host of one database must agree on (portal
//! sessions, sign-in failure counters, click-to-call buckets and budgets),
//! kept as JSON values under string keys.
//!
//! On PostgreSQL they live in table `shared_state`, and an update locks its
//! rows (`SELECT … FOR UPDATE`, keys in sorted order so two updates never
//! wait on each other in a cycle) for the read-modify-write, so two hosts
//! counting the same key never lose a count. On SQLite (one host) they live
//! in memory, as they always did: nothing on the call path gets slower.
//! Every value has an expiry; expired values read as absent and are swept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Backend, Db};
use crate::call::now_ms;

/// How often expired values are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Values in memory: JSON and expiry (Unix ms).
type Memory = HashMap<String, (String, i64)>;

/// Shared state (cheap to clone).
#[derive(Clone)]
pub struct Shared {
    db: Option<Db>,
    memory: Arc<Mutex<Memory>>,
}

fn now() -> i64 {
    now_ms() as i64
}

fn decode<T: DeserializeOwned + Default>(json: Option<&str>) -> T {
    // A value written by an older host that no longer parses starts over.
    json.and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

impl Shared {
    /// In memory only (one host).
    pub fn memory() -> Self {
        Self {
            db: None,
            memory: Arc::default(),
        }
    }

    /// In the database on PostgreSQL (creating the table), in memory on
    /// SQLite.
    pub async fn open(db: &Db) -> anyhow::Result<Self> {
        if db.backend != Backend::Postgres {
            return Ok(Self::memory());
        }
        db.ensure(
            "shared state",
            &["CREATE TABLE IF NOT EXISTS shared_state (
                    k TEXT PRIMARY KEY,
                    v TEXT NOT NULL,
                    expires_at_ms BIGINT NOT NULL
                )"
            .to_owned()],
        )
        .await?;
        let s = Self {
            db: Some(db.clone()),
            memory: Arc::default(),
        };
        s.spawn_sweeper();
        Ok(s)
    }

    /// Whether the state is shared with other hosts.
    pub fn is_shared(&self) -> bool {
        self.db.is_some()
    }

    /// The live values of `keys` (default where absent), without locking.
    pub async fn read<T: DeserializeOwned + Default>(
        &self,
        keys: &[&str],
    ) -> anyhow::Result<Vec<T>> {
        let now = now();
        let Some(db) = &self.db else {
            let m = self.memory.lock();
            return Ok(keys
                .iter()
                .map(|k| decode(m.get(*k).filter(|(_, e)| *e > now).map(|(v, _)| v.as_str())))
                .collect());
        };
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT k, v FROM shared_state WHERE k IN ({}) AND expires_at_ms > ${}",
            list.join(", "),
            keys.len() + 1
        );
        let mut q = sqlx::query_as::<_, (String, String)>(&sql);
        for k in keys {
            q = q.bind(*k);
        }
        let rows = q.bind(now).fetch_all(&db.pool).await?;
        let by_key: HashMap<&str, &str> =
            rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Ok(keys
            .iter()
            .map(|k| decode(by_key.get(k).copied()))
            .collect())
    }

    /// Reads `keys`, lets `f` change the values, and writes them back with
    /// expiry `ttl` from now, atomically across hosts; what `f` returned.
    /// Values `f` leaves at their default are deleted.
    pub async fn update<T, R>(
        &self,
        keys: &[&str],
        ttl: Duration,
        f: impl FnOnce(&mut [T]) -> R,
    ) -> anyhow::Result<R>
    where
        T: Serialize + DeserializeOwned + Default + PartialEq,
    {
        let expires = now() + ttl.as_millis() as i64;
        self.modify(keys, |v| (f(v), expires)).await
    }

    /// Like [`Shared::update`], with `f` also saying until when (Unix ms)
    /// the values live.
    pub async fn modify<T, R>(
        &self,
        keys: &[&str],
        f: impl FnOnce(&mut [T]) -> (R, i64),
    ) -> anyhow::Result<R>
    where
        T: Serialize + DeserializeOwned + Default + PartialEq,
    {
        let now = now();
        let Some(db) = &self.db else {
            let mut m = self.memory.lock();
            if m.len() > 100_000 {
                m.retain(|_, (_, e)| *e > now);
            }
            let mut values: Vec<T> = keys
                .iter()
                .map(|k| decode(m.get(*k).filter(|(_, e)| *e > now).map(|(v, _)| v.as_str())))
                .collect();
            let (r, expires) = f(&mut values);
            for (k, v) in keys.iter().zip(&values) {
                if *v == T::default() {
                    m.remove(*k);
                } else {
                    m.insert((*k).to_owned(), (serde_json::to_string(v)?, expires));
                }
            }
            return Ok(r);
        };
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| keys[i]);
        let mut tx = db.begin_write().await?;
        // Rows that do not exist yet cannot be locked: make them first.
        for &i in &order {
            sqlx::query(
                "INSERT INTO shared_state (k, v, expires_at_ms) VALUES ($1, 'null', 0) ON CONFLICT (k) DO NOTHING",
            )
            .bind(keys[i])
            .execute(&mut *tx)
            .await?;
        }
        let mut values = Vec::with_capacity(keys.len());
        for k in keys {
            let (v, e): (String, i64) =
                sqlx::query_as("SELECT v, expires_at_ms FROM shared_state WHERE k = $1 FOR UPDATE")
                    .bind(*k)
                    .fetch_one(&mut *tx)
                    .await?;
            values.push(decode::<T>((e > now).then_some(v.as_str())));
        }
        let (r, expires) = f(&mut values);
        for (k, v) in keys.iter().zip(&values) {
            if *v == T::default() {
                sqlx::query("DELETE FROM shared_state WHERE k = $1")
                    .bind(*k)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query("UPDATE shared_state SET v = $1, expires_at_ms = $2 WHERE k = $3")
                    .bind(serde_json::to_string(v)?)
                    .bind(expires)
                    .bind(*k)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(r)
    }

    /// Deletes `key`.
    pub async fn remove(&self, key: &str) -> anyhow::Result<()> {
        match &self.db {
            None => {
                self.memory.lock().remove(key);
            }
            Some(db) => {
                sqlx::query("DELETE FROM shared_state WHERE k = $1")
                    .bind(key)
                    .execute(&db.pool)
                    .await?;
            }
        }
        Ok(())
    }

    fn spawn_sweeper(&self) {
        let Some(db) = self.db.clone() else { return };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if db.pool.is_closed() {
                    return;
                }
                if let Err(e) = sqlx::query("DELETE FROM shared_state WHERE expires_at_ms <= $1")
                    .bind(now())
                    .execute(&db.pool)
                    .await
                {
                    tracing::warn!(error = %e, "cannot delete expired shared state; will retry");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Count(u32);

    #[tokio::test]
    async fn updates_count_values_and_defaults_are_deleted() {
        let s = Shared::memory();
        for _ in 0..3 {
            s.update(&["a", "b"], Duration::from_secs(60), |v: &mut [Count]| {
                v[0].0 += 1;
                v[1].0 += 2;
            })
            .await
            .unwrap();
        }
        let got: Vec<Count> = s.read(&["a", "b", "c"]).await.unwrap();
        assert_eq!(got, [Count(3), Count(6), Count(0)]);
        s.update(&["a"], Duration::from_secs(60), |v: &mut [Count]| {
            v[0] = Count(0)
        })
        .await
        .unwrap();
        assert!(!s.memory.lock().contains_key("a"));
        s.update(&["b"], Duration::ZERO, |_: &mut [Count]| ())
            .await
            .unwrap();
        let got: Vec<Count> = s.read(&["b"]).await.unwrap();
        assert_eq!(got, [Count(0)], "an expired value reads as absent");
    }
}
