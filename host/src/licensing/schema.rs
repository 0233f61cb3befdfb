//! Licensing tables (portable DDL for SQLite and PostgreSQL).

use crate::store::Db;

pub(super) fn ddl(db: &Db) -> Vec<String> {
    let serial = db.serial();
    vec![
        "CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, name TEXT NOT NULL, blocked_reason TEXT, allow_international INTEGER NOT NULL DEFAULT 0, allow_premium INTEGER NOT NULL DEFAULT 0, created_at_ms BIGINT NOT NULL)".into(),
        "CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, customer_id TEXT REFERENCES customers(id), token_hash TEXT NOT NULL UNIQUE, password_hash TEXT, impersonal INTEGER NOT NULL DEFAULT 0, created_at_ms BIGINT NOT NULL)".into(),
        "CREATE TABLE IF NOT EXISTS telephony_accounts (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id), provider TEXT NOT NULL, settings TEXT NOT NULL, secret_sealed TEXT, consent_by TEXT, consent_at_ms BIGINT, consent_scope TEXT, created_at_ms BIGINT NOT NULL)".into(),
        "CREATE TABLE IF NOT EXISTS numbers (e164 TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id), telephony_account_id TEXT REFERENCES telephony_accounts(id), created_at_ms BIGINT NOT NULL)".into(),
        "CREATE TABLE IF NOT EXISTS installations (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id), connector TEXT NOT NULL, config TEXT NOT NULL, secrets_sealed TEXT NOT NULL, granted_hosts TEXT NOT NULL, deliver_internal INTEGER NOT NULL DEFAULT 0, created_at_ms BIGINT NOT NULL)".into(),
        "CREATE TABLE IF NOT EXISTS licenses (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id), installation_id TEXT NOT NULL REFERENCES installations(id), state TEXT NOT NULL, number TEXT, ordered_at_ms BIGINT NOT NULL, provisioned_at_ms BIGINT, cancelled_at_ms BIGINT)".into(),
        "CREATE INDEX IF NOT EXISTS licenses_customer ON licenses (customer_id)".into(),
        // A change reloads one customer's rows (see `index.rs`).
        "CREATE INDEX IF NOT EXISTS numbers_customer ON numbers (customer_id)".into(),
        "CREATE INDEX IF NOT EXISTS installations_customer ON installations (customer_id)".into(),
        "CREATE INDEX IF NOT EXISTS telephony_accounts_customer ON telephony_accounts (customer_id)".into(),
        "CREATE TABLE IF NOT EXISTS license_keys (id TEXT PRIMARY KEY, license_id TEXT NOT NULL REFERENCES licenses(id), secret_hash TEXT NOT NULL UNIQUE, masked TEXT NOT NULL, revoked_at_ms BIGINT, blocked_reason TEXT, created_at_ms BIGINT NOT NULL)".into(),
        format!("CREATE TABLE IF NOT EXISTS audit (seq {serial}, at_ms BIGINT NOT NULL, actor_id TEXT NOT NULL, actor_name TEXT NOT NULL, impersonal INTEGER NOT NULL, customer_id TEXT, action TEXT NOT NULL, target TEXT NOT NULL, before_json TEXT, after_json TEXT)"),
        "CREATE INDEX IF NOT EXISTS license_keys_license ON license_keys (license_id)".into(),
        "CREATE INDEX IF NOT EXISTS audit_customer ON audit (customer_id, seq)".into(),
        "CREATE TABLE IF NOT EXISTS prices (connector TEXT NOT NULL, valid_from TEXT NOT NULL, monthly_chf TEXT NOT NULL, PRIMARY KEY (connector, valid_from))".into(),
        // The change feed (see `mutation.rs`): one row per committed mutation.
        format!("CREATE TABLE IF NOT EXISTS changes (seq {serial}, at_ms BIGINT NOT NULL, customer_id TEXT, action TEXT NOT NULL, target TEXT NOT NULL, scope TEXT NOT NULL, license_id TEXT)"),
        // A value sealed with the service's secret key, so a host started
        // with another key refuses to run instead of reading empty secrets.
        "CREATE TABLE IF NOT EXISTS service_keys (name TEXT PRIMARY KEY, sealed TEXT NOT NULL)".into(),
        format!("CREATE TABLE IF NOT EXISTS notifications (seq {serial}, at_ms BIGINT NOT NULL, customer_id TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL)"),
    ]
}

/// Columns added after their table was first released, as (table, column,
/// declaration): added to older databases at start (see `Db::add_column`).
pub(super) const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("accounts", "token_expires_at_ms", "BIGINT"),
    ("accounts", "disabled_reason", "TEXT"),
    ("accounts", "disabled_at_ms", "BIGINT"),
    ("accounts", "password_changed_at_ms", "BIGINT"),
    ("installations", "dial_blocked_reason", "TEXT"),
    ("installations", "allow_networks", "TEXT"),
];
