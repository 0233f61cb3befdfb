//! The database: SQLite (embedded default, WAL) or PostgreSQL, through
//! sqlx's `Any` driver. Each module owns its tables and creates them with
//! portable DDL; only the auto-increment column type differs by backend.

use std::str::FromStr;

use anyhow::Context;
use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

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
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot open the database {url}"))?;
        Ok(Self { pool, backend })
    }

    /// Column type of an auto-incrementing primary key.
    pub fn serial(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        }
    }

    /// Runs DDL statements in order, naming the one that failed.
    pub async fn ensure(&self, what: &str, ddl: &[String]) -> anyhow::Result<()> {
        for stmt in ddl {
            sqlx::query(stmt)
                .execute(&self.pool)
                .await
                .with_context(|| format!("cannot create {what} tables: {stmt}"))?;
        }
        Ok(())
    }
}
