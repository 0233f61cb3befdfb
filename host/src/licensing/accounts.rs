//! Personal accounts: argon2id passwords for the portal, API tokens for the
//! admin API, listings.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sqlx::Row;

use super::mutation::Touches;
use super::{AccountView, Actor, Error, ErrorKind, Licensing, Record, Result};

/// Shortest password accepted.
const MIN_PASSWORD: usize = 10;

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

impl Licensing {
    /// Sets the portal password of an account (its owner, or an operator).
    pub async fn set_password(
        &self,
        actor: &Actor,
        account_id: &str,
        password: &str,
    ) -> Result<()> {
        let row = sqlx::query("SELECT customer_id FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| Error::not_found("account", account_id))?;
        let customer: Option<String> = row.try_get(0)?;
        let own = actor.account_id == account_id;
        if !own {
            match &customer {
                Some(c) => actor
                    .check_customer(c)
                    .map_err(|_| Error::not_found("account", account_id))?,
                None => actor.require_operator()?,
            }
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(Error::invalid(
                "weak_password",
                format!("the password must have at least {MIN_PASSWORD} characters"),
            ));
        }
        let hash = hash_password(password)?;
        let mut m = self.begin().await?;
        sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
            .bind(hash)
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

    /// Checks e-mail and password; `None` on any mismatch (no hint which).
    pub async fn login(&self, email: &str, password: &str) -> Option<Actor> {
        let row = sqlx::query("SELECT id, email, customer_id, impersonal, password_hash FROM accounts WHERE email = $1")
            .bind(email.trim())
            .fetch_optional(&self.db.pool)
            .await
            .ok()?;
        // Verify against a dummy hash when the account is unknown, so the
        // answer takes the same time either way.
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let stored: Option<String> = row.as_ref().and_then(|r| r.try_get(4).ok()).flatten();
        let hash_text = stored.clone().unwrap_or_else(|| {
            DUMMY
                .get_or_init(|| hash_password("not-a-password").unwrap_or_default())
                .clone()
        });
        let ok = PasswordHash::new(&hash_text)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        if !ok || stored.is_none() {
            return None;
        }
        let r = row?;
        Some(Actor {
            account_id: r.try_get(0).ok()?,
            name: r.try_get(1).ok()?,
            customer_id: r.try_get(2).ok()?,
            impersonal: r.try_get::<i32, _>(3).ok()? != 0,
        })
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
        let rows = sqlx::query("SELECT id, email, customer_id, impersonal FROM accounts WHERE ($1 = '' AND customer_id IS NULL) OR customer_id = $2 ORDER BY email")
            .bind(customer.unwrap_or_default())
            .bind(customer.unwrap_or_default())
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
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
                })
            })
            .collect()
    }
}
