//! The database: SQLite (embedded default, WAL) or PostgreSQL. Each module
//! owns its tables and creates them with portable DDL; only the
//! auto-increment column type differs by backend.
//!
//! Most statements go through sqlx's `Any` driver (one code path for both
//! databases). The call path's writes (the outbox: events, deliveries,
//! outcomes, claims) go through typed SQLite and PostgreSQL pools instead,
//! with the same SQL: `Any` converts every row and argument into its own
//! value type first, which was 5 % of the as-served click-to-call profile.
//! [`on_conn!`] runs one statement body on whichever connection a
//! [`TypedTx`] holds, so that code is written once.

pub mod keyfile;
pub mod shared;

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Any, AnyConnection, AnyPool, Postgres, Sqlite, Transaction};
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
    /// The typed pool of the same database, for the call path's writes
    /// (`None`: those go through `Any` too; see [`Db::any_only`]).
    typed: Option<Typed>,
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

/// A pool of the database's own driver.
#[derive(Clone)]
enum Typed {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The transaction of a [`TypedTx`], on the database's own driver (or on
/// `Any` when the typed pools are off).
pub enum TxConn {
    /// SQLite.
    Sqlite(Transaction<'static, Sqlite>),
    /// PostgreSQL.
    Postgres(Transaction<'static, Postgres>),
    /// Either, through `Any` ([`Db::any_only`]).
    Any(Transaction<'static, Any>),
}

/// A write transaction on the typed pool (see [`WriteTx`] for the write
/// turn). Statements run through [`on_conn!`].
pub struct TypedTx {
    /// The transaction.
    pub conn: TxConn,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl TypedTx {
    /// Commits, then gives the write turn to the next writer.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Sqlite(t) => t.commit().await,
            TxConn::Postgres(t) => t.commit().await,
            TxConn::Any(t) => t.commit().await,
        }
    }
}

/// Runs `$body` with `$c` bound to the connection of [`TypedTx`] `$tx`
/// (`&mut SqliteConnection`, `&mut PgConnection` or `&mut AnyConnection`):
/// the body is compiled once per driver, so it must only use what every
/// driver has (`sqlx::query`, `query_as` with a `FromRow` type, binds of
/// `i64`, `i32`, `String`, `&str`, `Option<String>`).
#[macro_export]
macro_rules! on_conn {
    ($tx:expr, $c:ident => $body:expr) => {
        match &mut $tx.conn {
            $crate::store::TxConn::Sqlite(t) => {
                let $c: &mut sqlx::SqliteConnection = &mut *t;
                $body
            }
            $crate::store::TxConn::Postgres(t) => {
                let $c: &mut sqlx::PgConnection = &mut *t;
                $body
            }
            $crate::store::TxConn::Any(t) => {
                let $c: &mut sqlx::AnyConnection = &mut *t;
                $body
            }
        }
    };
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
        let typed = Some(match backend {
            Backend::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)
                    .with_context(|| format!("invalid database URL {url}"))?
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(5))
                    .pragma("wal_autocheckpoint", "0");
                // Writers take the write turn one at a time: two
                // connections cover a writer and a reader.
                Typed::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(2)
                        .connect_lazy_with(opts),
                )
            }
            Backend::Postgres => {
                let opts = PgConnectOptions::from_str(url)
                    .with_context(|| format!("invalid database URL {url}"))?;
                Typed::Postgres(
                    PgPoolOptions::new()
                        .max_connections(4)
                        .connect_lazy_with(opts),
                )
            }
        });
        let write_turn = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        let alive = Arc::new(());
        if backend == Backend::Sqlite {
            spawn_checkpointer(pool.clone(), Arc::downgrade(&alive));
        }
        let db = Self {
            pool,
            backend,
            url: Arc::from(url),
            typed,
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

    /// Begins a write transaction on the typed pool (see [`TypedTx`]).
    pub async fn begin_typed(&self) -> Result<TypedTx, sqlx::Error> {
        let turn = match &self.write_turn {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        };
        let conn = match &self.typed {
            Some(Typed::Sqlite(p)) => TxConn::Sqlite(p.begin().await?),
            Some(Typed::Postgres(p)) => TxConn::Postgres(p.begin().await?),
            None => TxConn::Any(self.pool.begin().await?),
        };
        Ok(TypedTx { conn, _turn: turn })
    }

    /// Closes every connection of this database (its clones too).
    pub async fn close(&self) {
        match &self.typed {
            Some(Typed::Sqlite(p)) => p.close().await,
            Some(Typed::Postgres(p)) => p.close().await,
            None => {}
        }
        self.pool.close().await;
    }

    /// The same database with the typed pools off: every statement goes
    /// through `Any` (the baseline of the pipeline benchmark).
    pub fn any_only(mut self) -> Self {
        self.typed = None;
        self
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
