//! Personal accounts: argon2id passwords for the portal, API tokens for the
//! admin API (expiring, rotatable), disabling and deleting accounts,
//! listings. An account signs in only while it is enabled and its customer
//! is not blocked; every request checks that on the database, so a change
//! holds on every host at once.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sqlx::Row;

use super::mutation::Touches;
use super::{
    AccountView, Actor, Error, ErrorKind, Licensing, Record, Result, Secret, keys, now_ms,
};

/// Shortest password accepted.
const MIN_PASSWORD: usize = 10;

/// Password hashing (Argon2id, ~19 MiB and a few tens of ms of one core
/// each) runs on blocking threads, at most this many at once: half the
/// cores, so a storm of sign-ins never takes the CPU from calls and the API.
fn password_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Sign-ins waiting for a password worker beyond which new ones are turned
/// away at once (answered "busy, try again").
const MAX_WAITING: usize = 64;

/// The host is busy checking other passwords; try again in a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Runs `work` (an Argon2 hash or verification) on the bounded pool.
async fn password_work<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, Busy> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static POOL: std::sync::LazyLock<tokio::sync::Semaphore> =
        std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(password_workers()));
    static WAITING: AtomicUsize = AtomicUsize::new(0);
    if WAITING.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
        WAITING.fetch_sub(1, Ordering::SeqCst);
        return Err(Busy);
    }
    let permit = POOL.acquire().await;
    WAITING.fetch_sub(1, Ordering::SeqCst);
    let _permit = permit.map_err(|_| Busy)?;
    tokio::task::spawn_blocking(work).await.map_err(|_| Busy)
}

fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| {
        Error::new(
            ErrorKind::Internal,
            "internal",
            "the OS random number generator is unavailable",
        )
    })?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|_| Error::new(ErrorKind::Internal, "internal", "salt encoding failed"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| Error::new(ErrorKind::Internal, "internal", "password hashing failed"))
}

/// The columns [`view_of`] reads, joined with the account's customer.
const ACCOUNT: &str = "SELECT a.id, a.email, a.customer_id, a.impersonal, a.disabled_reason, a.token_expires_at_ms, c.blocked_reason, a.token_hash, a.password_hash, a.password_changed_at_ms FROM accounts a LEFT JOIN customers c ON c.id = a.customer_id";

fn view_of(r: &sqlx::any::AnyRow) -> Result<AccountView> {
    let customer_id: Option<String> = r.try_get(2)?;
    Ok(AccountView {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        role: if customer_id.is_some() {
            "customer_admin"
        } else {
            "operator"
        },
        customer_id,
        impersonal: r.try_get::<i32, _>(3)? != 0,
        disabled_reason: r.try_get(4)?,
        token_expires_at_ms: r.try_get(5)?,
    })
}

fn actor_of(v: AccountView) -> Actor {
    Actor {
        account_id: v.id,
        name: v.email,
        customer_id: v.customer_id,
        impersonal: v.impersonal,
    }
}

/// Why a token (or a portal session) does not sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No account has this token (never issued, rotated or deleted).
    Unknown,
    /// The token expired at this time (Unix ms).
    Expired(i64),
    /// The account is disabled, for this reason.
    Disabled(String),
    /// The account's customer is blocked, for this reason.
    CustomerBlocked(String),
    /// The password was changed after the session signed in.
    PasswordChanged,
}

impl Refusal {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unknown => "invalid_token",
            Refusal::Expired(_) => "token_expired",
            Refusal::Disabled(_) => "account_disabled",
            Refusal::CustomerBlocked(_) => "customer_blocked",
            Refusal::PasswordChanged => "password_changed",
        }
    }

    /// What happened and what to do.
    pub fn message(&self) -> String {
        match self {
            Refusal::Unknown => "this API token is unknown (never issued, replaced by a newer one, or its account deleted); check it, or have a new one issued: by an admin of the account (POST /api/v1/accounts/{id}/token) or on the host (leansync admin token --email ...)".into(),
            Refusal::Expired(at) => format!(
                "this API token expired on {}; sign in to the portal or ask an admin to issue a new one (POST /api/v1/accounts/{{id}}/token; on the host: leansync admin token --email ...)",
                chrono::DateTime::from_timestamp_millis(*at)
                    .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_else(|| at.to_string())
            ),
            Refusal::Disabled(why) => format!(
                "this account is disabled ({why}); an admin of it can enable it with POST /api/v1/accounts/{{id}}/enable"
            ),
            Refusal::CustomerBlocked(why) => format!(
                "the customer of this account is blocked ({why}); its admins cannot sign in until an operator lifts the block"
            ),
            Refusal::PasswordChanged => {
                "the password of this account was changed since this session signed in; sign in again with the new password".into()
            }
        }
    }
}

/// Whether the account in row `r` may act now; `token` also checks the
/// token's expiry.
fn standing(r: &sqlx::any::AnyRow, token: bool) -> std::result::Result<Actor, Refusal> {
    let v = view_of(r).map_err(|_| Refusal::Unknown)?;
    if let Some(why) = &v.disabled_reason {
        return Err(Refusal::Disabled(why.clone()));
    }
    if let Ok(Some(why)) = r.try_get::<Option<String>, _>(6) {
        return Err(Refusal::CustomerBlocked(why));
    }
    if token
        && let Some(at) = v.token_expires_at_ms
        && at <= now_ms() as i64
    {
        return Err(Refusal::Expired(at));
    }
    Ok(actor_of(v))
}

/// A reason given for disabling: trimmed, 1 to 500 characters.
fn reason(text: &str) -> Result<&str> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > 500 {
        return Err(Error::invalid(
            "invalid_reason",
            "give a reason of 1 to 500 characters, e.g. {\"reason\": \"left the company\"}; it is shown to whoever tries to sign in",
        ));
    }
    Ok(t)
}

impl Licensing {
    /// Sets the portal password of an account (its owner, or an operator).
    pub async fn set_password(
        &self,
        actor: &Actor,
        account_id: &str,
        password: &str,
    ) -> Result<()> {
        let customer = self.account_in_reach(actor, account_id).await?.customer_id;
        if password.chars().count() < MIN_PASSWORD {
            return Err(Error::invalid(
                "weak_password",
                format!("the password must have at least {MIN_PASSWORD} characters"),
            ));
        }
        let owned = password.to_owned();
        let hash = password_work(move || hash_password(&owned))
            .await
            .map_err(|Busy| Error::busy())??;
        let mut m = self.begin().await?;
        // Sessions that signed in before this moment end (see `recheck`).
        sqlx::query(
            "UPDATE accounts SET password_hash = $1, password_changed_at_ms = $2 WHERE id = $3",
        )
        .bind(hash)
        .bind(now_ms() as i64)
        .bind(account_id)
        .execute(m.conn())
        .await?;
        let rec = Record {
            actor,
            customer: customer.as_deref(),
            action: "account.password",
            target: account_id,
            before: None,
            after: None,
            touches: Touches::Nothing,
        };
        self.commit(m, rec).await
    }

    /// Checks e-mail and password; `Ok(None)` on any mismatch (no hint
    /// which), `Err(Busy)` when too many passwords are being checked.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
    ) -> std::result::Result<Option<Actor>, Busy> {
        let Ok(row) = self.account_row("email", email.trim()).await else {
            return Ok(None);
        };
        // Verify against a dummy hash when the account is unknown, so the
        // answer takes the same time either way.
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let stored: Option<String> = row.as_ref().and_then(|r| r.try_get(8).ok()).flatten();
        let hash_text = stored.clone().unwrap_or_else(|| {
            DUMMY
                .get_or_init(|| hash_password("not-a-password").unwrap_or_default())
                .clone()
        });
        let password = password.to_owned();
        let ok = password_work(move || {
            PasswordHash::new(&hash_text)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await?;
        match row {
            Some(row) if ok && stored.is_some() => Ok(standing(&row, false).ok()),
            _ => Ok(None),
        }
    }

    /// Accounts of a customer (`None`: operator accounts, operators only).
    pub async fn accounts(
        &self,
        actor: &Actor,
        customer: Option<&str>,
    ) -> Result<Vec<AccountView>> {
        match customer {
            Some(c) => actor.check_customer(c)?,
            None => actor.require_operator()?,
        }
        let rows = sqlx::query(&format!("{ACCOUNT} WHERE ($1 = '' AND a.customer_id IS NULL) OR a.customer_id = $2 ORDER BY a.email"))
            .bind(customer.unwrap_or_default())
            .bind(customer.unwrap_or_default())
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(view_of).collect()
    }

    /// The account whose `column` (`id`, `email`, `token_hash`) is `value`,
    /// as [`ACCOUNT`] reads it.
    async fn account_row(
        &self,
        column: &str,
        value: &str,
    ) -> std::result::Result<Option<sqlx::any::AnyRow>, sqlx::Error> {
        sqlx::query(&format!("{ACCOUNT} WHERE a.{column} = $1"))
            .bind(value)
            .fetch_optional(&self.db.pool)
            .await
    }

    /// The id of the account with `email`.
    pub async fn account_id_by_email(&self, email: &str) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT id FROM accounts WHERE email = $1")
            .bind(email.trim())
            .fetch_optional(&self.db.pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    /// The account an API token belongs to, if it may act now.
    pub async fn authenticate(&self, token: &str) -> std::result::Result<Actor, Refusal> {
        let h = keys::hash(token);
        let row = self
            .account_row("token_hash", &h)
            .await
            .ok()
            .flatten()
            .ok_or(Refusal::Unknown)?;
        let stored: String = row.try_get(7).map_err(|_| Refusal::Unknown)?;
        if !keys::same(&stored, &h) {
            return Err(Refusal::Unknown);
        }
        standing(&row, true)
    }

    /// Whether the account of a signed-in `actor` (a portal session whose
    /// password was proven at `since_ms`) may still act: not deleted, not
    /// disabled, its customer not blocked, its password not changed since.
    pub async fn recheck(&self, actor: &Actor, since_ms: i64) -> std::result::Result<(), Refusal> {
        let row = self
            .account_row("id", &actor.account_id)
            .await
            .ok()
            .flatten()
            .ok_or(Refusal::Unknown)?;
        standing(&row, false)?;
        match row.try_get::<Option<i64>, _>(9) {
            Ok(Some(changed)) if changed > since_ms => Err(Refusal::PasswordChanged),
            _ => Ok(()),
        }
    }

    /// Account `account_id` if `actor` may manage it: its own, one of the
    /// actor's customer, or any for operators. Others are not found.
    async fn account_in_reach(&self, actor: &Actor, account_id: &str) -> Result<AccountView> {
        let row = self
            .account_row("id", account_id)
            .await?
            .ok_or_else(|| Error::not_found("account", account_id))?;
        let v = view_of(&row)?;
        if actor.account_id != account_id {
            match &v.customer_id {
                Some(c) => actor
                    .check_customer(c)
                    .map_err(|_| Error::not_found("account", account_id))?,
                None => actor
                    .require_operator()
                    .map_err(|_| Error::not_found("account", account_id))?,
            }
        }
        Ok(v)
    }

    /// Fails if taking `account_id` away leaves no enabled operator.
    async fn keep_an_operator(
        &self,
        m: &mut super::mutation::Mutation,
        v: &AccountView,
    ) -> Result<()> {
        if v.customer_id.is_some() || v.disabled_reason.is_some() {
            return Ok(());
        }
        let left: i64 = sqlx::query("SELECT COUNT(*) FROM accounts WHERE customer_id IS NULL AND disabled_reason IS NULL AND id <> $1")
            .bind(&v.id)
            .fetch_one(m.conn())
            .await?
            .try_get(0)?;
        if left == 0 {
            return Err(Error::conflict(
                "last_operator",
                format!(
                    "{} is the last enabled operator; create or enable another operator first, or nobody could manage the service",
                    v.email
                ),
            ));
        }
        Ok(())
    }

    /// Issues a new API token for `account_id`; the old one stops working
    /// at once. Returns the account and the token (shown once).
    pub async fn rotate_token(
        &self,
        actor: &Actor,
        account_id: &str,
    ) -> Result<(AccountView, Secret)> {
        let before = self.account_in_reach(actor, account_id).await?;
        let token = Secret::generate("lsa");
        let expires = self.token_expiry();
        let mut m = self.begin().await?;
        sqlx::query("UPDATE accounts SET token_hash = $1, token_expires_at_ms = $2 WHERE id = $3")
            .bind(token.hash())
            .bind(expires)
            .bind(account_id)
            .execute(m.conn())
            .await?;
        let after = AccountView {
            token_expires_at_ms: expires,
            ..before.clone()
        };
        let rec = Record::change(
            actor,
            before.customer_id.as_deref(),
            "account.token",
            account_id,
            &before,
            &after,
        )
        .no_index();
        self.commit(m, rec).await?;
        Ok((after, token))
    }

    /// Disables (`reason` given) or enables (`None`) an account: a disabled
    /// account's token and portal sessions stop working at once.
    pub async fn set_account_disabled(
        &self,
        actor: &Actor,
        account_id: &str,
        why: Option<&str>,
    ) -> Result<AccountView> {
        let why = why.map(reason).transpose()?;
        let before = self.account_in_reach(actor, account_id).await?;
        let mut m = self.begin().await?;
        if why.is_some() {
            self.keep_an_operator(&mut m, &before).await?;
        }
        sqlx::query("UPDATE accounts SET disabled_reason = $1, disabled_at_ms = $2 WHERE id = $3")
            .bind(why)
            .bind(why.map(|_| now_ms() as i64))
            .bind(account_id)
            .execute(m.conn())
            .await?;
        let after = AccountView {
            disabled_reason: why.map(str::to_owned),
            ..before.clone()
        };
        let action = if why.is_some() {
            "account.disable"
        } else {
            "account.enable"
        };
        let rec = Record::change(
            actor,
            before.customer_id.as_deref(),
            action,
            account_id,
            &before,
            &after,
        )
        .no_index();
        self.commit(m, rec).await?;
        Ok(after)
    }

    /// Deletes an account (the audit keeps its name on what it did).
    pub async fn delete_account(&self, actor: &Actor, account_id: &str) -> Result<()> {
        let before = self.account_in_reach(actor, account_id).await?;
        let mut m = self.begin().await?;
        self.keep_an_operator(&mut m, &before).await?;
        sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(account_id)
            .execute(m.conn())
            .await?;
        let rec = Record {
            actor,
            customer: before.customer_id.as_deref(),
            action: "account.delete",
            target: account_id,
            before: serde_json::to_value(&before).ok(),
            after: None,
            touches: Touches::Nothing,
        };
        self.commit(m, rec).await
    }
}
