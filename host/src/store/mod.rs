//! The database: SQLite (embedded default, WAL) or PostgreSQL, through
//! sqlx's `Any` driver. Each module owns its tables and creates them with
//! portable DDL; only the auto-increment column type differs by backend.

pub mod shared;

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Which SQL dialect the pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file or memory database.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A connection pool and its dialect (cheap to clone).
#[derive(Clone)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// The dialect.
    pub backend: Backend,
    /// The URL it was opened with (for connections outside the pool, such
    /// as a PostgreSQL listener).
    url: Arc<str>,
    /// SQLite has one writer at a time; a second one waits in SQLite's busy
    /// handler, which sleeps in steps of up to 100 ms. Writers queue here
    /// instead (first come, first served, woken at once), which keeps the
    /// outbox's commit latency at the cost of the commit itself.
    write_turn: Option<Arc<Mutex<()>>>,
    /// Held by every clone; the WAL checkpointer stops when the last one
    /// is dropped.
    _alive: Arc<()>,
}

/// The schema version this host makes and reads, recorded in table
/// `schema_versions` (component `host`):
/// - 1: every table up to release 0.x of 2026-12-06 (before versions were
///   recorded; a database without the table is version 1);
/// - 2: adds `plugin_kv` (connector state) and `shared_state`.
///
/// A host refuses a database whose version is newer than its own, so an
/// old release never runs on tables it does not know.
pub const SCHEMA_VERSION: i64 = 2;

/// The advisory lock under which hosts change the schema, one at a time
/// ("LSSC").
const SCHEMA_LOCK: i64 = 0x4c53_5343;

/// How often the SQLite WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copies the WAL into the database file every [`CHECKPOINT_EVERY`], off the
/// commit path: SQLite's automatic checkpoint runs inside the commit that
/// crosses 1,000 pages, so one append in a few hundred waited for 4 MB to
/// be written and fsynced. `PASSIVE` never blocks readers or writers.
fn spawn_checkpointer(pool: AnyPool, alive: Weak<()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.upgrade().is_none() || pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
                && !pool.is_closed()
            {
                tracing::warn!(error = %e, "SQLite WAL checkpoint failed; retrying");
            }
        }
    });
}

/// A write transaction; on SQLite it also holds the write turn until it
/// commits or is dropped. Statements run on `&mut *tx`, as on a
/// [`Transaction`].
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl WriteTx {
    /// Commits, then gives the write turn to the next writer.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let opts = AnyConnectOptions::from_str(url)
            .with_context(|| format!("invalid database URL {url}"))?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA journal_mode=WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous=FULL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout=5000")
                            .execute(&mut *conn)
                            .await?;
                        // Checkpoints run in the background (spawn_checkpointer).
                        sqlx::query("PRAGMA wal_autocheckpoint=0")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot open the database {url}"))?;
        let write_turn = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        let alive = Arc::new(());
        if backend == Backend::Sqlite {
            spawn_checkpointer(pool.clone(), Arc::downgrade(&alive));
        }
        let db = Self {
            pool,
            backend,
            url: Arc::from(url),
            write_turn,
            _alive: alive,
        };
        db.claim_schema_version().await?;
        Ok(db)
    }

    /// Runs `f` on one connection holding the schema lock (PostgreSQL: a
    /// session advisory lock, so hosts starting at once change the schema
    /// one after the other; SQLite: one host, no lock).
    async fn with_schema_lock<T>(
        &self,
        f: impl AsyncFnOnce(&mut AnyConnection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 FROM pg_advisory_lock($1)")
                .bind(SCHEMA_LOCK)
                .fetch_one(&mut *conn)
                .await
                .context("cannot take the schema lock")?;
        }
        let r = f(&mut *conn).await;
        if self.backend == Backend::Postgres
            && sqlx::query("SELECT 1 FROM pg_advisory_unlock($1)")
                .bind(SCHEMA_LOCK)
                .fetch_one(&mut *conn)
                .await
                .is_err()
        {
            // A connection that may still hold the lock never goes back
            // to the pool: closing it releases the lock.
            drop(conn.detach());
        }
        r
    }

    /// Checks the database's schema version against [`SCHEMA_VERSION`]
    /// and records this host's when it is newer.
    async fn claim_schema_version(&self) -> anyhow::Result<()> {
        let url = self.url.clone();
        self.with_schema_lock(async move |c| {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS schema_versions (
                    component TEXT PRIMARY KEY,
                    version BIGINT NOT NULL,
                    updated_at_ms BIGINT NOT NULL
                )",
            )
            .execute(&mut *c)
            .await
            .context("cannot create table schema_versions")?;
            let found: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_versions WHERE component = 'host'")
                    .fetch_optional(&mut *c)
                    .await?;
            match found {
                Some(v) if v > SCHEMA_VERSION => anyhow::bail!(
                    "the database {url} has schema version {v}, made by a newer LeanSync release; this host knows version {SCHEMA_VERSION}: run the newer release on this host too (hosts of one database must run a release at least as new as the schema)"
                ),
                Some(v) if v == SCHEMA_VERSION => {}
                _ => {
                    sqlx::query(
                        "INSERT INTO schema_versions (component, version, updated_at_ms) VALUES ('host', $1, $2)
                         ON CONFLICT (component) DO UPDATE SET version = excluded.version, updated_at_ms = excluded.updated_at_ms",
                    )
                    .bind(SCHEMA_VERSION)
                    .bind(crate::call::now_ms() as i64)
                    .execute(&mut *c)
                    .await?;
                    if let Some(v) = found {
                        tracing::info!(from = v, to = SCHEMA_VERSION, "database schema upgraded");
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// The URL the database was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Begins a transaction that writes (see [`WriteTx`]).
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = match &self.write_turn {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        };
        Ok(WriteTx {
            tx: self.pool.begin().await?,
            _turn: turn,
        })
    }

    /// Column type of an auto-incrementing primary key.
    pub fn serial(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        }
    }

    /// Runs DDL statements in order, naming the one that failed.
    /// On PostgreSQL under the schema lock, so hosts starting at once on
    /// one database never race on `CREATE … IF NOT EXISTS`.
    pub async fn ensure(&self, what: &str, ddl: &[String]) -> anyhow::Result<()> {
        self.with_schema_lock(async |c| {
            for stmt in ddl {
                sqlx::query(stmt)
                    .execute(&mut *c)
                    .await
                    .with_context(|| format!("cannot create {what} tables: {stmt}"))?;
            }
            Ok(())
        })
        .await
    }

    /// Adds `column` (SQL declaration `decl`) to `table` of a database made
    /// before the column existed; nothing when it is there. Safe when
    /// several hosts start at once (a concurrent add counts as done).
    pub async fn add_column(&self, table: &str, column: &str, decl: &str) -> anyhow::Result<()> {
        let probe = format!("SELECT {column} FROM {table} LIMIT 0");
        if sqlx::query(&probe).execute(&self.pool).await.is_ok() {
            return Ok(());
        }
        let add = format!("ALTER TABLE {table} ADD COLUMN {column} {decl}");
        self.with_schema_lock(async |c| {
            if sqlx::query(&probe).execute(&mut *c).await.is_ok() {
                return Ok(()); // another host added it while we waited
            }
            sqlx::query(&add).execute(&mut *c).await.map_err(|e| {
                anyhow::Error::new(e).context(format!(
                    "cannot add column {column} to table {table}: {add}"
                ))
            })?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wal_is_copied_into_the_database_file_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.db");
        let db = Db::connect(&format!("sqlite://{}?mode=rwc", file.display()))
            .await
            .unwrap();
        db.ensure(
            "test",
            &["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)".into()],
        )
        .await
        .unwrap();
        let size = || std::fs::metadata(&file).unwrap().len();
        // Well under SQLite's automatic checkpoint (1,000 pages): only the
        // background checkpointer moves these rows into the file.
        let before = size();
        let mut tx = db.begin_write().await.unwrap();
        for i in 0..200 {
            sqlx::query("INSERT INTO t (id, v) VALUES (?, ?)")
                .bind(i as i64)
                .bind("x".repeat(2_000))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while size() < before + 400_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {} bytes: no checkpoint",
                size()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
