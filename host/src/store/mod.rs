//! Persistence through sqlx: SQLite (embedded default) and PostgreSQL.

/// Handle to the database (owned by the licensing work; placeholder).
#[derive(Clone)]
pub struct Store {
    /// Connection pool for the configured backend.
    pub pool: sqlx::AnyPool,
}

impl Store {
    /// Connects to `url` and runs the migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new().connect(url).await?;
        Ok(Self { pool })
    }
}
