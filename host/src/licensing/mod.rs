//! Customers, consent, numbers, installations, licenses, LeanSync Keys,
//! blocking, usage report and audit. Every mutation is audited and rebuilds
//! the in-memory index that the call path reads (no database on lookups).

mod accounts;
pub mod billing;
pub mod cli;
pub mod crypto;
pub mod index;
pub mod keys;
pub mod lines;
mod mutation;
pub mod queries;
mod read;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use parking_lot::RwLock;
use serde::Serialize;
use sqlx::Row;
use tokio::sync::watch;

use crate::call::now_ms;
use crate::number::E164;
use crate::store::Db;
pub use accounts::Refusal;
pub use crypto::Sealer;
pub use index::Index;
pub use keys::Secret;
pub use lines::{Line, Lines};
use mutation::{Mutation, Record};

/// A licensing error: a stable code and a message naming input and fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// Kind, mapped to an HTTP status at the API boundary.
    pub kind: ErrorKind,
    /// Stable code, e.g. `license_not_available`.
    pub code: &'static str,
    /// Human message.
    pub message: String,
}

/// Error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input.
    Invalid,
    /// No such thing (or not visible to the caller).
    NotFound,
    /// Not allowed in the current state.
    Conflict,
    /// Not allowed for this caller.
    Forbidden,
    /// Storage failure.
    Internal,
    /// Too much work at once; try again in a moment.
    Busy,
}

impl Error {
    fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }
    pub(crate) fn invalid(code: &'static str, m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, m)
    }
    fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            "not_found",
            format!("no {what} '{id}'"),
        )
    }
    fn conflict(code: &'static str, m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, m)
    }
    fn busy() -> Self {
        Self::new(
            ErrorKind::Busy,
            "busy",
            "the host is checking many passwords at once; try again in a second",
        )
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "licensing storage error");
        Self::new(
            ErrorKind::Internal,
            "internal",
            "storage error; see the host log",
        )
    }
}

/// Result of licensing operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Who performs an action (for authorisation and the audit log).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Actor {
    /// Account id.
    pub account_id: String,
    /// Display (e-mail).
    pub name: String,
    /// `None` for operators; the customer for customer admins.
    pub customer_id: Option<String>,
    /// Shared/impersonal account (flagged in the audit log).
    pub impersonal: bool,
}

impl Actor {
    /// The host itself (automatic actions such as the burst rule).
    pub fn system() -> Self {
        Self {
            account_id: "system".into(),
            name: "system".into(),
            customer_id: None,
            impersonal: false,
        }
    }

    /// Whether this actor runs the service for all customers.
    pub fn is_operator(&self) -> bool {
        self.customer_id.is_none()
    }

    /// Fails unless the actor may act on `customer`. Other customers' data
    /// is reported as not found, so its existence is not revealed.
    pub fn check_customer(&self, customer: &str) -> Result<()> {
        match &self.customer_id {
            None => Ok(()),
            Some(c) if c == customer => Ok(()),
            Some(_) => Err(Error::not_found("customer", customer)),
        }
    }

    /// Fails unless the actor is an operator.
    pub fn require_operator(&self) -> Result<()> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Forbidden,
                "operator_only",
                "only an operator admin may do this",
            ))
        }
    }
}

/// Validates installation configs against connector schemas (the plugin
/// runtime implements it).
pub trait ConnectorCatalog: Send + Sync + 'static {
    /// Secret field names of `connector`, or `None` if it is not loaded.
    fn secret_fields(&self, connector: &str) -> Option<Vec<String>>;
    /// Problems with `config` for `connector` (empty when valid).
    fn validate(
        &self,
        connector: &str,
        config: &serde_json::Value,
    ) -> futures::future::BoxFuture<'static, std::result::Result<Vec<String>, String>>;
}

/// The licensing service (cheap to clone).
#[derive(Clone)]
pub struct Licensing {
    db: Db,
    sealer: Sealer,
    index: Arc<RwLock<Index>>,
    monitored: watch::Sender<BTreeSet<E164>>,
    lines: watch::Sender<Arc<Lines>>,
    catalog: Arc<dyn ConnectorCatalog>,
    notify_webhook: Option<Arc<str>>,
    /// One index catch-up at a time (see [`Licensing::catch_up`]).
    applying: Arc<tokio::sync::Mutex<()>>,
    /// The change sequence the index reflects (-1: not loaded yet).
    applied: Arc<AtomicI64>,
    /// How long a new API token works (ms; 0: forever).
    token_ttl_ms: i64,
    /// Whether operators may make simulated (`sim`) telephony accounts.
    sim_accounts: bool,
}

/// Refuses settings of a `provider` telephony account the host cannot use
/// (a `sip` account's connection settings), naming every bad key.
fn check_telephony_settings(
    provider: &str,
    settings: &serde_json::Value,
    secret: Option<&str>,
) -> Result<()> {
    if !settings.is_object() {
        return Err(Error::invalid(
            "invalid_settings",
            "settings must be a JSON object, e.g. {\"server\": \"pbx.example.ch:5060\", \"username\": \"leansync\"}",
        ));
    }
    let problems = crate::telephony::account_settings_problems(provider, settings, secret);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid("invalid_settings", problems.join("; ")))
    }
}

/// What the key check seals.
const KEY_CHECK: &str = "leansync secret key check";

/// Refuses to run with a secret key other than the one that sealed the
/// database's secrets (several hosts each making their own `secret.key`):
/// the first host to start stores a value sealed with its key, every host
/// after it must open it.
async fn check_secret_key(db: &Db, sealer: &Sealer) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO service_keys (name, sealed) VALUES ('check', $1) ON CONFLICT (name) DO NOTHING")
        .bind(sealer.seal(KEY_CHECK))
        .execute(&db.pool)
        .await?;
    let sealed: String = sqlx::query("SELECT sealed FROM service_keys WHERE name = 'check'")
        .fetch_one(&db.pool)
        .await?
        .try_get(0)?;
    match sealer.open(&sealed) {
        Ok(v) if v == KEY_CHECK => Ok(()),
        _ => anyhow::bail!(
            "this host's secret key is not the one that sealed this database's secrets (another host of the service made the first one); copy the first host's key file to this host and point secret_key_file (LEANSYNC_SECRET_KEY_FILE) at it, then start again"
        ),
    }
}

/// Days an API token works unless `admin_token_ttl_days` says otherwise.
pub const DEFAULT_TOKEN_TTL_DAYS: u32 = 90;

pub(crate) fn id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

impl Licensing {
    /// Opens the licensing tables on `db` and loads the index.
    pub async fn open(
        db: Db,
        sealer: Sealer,
        catalog: Arc<dyn ConnectorCatalog>,
    ) -> anyhow::Result<Self> {
        db.ensure("licensing", &schema::ddl(&db)).await?;
        for (table, column, decl) in schema::ADDED_COLUMNS {
            db.add_column(table, column, decl).await?;
        }
        check_secret_key(&db, &sealer).await?;
        let (monitored, _) = watch::channel(BTreeSet::new());
        let l = Self {
            db,
            sealer,
            index: Arc::default(),
            monitored,
            lines: watch::Sender::new(Arc::default()),
            catalog,
            notify_webhook: None,
            applying: Arc::default(),
            applied: Arc::new(AtomicI64::new(-1)),
            token_ttl_ms: DEFAULT_TOKEN_TTL_DAYS as i64 * 86_400_000,
            sim_accounts: true,
        };
        l.catch_up().await?;
        Ok(l)
    }

    /// New API tokens work for `days` days (0: until rotated).
    pub fn with_token_ttl_days(mut self, days: u32) -> Self {
        self.token_ttl_ms = days as i64 * 86_400_000;
        self
    }

    /// An opaque, tamper-proof ticket for `secret` (a LeanSync Key) that
    /// stops working at `expires_at_ms`: sealed with the host's secret key,
    /// so every host sharing that key opens it, and it never shows the key.
    pub fn seal_ticket(&self, secret: &str, expires_at_ms: u64) -> String {
        use base64::Engine;
        let sealed = self.sealer.seal(&format!("{expires_at_ms}:{secret}"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .unwrap_or_default();
        format!(
            "lst_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }

    /// The key a [`Licensing::seal_ticket`] ticket stands for, and when it
    /// expires; `None` for anything not made by a host of this service.
    pub fn open_ticket(&self, ticket: &str) -> Option<(String, u64)> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(ticket.strip_prefix("lst_")?)
            .ok()?;
        let plain = self
            .sealer
            .open(&base64::engine::general_purpose::STANDARD.encode(raw))
            .ok()?;
        let (exp, secret) = plain.split_once(':')?;
        Some((secret.to_owned(), exp.parse().ok()?))
    }

    /// Whether simulated telephony accounts may be made (operators only;
    /// `telephony.sim_accounts = false` turns them off on a production host).
    pub fn with_sim_accounts(mut self, allowed: bool) -> Self {
        self.sim_accounts = allowed;
        self
    }

    /// When a token issued now expires.
    fn token_expiry(&self) -> Option<i64> {
        (self.token_ttl_ms > 0).then(|| now_ms() as i64 + self.token_ttl_ms)
    }

    /// Also POSTs every notification as JSON to `url` (empty: none).
    pub fn with_notify_webhook(mut self, url: &str) -> Self {
        self.notify_webhook = (!url.trim().is_empty()).then(|| Arc::from(url.trim()));
        self
    }

    /// The index, for a lookup: changes wait while the guard lives, so
    /// drop it before anything slow.
    pub fn index(&self) -> parking_lot::RwLockReadGuard<'_, Index> {
        self.index.read()
    }

    /// Numbers with at least one active license, updated on every change.
    pub fn monitored_numbers(&self) -> watch::Receiver<BTreeSet<E164>> {
        self.monitored.subscribe()
    }

    /// The telephony accounts with their settings and opened secrets, and
    /// the account of each number, updated on every change.
    pub fn telephony_lines(&self) -> watch::Receiver<Arc<Lines>> {
        self.lines.subscribe()
    }

    /// Sends a committed notification to the operator's notification
    /// webhook, if one is set (it stays in the notification list anyway).
    fn send_notification(&self, customer: &str, kind: &str, message: &str) {
        tracing::info!(customer, kind, "{message}");
        if let Some(url) = self.notify_webhook.clone() {
            let body = serde_json::json!({ "customer_id": customer, "kind": kind, "message": message, "at_ms": now_ms() });
            tokio::spawn(async move {
                let sent = reqwest::Client::new()
                    .post(&*url)
                    .json(&body)
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => {
                        tracing::warn!(status = %r.status(), %url, "notification webhook refused the notification (it stays in the notification list)")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %url, "notification webhook unreachable (the notification stays in the notification list)")
                    }
                }
            });
        }
    }

    /// A pooled connection for reads.
    async fn reader(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.db.pool.acquire().await?)
    }

    // ---- accounts -------------------------------------------------------

    /// Creates an account and returns it with its API token (shown once).
    pub async fn create_account(
        &self,
        actor: &Actor,
        customer: Option<&str>,
        email: &str,
        impersonal: bool,
    ) -> Result<(AccountView, Secret)> {
        match customer {
            None => actor.require_operator()?,
            Some(c) => {
                actor.check_customer(c)?;
                self.customer_exists(c).await?;
            }
        }
        let email = email.trim();
        if !email.contains('@') || email.len() > 200 {
            return Err(Error::invalid(
                "invalid_email",
                format!(
                    "'{email}' is not an e-mail address; personal accounts are identified by e-mail"
                ),
            ));
        }
        let token = Secret::generate("lsa");
        let acc_id = id("acc");
        let mut m = self.begin().await?;
        let expires = self.token_expiry();
        let res = sqlx::query("INSERT INTO accounts (id, email, customer_id, token_hash, impersonal, created_at_ms, token_expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&acc_id)
            .bind(email)
            .bind(customer.map(str::to_owned))
            .bind(token.hash())
            .bind(impersonal as i32)
            .bind(now_ms() as i64)
            .bind(expires)
            .execute(m.conn())
            .await;
        if let Err(sqlx::Error::Database(e)) = &res
            && e.is_unique_violation()
        {
            return Err(Error::conflict(
                "email_taken",
                format!("an account for '{email}' already exists"),
            ));
        }
        res?;
        let view = AccountView {
            id: acc_id.clone(),
            email: email.into(),
            customer_id: customer.map(str::to_owned),
            role: if customer.is_some() {
                "customer_admin"
            } else {
                "operator"
            },
            impersonal,
            disabled_reason: None,
            token_expires_at_ms: expires,
        };
        let rec = Record::created(actor, customer, "account.create", &acc_id, &view).no_index();
        self.commit(m, rec).await?;
        Ok((view, token))
    }

    /// Whether any operator account exists (for `admin bootstrap`).
    pub async fn has_operator(&self) -> Result<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM accounts WHERE customer_id IS NULL")
            .fetch_one(&self.db.pool)
            .await?
            .try_get(0)?;
        Ok(n > 0)
    }

    // ---- customers ------------------------------------------------------

    async fn customer_exists(&self, c: &str) -> Result<()> {
        read::customer(&mut *self.reader().await?, c)
            .await
            .map(drop)
    }

    /// Creates a customer (operator only).
    pub async fn create_customer(&self, actor: &Actor, name: &str) -> Result<CustomerView> {
        actor.require_operator()?;
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(Error::invalid(
                "invalid_name",
                "customer name must be 1-200 characters",
            ));
        }
        let cid = id("cus");
        let mut m = self.begin().await?;
        sqlx::query("INSERT INTO customers (id, name, allow_international, allow_premium, created_at_ms) VALUES ($1, $2, 0, 0, $3)")
            .bind(&cid)
            .bind(name)
            .bind(now_ms() as i64)
            .execute(m.conn())
            .await?;
        let view = read::customer(m.conn(), &cid).await?;
        let rec = Record::created(actor, Some(&cid), "customer.create", &cid, &view);
        self.commit(m, rec).await?;
        Ok(view)
    }

    /// One customer.
    pub async fn customer(&self, actor: &Actor, cid: &str) -> Result<CustomerView> {
        actor.check_customer(cid)?;
        read::customer(&mut *self.reader().await?, cid).await
    }

    /// Customers visible to the actor.
    pub async fn customers(&self, actor: &Actor) -> Result<Vec<CustomerView>> {
        let rows = sqlx::query("SELECT id FROM customers ORDER BY id")
            .fetch_all(&self.db.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let cid: String = r.try_get(0)?;
            if actor.check_customer(&cid).is_ok() {
                out.push(self.customer(actor, &cid).await?);
            }
        }
        Ok(out)
    }

    /// Blocks (`Some(reason)`) or unblocks (`None`) a customer at once.
    pub async fn set_customer_block(
        &self,
        actor: &Actor,
        cid: &str,
        reason: Option<&str>,
    ) -> Result<CustomerView> {
        actor.require_operator()?;
        if let Some(r) = reason
            && r.trim().is_empty()
        {
            self.customer_exists(cid).await?;
            return Err(Error::invalid(
                "reason_required",
                "give a reason for blocking; it is shown to the customer and kept in the audit log",
            ));
        }
        let mut m = self.begin().await?;
        let before = read::customer(m.conn(), cid).await?;
        sqlx::query("UPDATE customers SET blocked_reason = $1 WHERE id = $2")
            .bind(reason.map(str::to_owned))
            .bind(cid)
            .execute(m.conn())
            .await?;
        let after = read::customer(m.conn(), cid).await?;
        let action = if reason.is_some() {
            "customer.block"
        } else {
            "customer.unblock"
        };
        let rec = Record::change(actor, Some(cid), action, cid, &before, &after);
        self.commit(m, rec).await?;
        Ok(after)
    }

    /// Sets what a customer may dial (operator only).
    pub async fn set_dial_permissions(
        &self,
        actor: &Actor,
        cid: &str,
        international: bool,
        premium: bool,
    ) -> Result<CustomerView> {
        actor.require_operator()?;
        let mut m = self.begin().await?;
        let before = read::customer(m.conn(), cid).await?;
        sqlx::query(
            "UPDATE customers SET allow_international = $1, allow_premium = $2 WHERE id = $3",
        )
        .bind(international as i32)
        .bind(premium as i32)
        .bind(cid)
        .execute(m.conn())
        .await?;
        let after = read::customer(m.conn(), cid).await?;
        let rec = Record::change(
            actor,
            Some(cid),
            "customer.dial_permissions",
            cid,
            &before,
            &after,
        );
        self.commit(m, rec).await?;
        Ok(after)
    }

    // ---- telephony accounts and consent ---------------------------------

    /// Adds a telephony account; `secret` is stored encrypted, never returned.
    pub async fn create_telephony_account(
        &self,
        actor: &Actor,
        cid: &str,
        provider: &str,
        settings: serde_json::Value,
        secret: Option<&str>,
    ) -> Result<TelephonyAccountView> {
        actor.check_customer(cid)?;
        self.customer_exists(cid).await?;
        if !["sim", "sip"].contains(&provider) {
            return Err(Error::invalid(
                "invalid_provider",
                format!("provider '{provider}' is unknown; use \"sim\" or \"sip\""),
            ));
        }
        self.may_manage_sim(actor, provider)?;
        check_telephony_settings(provider, &settings, secret)?;
        let tid = id("tel");
        let mut m = self.begin().await?;
        sqlx::query("INSERT INTO telephony_accounts (id, customer_id, provider, settings, secret_sealed, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&tid)
            .bind(cid)
            .bind(provider)
            .bind(settings.to_string())
            .bind(secret.map(|s| self.sealer.seal(s)))
            .bind(now_ms() as i64)
            .execute(m.conn())
            .await?;
        let view = read::telephony_account(m.conn(), &tid).await?;
        let rec = Record::created(actor, Some(cid), "telephony_account.create", &tid, &view);
        // Its own connection (provider `sip`) starts once this commits.
        self.commit(m, rec).await?;
        Ok(view)
    }

    /// A simulated account is served by the host's own PBX connection, so
    /// whoever sets its numbers decides whose calls a customer sees: only
    /// an operator makes or changes one, and only where the host allows
    /// them at all.
    fn may_manage_sim(&self, actor: &Actor, provider: &str) -> Result<()> {
        if provider != "sim" {
            return Ok(());
        }
        if !self.sim_accounts {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "sim_disabled",
                "simulated telephony accounts are turned off on this host (telephony.sim_accounts = false); connect a PBX with provider \"sip\"",
            ));
        }
        if !actor.is_operator() {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "sim_operator_only",
                "a simulated telephony account is served by the host's own telephony connection, so only an operator makes or changes one; connect your own PBX with provider \"sip\", or ask your operator",
            ));
        }
        Ok(())
    }

    /// The telephony account `tid` inside mutation `m`, if `actor` may see it.
    async fn visible_telephony_account(
        m: &mut Mutation,
        actor: &Actor,
        tid: &str,
    ) -> Result<TelephonyAccountView> {
        let view = read::telephony_account(m.conn(), tid).await?;
        actor
            .check_customer(&view.customer_id)
            .map_err(|_| Error::not_found("telephony account", tid))?;
        Ok(view)
    }

    /// Changes the settings and/or the secret of a telephony account (what
    /// is not given stays); a `sip` account's connection restarts with them.
    pub async fn update_telephony_account(
        &self,
        actor: &Actor,
        tid: &str,
        settings: Option<serde_json::Value>,
        secret: Option<&str>,
    ) -> Result<TelephonyAccountView> {
        let mut m = self.begin().await?;
        let before = Self::visible_telephony_account(&mut m, actor, tid).await?;
        self.may_manage_sim(actor, &before.provider)?;
        let settings = settings.unwrap_or_else(|| before.settings.clone());
        let stored: Option<String> =
            sqlx::query("SELECT secret_sealed FROM telephony_accounts WHERE id = $1")
                .bind(tid)
                .fetch_one(m.conn())
                .await?
                .try_get(0)?;
        let secret_now = match secret {
            Some(s) => Some(s.to_owned()),
            None => stored.and_then(|s| self.sealer.open(&s).ok()),
        };
        check_telephony_settings(&before.provider, &settings, secret_now.as_deref())?;
        sqlx::query("UPDATE telephony_accounts SET settings = $1, secret_sealed = COALESCE($2, secret_sealed) WHERE id = $3")
            .bind(settings.to_string())
            .bind(secret.map(|s| self.sealer.seal(s)))
            .bind(tid)
            .execute(m.conn())
            .await?;
        let action = if secret.is_some() {
            "telephony_account.update_with_secret"
        } else {
            "telephony_account.update"
        };
        self.commit_telephony_account(m, actor, action, before)
            .await
    }

    /// Audits and commits a change of telephony account `before` as
    /// `action`; returns the account as it is now.
    async fn commit_telephony_account(
        &self,
        mut m: Mutation,
        actor: &Actor,
        action: &str,
        before: TelephonyAccountView,
    ) -> Result<TelephonyAccountView> {
        let after = read::telephony_account(m.conn(), &before.id).await?;
        let rec = Record::change(
            actor,
            Some(&after.customer_id),
            action,
            &before.id,
            &before,
            &after,
        );
        self.commit(m, rec).await?;
        Ok(after)
    }

    /// One telephony account (without its secret).
    pub async fn telephony_account(
        &self,
        actor: &Actor,
        tid: &str,
    ) -> Result<TelephonyAccountView> {
        let view = read::telephony_account(&mut *self.reader().await?, tid).await?;
        actor
            .check_customer(&view.customer_id)
            .map_err(|_| Error::not_found("telephony account", tid))?;
        Ok(view)
    }

    /// Records explicit consent to read the account's numbers.
    pub async fn grant_consent(
        &self,
        actor: &Actor,
        tid: &str,
        scope: &str,
    ) -> Result<TelephonyAccountView> {
        let mut m = self.begin().await?;
        let before = Self::visible_telephony_account(&mut m, actor, tid).await?;
        if actor.is_operator() {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "customer_admin_only",
                "consent must be given by an admin of the customer, not by the operator",
            ));
        }
        sqlx::query("UPDATE telephony_accounts SET consent_by = $1, consent_at_ms = $2, consent_scope = $3 WHERE id = $4")
            .bind(&actor.name)
            .bind(now_ms() as i64)
            .bind(scope)
            .bind(tid)
            .execute(m.conn())
            .await?;
        m.notify(
            &before.customer_id,
            "consent.grant",
            format!(
                "{} gave consent to read the numbers of telephony account {tid} ({scope})",
                actor.name
            ),
        )
        .await?;
        self.commit_telephony_account(m, actor, "consent.grant", before)
            .await
    }

    /// Revokes consent: monitoring and click-to-call stop at once.
    pub async fn revoke_consent(&self, actor: &Actor, tid: &str) -> Result<TelephonyAccountView> {
        let mut m = self.begin().await?;
        let before = Self::visible_telephony_account(&mut m, actor, tid).await?;
        sqlx::query("UPDATE telephony_accounts SET consent_by = NULL, consent_at_ms = NULL, consent_scope = NULL WHERE id = $1")
            .bind(tid)
            .execute(m.conn())
            .await?;
        m.notify(
            &before.customer_id,
            "consent.revoke",
            format!("{} revoked consent for telephony account {tid}", actor.name),
        )
        .await?;
        self.commit_telephony_account(m, actor, "consent.revoke", before)
            .await
    }

    /// Stores the new ones of `numbers` for `customer` inside `m`; the
    /// caller's transaction makes it all or nothing (nothing is stored if
    /// any is bad or belongs to another customer).
    async fn store_numbers(
        m: &mut Mutation,
        customer: &str,
        account: Option<&str>,
        verified: bool,
        numbers: &[String],
    ) -> Result<Vec<E164>> {
        let parsed: Vec<E164> = numbers
            .iter()
            .map(|n| E164::parse(n).map_err(|e| Error::invalid("invalid_number", e.to_string())))
            .collect::<Result<_>>()?;
        for n in &parsed {
            let owner: Option<(String, Option<String>)> = sqlx::query(
                "SELECT n.customer_id, t.provider FROM numbers n LEFT JOIN telephony_accounts t ON t.id = n.telephony_account_id WHERE n.e164 = $1",
            )
            .bind(n.as_str())
            .fetch_optional(m.conn())
            .await?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?;
            match owner {
                // A number verified by the operator (entered by hand, or
                // from a simulated account an operator made) outranks the
                // same number claimed through another customer's own PBX:
                // the claim ends, the number moves.
                Some((o, Some(p))) if o != customer && p == "sip" && verified => {
                    Self::take_number(m, n, &o, customer, account).await?;
                }
                Some((o, _)) if o != customer => {
                    return Err(Error::conflict(
                        "number_taken",
                        format!(
                            "{n} belongs to another customer; if it is this customer's, an operator can move it: POST /api/v1/numbers/{}/move {{\"customer\": \"{customer}\", \"reason\": \"...\"}}",
                            n.as_str()
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    sqlx::query("INSERT INTO numbers (e164, customer_id, telephony_account_id, created_at_ms) VALUES ($1, $2, $3, $4)")
                        .bind(n.as_str())
                        .bind(customer)
                        .bind(account.map(str::to_owned))
                        .bind(now_ms() as i64)
                        .execute(m.conn())
                        .await?;
                }
            }
        }
        Ok(parsed)
    }

    /// Moves number `n` from customer `from` to `to` inside `m` (from
    /// telephony account `account` of `to`, or none: operator-entered):
    /// `from`'s licenses on it are unassigned, both customers are told.
    async fn take_number(
        m: &mut Mutation,
        n: &E164,
        from: &str,
        to: &str,
        account: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE licenses SET number = NULL WHERE customer_id = $1 AND number = $2")
            .bind(from)
            .bind(n.as_str())
            .execute(m.conn())
            .await?;
        sqlx::query(
            "UPDATE numbers SET customer_id = $1, telephony_account_id = $2 WHERE e164 = $3",
        )
        .bind(to)
        .bind(account.map(str::to_owned))
        .bind(n.as_str())
        .execute(m.conn())
        .await?;
        m.notify(
            from,
            "number.moved_away",
            format!("{n} was moved to another customer by the operator; its licenses here are unassigned"),
        )
        .await?;
        m.notify(
            to,
            "number.moved_here",
            format!("{n} is now a number of this customer"),
        )
        .await?;
        m.also_touches(from);
        Ok(())
    }

    /// Moves a number to customer `to` (an operator settles a dispute):
    /// the previous owner's licenses on it are unassigned, both are told,
    /// and the move is audited with its reason.
    pub async fn move_number(
        &self,
        actor: &Actor,
        number: &str,
        to: &str,
        why: &str,
    ) -> Result<NumberView> {
        actor.require_operator()?;
        let why = why.trim();
        if why.is_empty() || why.chars().count() > 500 {
            return Err(Error::invalid(
                "invalid_reason",
                "give a reason of 1 to 500 characters, e.g. {\"customer\": \"cus_...\", \"reason\": \"ported to this customer, ticket 4711\"}",
            ));
        }
        let n = E164::parse(number).map_err(|e| Error::invalid("invalid_number", e.to_string()))?;
        self.customer_exists(to).await?;
        let mut m = self.begin().await?;
        let from: String = sqlx::query("SELECT customer_id FROM numbers WHERE e164 = $1")
            .bind(n.as_str())
            .fetch_optional(m.conn())
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .ok_or_else(|| Error::not_found("number", n.as_str()))?;
        if from == to {
            return Err(Error::conflict(
                "already_there",
                format!("{n} already belongs to customer {to}"),
            ));
        }
        Self::take_number(&mut m, &n, &from, to, None).await?;
        let rec = Record {
            actor,
            customer: Some(to),
            action: "number.move",
            target: n.as_str(),
            before: Some(serde_json::json!({ "customer_id": from })),
            after: Some(serde_json::json!({ "customer_id": to, "reason": why })),
            touches: mutation::Touches::Customer,
        };
        self.commit(m, rec).await?;
        Ok(NumberView {
            national: n.national(),
            e164: n.as_str().to_owned(),
            telephony_account_id: None,
        })
    }

    /// Stores `numbers` for `customer` (from telephony account `account`,
    /// or entered by an operator) and audits it as `action` on `target`.
    /// `verified`: the host's own telephony vouches for them.
    #[allow(clippy::too_many_arguments)]
    async fn add_numbers_as(
        &self,
        actor: &Actor,
        customer: &str,
        account: Option<&str>,
        verified: bool,
        numbers: &[String],
        action: &str,
        target: &str,
    ) -> Result<Vec<NumberView>> {
        let mut m = self.begin().await?;
        let parsed = Self::store_numbers(&mut m, customer, account, verified, numbers).await?;
        let rec = Record::created(actor, Some(customer), action, target, &parsed);
        self.commit(m, rec).await?;
        self.numbers(actor, customer).await
    }

    /// Imports numbers read from the telephony account; refused without consent.
    pub async fn import_numbers(
        &self,
        actor: &Actor,
        tid: &str,
        numbers: &[String],
    ) -> Result<Vec<NumberView>> {
        let acc = self.telephony_account(actor, tid).await?;
        if acc.consent.is_none() {
            return Err(Error::conflict(
                "consent_required",
                format!(
                    "telephony account {tid} has no consent; a customer admin must grant consent before numbers are imported"
                ),
            ));
        }
        // Only what the account itself reports: a simulated account's
        // numbers are set by an operator, a PBX's by its own settings and
        // served only through that PBX (see `telephony::hub`).
        let reported: Vec<E164> = acc
            .settings
            .get("numbers")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().and_then(|s| E164::parse(s).ok()))
            .collect();
        for n in numbers {
            E164::parse(n).map_err(|e| Error::invalid("invalid_number", e.to_string()))?;
        }
        let foreign: Vec<String> = numbers
            .iter()
            .filter_map(|n| E164::parse(n).ok())
            .filter(|e| !reported.contains(e))
            .map(|e| e.as_str().to_owned())
            .collect();
        if !foreign.is_empty() {
            return Err(Error::invalid(
                "number_not_reported",
                format!(
                    "telephony account {tid} does not report {}; import only numbers it lists (settings.numbers of GET /api/v1/telephony-accounts/{tid}), or ask an operator to enter a number by hand",
                    foreign.join(", ")
                ),
            ));
        }
        self.add_numbers_as(
            actor,
            &acc.customer_id,
            Some(tid),
            acc.provider == "sim",
            numbers,
            "numbers.import",
            tid,
        )
        .await
    }

    /// Numbers entered by an operator (no telephony account, no consent
    /// needed). All are validated before any is stored.
    pub async fn add_numbers(
        &self,
        actor: &Actor,
        cid: &str,
        numbers: &[String],
    ) -> Result<Vec<NumberView>> {
        actor.require_operator()?;
        self.customer_exists(cid).await?;
        self.add_numbers_as(actor, cid, None, true, numbers, "numbers.add", cid)
            .await
    }

    /// Numbers of a customer.
    pub async fn numbers(&self, actor: &Actor, cid: &str) -> Result<Vec<NumberView>> {
        actor.check_customer(cid)?;
        let rows = sqlx::query(
            "SELECT e164, telephony_account_id FROM numbers WHERE customer_id = $1 ORDER BY e164",
        )
        .bind(cid)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let e: String = r.try_get(0)?;
                let n = E164::parse(&e)
                    .map_err(|er| Error::invalid("invalid_number", er.to_string()))?;
                Ok(NumberView {
                    national: n.national(),
                    e164: e,
                    telephony_account_id: r.try_get(1)?,
                })
            })
            .collect()
    }

    // ---- installations ---------------------------------------------------

    /// Enables a connector for a customer with a validated config.
    pub async fn create_installation(
        &self,
        actor: &Actor,
        cid: &str,
        req: NewInstallation,
    ) -> Result<InstallationView> {
        actor.check_customer(cid)?;
        self.customer_exists(cid).await?;
        let secret_names = self.catalog.secret_fields(&req.connector).ok_or_else(|| {
            Error::invalid(
                "unknown_connector",
                format!(
                    "connector '{}' is not loaded; GET /api/v1/plugins lists the available ones",
                    req.connector
                ),
            )
        })?;
        let problems = self
            .catalog
            .validate(&req.connector, &req.config)
            .await
            .map_err(|e| Error::invalid("invalid_config", e))?;
        if !problems.is_empty() {
            return Err(Error::invalid(
                "invalid_config",
                format!(
                    "config for '{}' is invalid: {}",
                    req.connector,
                    problems.join("; ")
                ),
            ));
        }
        let mut config = req.config.clone();
        let mut secrets = serde_json::Map::new();
        if let Some(obj) = config.as_object_mut() {
            for name in &secret_names {
                if let Some(v) = obj.remove(name) {
                    secrets.insert(name.clone(), v);
                }
            }
        }
        for h in &req.granted_hosts {
            crate::plugins::capabilities::HostPattern::parse(h)
                .map_err(|m| Error::invalid("invalid_host", format!("granted host '{h}': {m}")))?;
        }
        let iid = id("ins");
        let mut m = self.begin().await?;
        sqlx::query("INSERT INTO installations (id, customer_id, connector, config, secrets_sealed, granted_hosts, deliver_internal, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&iid)
            .bind(cid)
            .bind(&req.connector)
            .bind(config.to_string())
            .bind(self.sealer.seal(&serde_json::Value::Object(secrets).to_string()))
            .bind(serde_json::to_string(&req.granted_hosts).unwrap_or_default())
            .bind(req.deliver_internal as i32)
            .bind(now_ms() as i64)
            .execute(m.conn())
            .await?;
        let view = read::installation(m.conn(), &iid).await?;
        let rec = Record::created(actor, Some(cid), "installation.create", &iid, &view);
        self.commit(m, rec).await?;
        Ok(view)
    }

    /// One installation (secrets never included).
    pub async fn installation(&self, actor: &Actor, iid: &str) -> Result<InstallationView> {
        let view = read::installation(&mut *self.reader().await?, iid).await?;
        actor
            .check_customer(&view.customer_id)
            .map_err(|_| Error::not_found("installation", iid))?;
        Ok(view)
    }

    // ---- licenses and keys ----------------------------------------------

    /// Orders `count` licenses for an installation (state `ordered`).
    pub async fn order_licenses(
        &self,
        actor: &Actor,
        iid: &str,
        count: u32,
    ) -> Result<Vec<LicenseView>> {
        let inst = self.installation(actor, iid).await?;
        if !(1..=1000).contains(&count) {
            return Err(Error::invalid(
                "invalid_count",
                format!("count {count} is out of range; order 1 to 1000 licenses at a time"),
            ));
        }
        let mut ids = Vec::new();
        let mut m = self.begin().await?;
        for _ in 0..count {
            let lid = id("lic");
            sqlx::query("INSERT INTO licenses (id, customer_id, installation_id, state, ordered_at_ms) VALUES ($1, $2, $3, 'ordered', $4)")
                .bind(&lid)
                .bind(&inst.customer_id)
                .bind(iid)
                .bind(now_ms() as i64)
                .execute(m.conn())
                .await?;
            ids.push(lid);
        }
        let mut out = Vec::new();
        for l in &ids {
            out.push(read::license(m.conn(), l).await?);
        }
        let rec = Record::created(
            actor,
            Some(&inst.customer_id),
            "license.order",
            iid,
            &serde_json::json!({ "licenses": ids }),
        )
        .no_index();
        self.commit(m, rec).await?;
        Ok(out)
    }

    /// One license.
    pub async fn license(&self, actor: &Actor, lid: &str) -> Result<LicenseView> {
        let view = read::license(&mut *self.reader().await?, lid).await?;
        actor
            .check_customer(&view.customer_id)
            .map_err(|_| Error::not_found("license", lid))?;
        Ok(view)
    }

    /// License `lid` inside mutation `m`, if `actor` may see it.
    async fn visible_license(m: &mut Mutation, actor: &Actor, lid: &str) -> Result<LicenseView> {
        let view = read::license(m.conn(), lid).await?;
        actor
            .check_customer(&view.customer_id)
            .map_err(|_| Error::not_found("license", lid))?;
        Ok(view)
    }

    /// Licenses of a customer.
    pub async fn licenses(&self, actor: &Actor, cid: &str) -> Result<Vec<LicenseView>> {
        actor.check_customer(cid)?;
        let rows = sqlx::query("SELECT id FROM licenses WHERE customer_id = $1 ORDER BY id")
            .bind(cid)
            .fetch_all(&self.db.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.license(actor, &r.try_get::<String, _>(0)?).await?);
        }
        Ok(out)
    }

    /// Audits and commits a change of license `before` as `action` on
    /// `target`; returns the license as it is now.
    async fn commit_license(
        &self,
        mut m: Mutation,
        actor: &Actor,
        action: &str,
        target: &str,
        before: LicenseView,
    ) -> Result<LicenseView> {
        let after = read::license(m.conn(), &before.id).await?;
        let rec = Record::change(
            actor,
            Some(&after.customer_id),
            action,
            target,
            &before,
            &after,
        )
        .license(&before.id);
        self.commit(m, rec).await?;
        Ok(after)
    }

    /// Provisions an ordered license (operator): billing starts today and a
    /// LeanSync Key is generated, returned once.
    pub async fn provision(&self, actor: &Actor, lid: &str) -> Result<(LicenseView, Secret)> {
        actor.require_operator()?;
        let mut m = self.begin().await?;
        let before = Self::visible_license(&mut m, actor, lid).await?;
        if before.state != "ordered" {
            return Err(Error::conflict(
                "illegal_transition",
                format!(
                    "license {lid} is {}; only an ordered license can be provisioned",
                    before.state
                ),
            ));
        }
        sqlx::query(
            "UPDATE licenses SET state = 'provisioned', provisioned_at_ms = $1 WHERE id = $2",
        )
        .bind(now_ms() as i64)
        .bind(lid)
        .execute(m.conn())
        .await?;
        let key = Self::insert_key(&mut m, lid).await?;
        let after = self
            .commit_license(m, actor, "license.provision", lid, before)
            .await?;
        Ok((after, key))
    }

    async fn insert_key(m: &mut Mutation, lid: &str) -> Result<Secret> {
        let key = Secret::generate("lsk");
        sqlx::query("INSERT INTO license_keys (id, license_id, secret_hash, masked, created_at_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(id("key"))
            .bind(lid)
            .bind(key.hash())
            .bind(key.masked())
            .bind(now_ms() as i64)
            .execute(m.conn())
            .await?;
        Ok(key)
    }

    /// Assigns a provisioned license to one of the customer's numbers.
    pub async fn assign(&self, actor: &Actor, lid: &str, number: &str) -> Result<LicenseView> {
        let mut m = self.begin().await?;
        let before = Self::visible_license(&mut m, actor, lid).await?;
        if before.state != "provisioned" {
            return Err(Error::conflict(
                "illegal_transition",
                format!(
                    "license {lid} is {}; only a provisioned license can be assigned",
                    before.state
                ),
            ));
        }
        let n = E164::parse(number).map_err(|e| Error::invalid("invalid_number", e.to_string()))?;
        let owner: Option<String> = sqlx::query("SELECT customer_id FROM numbers WHERE e164 = $1")
            .bind(n.as_str())
            .fetch_optional(m.conn())
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        if owner.as_deref() != Some(before.customer_id.as_str()) {
            return Err(Error::invalid(
                "unknown_number",
                format!(
                    "{n} is not a number of this customer; import it from the telephony account first"
                ),
            ));
        }
        let taken: i64 = sqlx::query("SELECT COUNT(*) FROM licenses WHERE installation_id = $1 AND number = $2 AND state = 'provisioned' AND id <> $3")
            .bind(&before.installation_id)
            .bind(n.as_str())
            .bind(lid)
            .fetch_one(m.conn())
            .await?
            .try_get(0)?;
        if taken > 0 {
            return Err(Error::conflict(
                "already_licensed",
                format!("{n} already has a license for this business application"),
            ));
        }
        sqlx::query("UPDATE licenses SET number = $1 WHERE id = $2")
            .bind(n.as_str())
            .bind(lid)
            .execute(m.conn())
            .await?;
        self.commit_license(m, actor, "license.assign", lid, before)
            .await
    }

    /// Cancels a license (any day, no minimum term): billing stops today.
    pub async fn cancel(&self, actor: &Actor, lid: &str) -> Result<LicenseView> {
        let mut m = self.begin().await?;
        let before = Self::visible_license(&mut m, actor, lid).await?;
        if before.state == "cancelled" {
            return Err(Error::conflict(
                "illegal_transition",
                format!("license {lid} is already cancelled"),
            ));
        }
        sqlx::query("UPDATE licenses SET state = 'cancelled', cancelled_at_ms = $1 WHERE id = $2")
            .bind(now_ms() as i64)
            .bind(lid)
            .execute(m.conn())
            .await?;
        self.commit_license(m, actor, "license.cancel", lid, before)
            .await
    }

    /// Replaces a license's keys with a new one (returned once).
    pub async fn rotate_key(&self, actor: &Actor, lid: &str) -> Result<(LicenseView, Secret)> {
        let mut m = self.begin().await?;
        let before = Self::visible_license(&mut m, actor, lid).await?;
        if before.state != "provisioned" {
            return Err(Error::conflict(
                "illegal_transition",
                format!(
                    "license {lid} is {}; keys exist only for provisioned licenses",
                    before.state
                ),
            ));
        }
        sqlx::query("UPDATE license_keys SET revoked_at_ms = $1 WHERE license_id = $2 AND revoked_at_ms IS NULL")
            .bind(now_ms() as i64)
            .bind(lid)
            .execute(m.conn())
            .await?;
        let key = Self::insert_key(&mut m, lid).await?;
        let after = self
            .commit_license(m, actor, "key.rotate", lid, before)
            .await?;
        Ok((after, key))
    }

    /// The license of key `kid` inside mutation `m`, if `actor` may see it.
    async fn key_license(m: &mut Mutation, actor: &Actor, kid: &str) -> Result<LicenseView> {
        let lid: String = sqlx::query("SELECT license_id FROM license_keys WHERE id = $1")
            .bind(kid)
            .fetch_optional(m.conn())
            .await?
            .ok_or_else(|| Error::not_found("key", kid))?
            .try_get(0)?;
        Self::visible_license(m, actor, &lid)
            .await
            .map_err(|_| Error::not_found("key", kid))
    }

    /// Since when (Unix ms) key `kid` may see the calls of `number`: the
    /// later of the key's creation and its customer's taking the number.
    pub async fn key_visible_since(&self, kid: &str, number: &E164) -> Result<u64> {
        let mut c = self.reader().await?;
        let row = sqlx::query("SELECT k.created_at_ms, n.created_at_ms FROM license_keys k JOIN licenses l ON l.id = k.license_id JOIN numbers n ON n.e164 = $1 AND n.customer_id = l.customer_id WHERE k.id = $2")
            .bind(number.as_str())
            .bind(kid)
            .fetch_optional(&mut *c)
            .await?
            .ok_or_else(|| Error::not_found("key", kid))?;
        let key: i64 = row.try_get(0)?;
        let owned: i64 = row.try_get(1)?;
        Ok(key.max(owned).max(0) as u64)
    }

    /// Revokes a key at once.
    pub async fn revoke_key(&self, actor: &Actor, kid: &str) -> Result<LicenseView> {
        let mut m = self.begin().await?;
        let before = Self::key_license(&mut m, actor, kid).await?;
        sqlx::query(
            "UPDATE license_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms() as i64)
        .bind(kid)
        .execute(m.conn())
        .await?;
        self.commit_license(m, actor, "key.revoke", kid, before)
            .await
    }

    /// Blocks (`Some(reason)`) or unblocks a single key at once.
    pub async fn set_key_block(
        &self,
        actor: &Actor,
        kid: &str,
        reason: Option<&str>,
    ) -> Result<LicenseView> {
        actor.require_operator()?;
        let mut m = self.begin().await?;
        let before = Self::key_license(&mut m, actor, kid).await?;
        sqlx::query("UPDATE license_keys SET blocked_reason = $1 WHERE id = $2")
            .bind(reason.map(str::to_owned))
            .bind(kid)
            .execute(m.conn())
            .await?;
        let action = if reason.is_some() {
            "key.block"
        } else {
            "key.unblock"
        };
        if let Some(why) = reason
            && actor.account_id == Actor::system().account_id
        {
            let masked = before
                .keys
                .iter()
                .find(|k| k.id == kid)
                .map_or("", |k| k.masked.as_str())
                .to_owned();
            m.notify(
                &before.customer_id,
                "key.auto_blocked",
                format!(
                    "LeanSync Key {masked} ({kid}) of license {} was blocked ({why}); review its calls, then ask the operator to lift the block (DELETE /api/v1/keys/{kid}/block)",
                    before.id
                ),
            )
            .await?;
        }
        self.commit_license(m, actor, action, kid, before).await
    }

    /// Stops (`Some(reason)`) or allows again (`None`) calls placed by
    /// installation `iid`'s plugin (operators, or the system when the
    /// installation trips the burst rule or its daily budget). Audited; the
    /// customer is told of a block.
    pub async fn set_installation_dial_block(
        &self,
        actor: &Actor,
        iid: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        actor.require_operator()?;
        let mut m = self.begin().await?;
        let (customer, was) =
            Self::installation_setting(&mut m, iid, "dial_blocked_reason").await?;
        sqlx::query("UPDATE installations SET dial_blocked_reason = $1 WHERE id = $2")
            .bind(reason.map(str::to_owned))
            .bind(iid)
            .execute(m.conn())
            .await?;
        if let Some(why) = reason {
            m.notify(
                &customer,
                "installation.dial_blocked",
                format!(
                    "business application {iid} may no longer place calls ({why}); review its calls, then ask the operator to lift the block (DELETE /api/v1/installations/{iid}/dial-block)"
                ),
            )
            .await?;
        }
        let rec = Record {
            actor,
            customer: Some(&customer),
            action: if reason.is_some() {
                "installation.dial_block"
            } else {
                "installation.dial_unblock"
            },
            target: iid,
            before: Some(serde_json::json!({ "dial_blocked_reason": was })),
            after: Some(serde_json::json!({ "dial_blocked_reason": reason })),
            touches: mutation::Touches::Nothing,
        };
        self.commit(m, rec).await
    }

    /// The non-public address ranges installation `iid`'s plugin may reach
    /// beyond the host's `plugins.allow_networks` (operators only: a
    /// customer can narrow what its connector reaches with granted hosts,
    /// never widen it). Empty clears them. Audited; applies to the next call.
    pub async fn set_installation_networks(
        &self,
        actor: &Actor,
        iid: &str,
        list: &[String],
    ) -> Result<Vec<String>> {
        actor.require_operator()?;
        let nets = crate::egress::networks("networks", list)
            .map_err(|e| Error::invalid("invalid_network", e))?;
        let canonical: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        let mut m = self.begin().await?;
        let (customer, was) = Self::installation_setting(&mut m, iid, "allow_networks").await?;
        sqlx::query("UPDATE installations SET allow_networks = $1 WHERE id = $2")
            .bind((!canonical.is_empty()).then(|| serde_json::json!(canonical).to_string()))
            .bind(iid)
            .execute(m.conn())
            .await?;
        let rec = Record {
            actor,
            customer: Some(&customer),
            action: "installation.allow_networks",
            target: iid,
            before: Some(
                serde_json::json!({ "allow_networks": was.and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()) }),
            ),
            after: Some(serde_json::json!({ "allow_networks": canonical })),
            touches: mutation::Touches::Customer,
        };
        self.commit(m, rec).await?;
        Ok(canonical)
    }

    /// The customer of installation `iid` and its setting `column`, inside
    /// mutation `m`.
    async fn installation_setting(
        m: &mut Mutation,
        iid: &str,
        column: &str,
    ) -> Result<(String, Option<String>)> {
        let row = sqlx::query(&format!(
            "SELECT customer_id, {column} FROM installations WHERE id = $1"
        ))
        .bind(iid)
        .fetch_optional(m.conn())
        .await?
        .ok_or_else(|| Error::not_found("installation", iid))?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Why installation `iid` may not place calls, if it may not.
    pub async fn installation_dial_block(&self, iid: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query("SELECT dial_blocked_reason FROM installations WHERE id = $1")
                .bind(iid)
                .fetch_optional(&self.db.pool)
                .await?
                .map(|r| r.try_get::<Option<String>, _>(0))
                .transpose()?
                .flatten(),
        )
    }

    /// Tells customer `cid` something outside a change (stored, shown in
    /// the portal, sent to the notify webhook).
    pub async fn notify_customer(&self, cid: &str, kind: &str, message: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO notifications (at_ms, customer_id, kind, message) VALUES ($1, $2, $3, $4)",
        )
        .bind(now_ms() as i64)
        .bind(cid)
        .bind(kind)
        .bind(message)
        .execute(&self.db.pool)
        .await?;
        self.send_notification(cid, kind, message);
        Ok(())
    }

    /// Deletes a customer's licenses and keys (termination; operator only).
    pub async fn delete_licenses(&self, actor: &Actor, cid: &str) -> Result<u64> {
        actor.require_operator()?;
        self.customer_exists(cid).await?;
        let mut m = self.begin().await?;
        sqlx::query("DELETE FROM license_keys WHERE license_id IN (SELECT id FROM licenses WHERE customer_id = $1)")
            .bind(cid)
            .execute(m.conn())
            .await?;
        let n = sqlx::query("DELETE FROM licenses WHERE customer_id = $1")
            .bind(cid)
            .execute(m.conn())
            .await?
            .rows_affected();
        let rec = Record::created(
            actor,
            Some(cid),
            "licenses.delete",
            cid,
            &serde_json::json!({ "deleted": n }),
        );
        self.commit(m, rec).await?;
        Ok(n)
    }
    // ---- reports ----------------------------------------------------------

    /// The usage report ("Mengenreport") of a customer, at this moment.
    pub async fn usage(&self, actor: &Actor, cid: &str) -> Result<UsageReport> {
        let customer = self.customer(actor, cid).await?;
        let licenses = self.licenses(actor, cid).await?;
        let rows = sqlx::query(
            "SELECT id, connector FROM installations WHERE customer_id = $1 ORDER BY id",
        )
        .bind(cid)
        .fetch_all(&self.db.pool)
        .await?;
        let mut applications = Vec::new();
        for r in rows {
            let iid: String = r.try_get(0)?;
            let connector: String = r.try_get(1)?;
            let mine: Vec<&LicenseView> = licenses
                .iter()
                .filter(|l| l.installation_id == iid)
                .collect();
            let live = |l: &&&LicenseView| l.state != "cancelled";
            applications.push(ApplicationUsage {
                installation_id: iid.clone(),
                connector,
                ordered: mine.iter().filter(live).count(),
                provisioned: mine.iter().filter(|l| l.state == "provisioned").count(),
                available: mine
                    .iter()
                    .filter(|l| l.state == "provisioned" && l.number.is_none())
                    .count(),
                assigned: mine
                    .iter()
                    .filter(|l| l.state == "provisioned" && l.number.is_some())
                    .map(|l| AssignedLicense {
                        license_id: l.id.clone(),
                        number: l.number.clone().unwrap_or_default(),
                        keys: l
                            .keys
                            .iter()
                            .filter(|k| !k.revoked)
                            .map(|k| k.masked.clone())
                            .collect(),
                    })
                    .collect(),
            });
        }
        Ok(UsageReport {
            customer_id: customer.id,
            customer_name: customer.name,
            generated_at_ms: now_ms(),
            numbers: self
                .numbers(actor, cid)
                .await?
                .into_iter()
                .map(|n| n.e164)
                .collect(),
            applications,
        })
    }

    /// Audit entries of a customer (operators: all when `cid` is `None`).
    pub async fn audit_log(&self, actor: &Actor, cid: Option<&str>) -> Result<Vec<AuditEntry>> {
        let cid = match cid {
            Some(c) => {
                actor.check_customer(c)?;
                Some(c.to_owned())
            }
            None => {
                actor.require_operator()?;
                None
            }
        };
        let rows = sqlx::query("SELECT seq, at_ms, actor_name, impersonal, customer_id, action, target, before_json, after_json FROM audit WHERE ($1 = '' OR customer_id = $2) ORDER BY seq")
            .bind(cid.clone().unwrap_or_default())
            .bind(cid.unwrap_or_default())
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    seq: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    impersonal_actor: r.try_get::<i32, _>(3)? != 0,
                    customer_id: r.try_get(4)?,
                    action: r.try_get(5)?,
                    target: r.try_get(6)?,
                    before: r
                        .try_get::<Option<String>, _>(7)?
                        .and_then(|s| serde_json::from_str(&s).ok()),
                    after: r
                        .try_get::<Option<String>, _>(8)?
                        .and_then(|s| serde_json::from_str(&s).ok()),
                })
            })
            .collect()
    }
}

/// An account as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    /// Id.
    pub id: String,
    /// E-mail.
    pub email: String,
    /// Customer for customer admins.
    pub customer_id: Option<String>,
    /// `operator` or `customer_admin`.
    pub role: &'static str,
    /// Shared/impersonal account: flagged, personal accounts are recommended.
    pub impersonal: bool,
    /// Why the account is disabled (`None`: it may sign in).
    pub disabled_reason: Option<String>,
    /// When its API token stops working (Unix ms; `None`: never, for tokens
    /// issued before tokens expired).
    pub token_expires_at_ms: Option<i64>,
}

/// A customer.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Why it is blocked, if it is.
    pub blocked_reason: Option<String>,
    /// May dial international destinations.
    pub allow_international: bool,
    /// May dial premium-rate numbers.
    pub allow_premium: bool,
}

/// Recorded consent.
#[derive(Debug, Clone, Serialize)]
pub struct Consent {
    /// Who gave it.
    pub by: String,
    /// When.
    pub at_ms: i64,
    /// What it covers.
    pub scope: String,
}

/// A telephony account (its secret is never shown).
#[derive(Debug, Clone, Serialize)]
pub struct TelephonyAccountView {
    /// Id.
    pub id: String,
    /// Customer.
    pub customer_id: String,
    /// `sim` or `sip`.
    pub provider: String,
    /// Non-secret connection settings.
    pub settings: serde_json::Value,
    /// Whether a secret is stored (encrypted).
    pub has_secret: bool,
    /// Consent, if given.
    pub consent: Option<Consent>,
}

/// A number.
#[derive(Debug, Clone, Serialize)]
pub struct NumberView {
    /// E.164.
    pub e164: String,
    /// National display form.
    pub national: String,
    /// The telephony account it was imported from.
    pub telephony_account_id: Option<String>,
}

/// A request to enable a connector.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct NewInstallation {
    /// Connector (plugin) name.
    pub connector: String,
    /// Config, secrets included (they are split off and sealed).
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Outbound hosts granted to it.
    #[serde(default)]
    pub granted_hosts: Vec<String>,
    /// Deliver internal calls too.
    #[serde(default)]
    pub deliver_internal: bool,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// An installation (business application).
#[derive(Debug, Clone, Serialize)]
pub struct InstallationView {
    /// Id.
    pub id: String,
    /// Customer.
    pub customer_id: String,
    /// Connector name.
    pub connector: String,
    /// Non-secret config.
    pub config: serde_json::Value,
    /// Granted outbound hosts.
    pub granted_hosts: Vec<String>,
    /// Whether internal calls are delivered.
    pub deliver_internal: bool,
}

/// A key as listings show it (masked).
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    /// Id.
    pub id: String,
    /// Masked secret.
    pub masked: String,
    /// Revoked.
    pub revoked: bool,
    /// Why it is blocked.
    pub blocked_reason: Option<String>,
}

/// A license.
#[derive(Debug, Clone, Serialize)]
pub struct LicenseView {
    /// Id.
    pub id: String,
    /// Customer.
    pub customer_id: String,
    /// Installation (business application).
    pub installation_id: String,
    /// `ordered`, `provisioned` or `cancelled`.
    pub state: String,
    /// Assigned number.
    pub number: Option<String>,
    /// Ordered at.
    pub ordered_at_ms: i64,
    /// Provisioned at (billing starts).
    pub provisioned_at_ms: Option<i64>,
    /// Cancelled at (billing ends).
    pub cancelled_at_ms: Option<i64>,
    /// Keys (masked).
    pub keys: Vec<KeyView>,
}

/// The usage report.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    /// Customer.
    pub customer_id: String,
    /// Customer name.
    pub customer_name: String,
    /// When it was made.
    pub generated_at_ms: u64,
    /// The customer's numbers.
    pub numbers: Vec<String>,
    /// Per business application.
    pub applications: Vec<ApplicationUsage>,
}

/// Usage of one business application.
#[derive(Debug, Clone, Serialize)]
pub struct ApplicationUsage {
    /// Installation.
    pub installation_id: String,
    /// Connector.
    pub connector: String,
    /// Licenses ordered and not cancelled.
    pub ordered: usize,
    /// Provisioned.
    pub provisioned: usize,
    /// Provisioned, not assigned.
    pub available: usize,
    /// Assigned licenses with their number and masked keys.
    pub assigned: Vec<AssignedLicense>,
}

/// An assigned license in the usage report.
#[derive(Debug, Clone, Serialize)]
pub struct AssignedLicense {
    /// License.
    pub license_id: String,
    /// Number.
    pub number: String,
    /// Masked active keys.
    pub keys: Vec<String>,
}

impl UsageReport {
    /// CSV: one row per application and assignment.
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record([
            "customer",
            "installation",
            "connector",
            "ordered",
            "provisioned",
            "available",
            "license",
            "number",
            "keys",
        ]);
        for a in &self.applications {
            let counts = [
                a.ordered.to_string(),
                a.provisioned.to_string(),
                a.available.to_string(),
            ];
            if a.assigned.is_empty() {
                let _ = w.write_record([
                    &self.customer_id,
                    &a.installation_id,
                    &a.connector,
                    &counts[0],
                    &counts[1],
                    &counts[2],
                    "",
                    "",
                    "",
                ]);
            }
            for l in &a.assigned {
                let _ = w.write_record([
                    &self.customer_id,
                    &a.installation_id,
                    &a.connector,
                    &counts[0],
                    &counts[1],
                    &counts[2],
                    &l.license_id,
                    &l.number,
                    &l.keys.join(" "),
                ]);
            }
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }
}

/// One audit log entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Sequence.
    pub seq: i64,
    /// When.
    pub at_ms: i64,
    /// Who (e-mail or `system`).
    pub actor: String,
    /// Whether the actor is a shared/impersonal account.
    pub impersonal_actor: bool,
    /// Customer concerned.
    pub customer_id: Option<String>,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// State before.
    pub before: Option<serde_json::Value>,
    /// State after.
    pub after: Option<serde_json::Value>,
}
