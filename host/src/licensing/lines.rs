//! The telephony accounts as the telephony side needs them: provider,
//! settings and the opened secret of each, and the account of each number.
//! Published on a watch channel after every change (see
//! [`super::Licensing::telephony_lines`]); the secret lives only here, in
//! memory, and is never shown.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use sqlx::{AnyConnection, Row};

use super::crypto::Sealer;
use super::index::rows;
use crate::number::E164;

/// One telephony account of a customer.
#[derive(Clone, PartialEq)]
pub struct Line {
    /// Customer it belongs to.
    pub customer_id: String,
    /// `sim` or `sip`.
    pub provider: String,
    /// Its settings as stored (a JSON object).
    pub settings: serde_json::Value,
    /// The opened secret (the PBX password), if one is stored; `Err` says
    /// why it cannot be opened.
    pub secret: Result<Option<String>, String>,
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Line")
            .field("customer_id", &self.customer_id)
            .field("provider", &self.provider)
            .field("settings", &self.settings)
            .field(
                "secret",
                &self.secret.as_ref().map(|s| s.as_ref().map(|_| "****")),
            )
            .finish()
    }
}

/// Every telephony account by id, and the account each number was imported
/// from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lines {
    /// Accounts by id.
    pub accounts: BTreeMap<String, Line>,
    /// Number → telephony account id (numbers entered by an operator have
    /// none).
    pub numbers: HashMap<E164, String>,
}

impl Lines {
    /// Loads every account (`customer` `None`), or those of one customer.
    pub(super) async fn load(
        c: &mut AnyConnection,
        sealer: &Sealer,
        customer: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut lines = Lines::default();
        for r in rows(
            c,
            "SELECT id, customer_id, provider, settings, secret_sealed FROM telephony_accounts",
            "customer_id",
            customer,
        )
        .await?
        {
            let id: String = r.try_get(0)?;
            let secret = match r.try_get::<Option<String>, _>(4)? {
                None => Ok(None),
                Some(sealed) => sealer.open(&sealed).map(Some).map_err(|e| {
                    format!("its secret cannot be opened ({e}); store the password again")
                }),
            };
            lines.accounts.insert(
                id,
                Line {
                    customer_id: r.try_get(1)?,
                    provider: r.try_get(2)?,
                    settings: serde_json::from_str(&r.try_get::<String, _>(3)?).unwrap_or_default(),
                    secret,
                },
            );
        }
        for r in rows(
            c,
            "SELECT e164, telephony_account_id FROM numbers WHERE telephony_account_id IS NOT NULL",
            "customer_id",
            customer,
        )
        .await?
        {
            if let Ok(n) = E164::parse(&r.try_get::<String, _>(0)?) {
                lines.numbers.insert(n, r.try_get(1)?);
            }
        }
        Ok(lines)
    }

    /// Replaces the accounts of `customer` and their numbers with `part`
    /// (that customer's [`Lines::load`]); whether anything changed.
    pub(super) fn replace(&mut self, customer: &str, part: Lines) -> bool {
        let old: Vec<String> = self
            .accounts
            .iter()
            .filter(|(_, l)| l.customer_id == customer)
            .map(|(id, _)| id.clone())
            .collect();
        let unchanged = old.len() == part.accounts.len()
            && part
                .accounts
                .iter()
                .all(|(id, l)| self.accounts.get(id) == Some(l))
            && self.numbers.iter().filter(|(_, a)| old.contains(a)).count() == part.numbers.len()
            && part
                .numbers
                .iter()
                .all(|(n, a)| self.numbers.get(n) == Some(a));
        if unchanged {
            return false;
        }
        for id in &old {
            self.accounts.remove(id);
        }
        self.numbers.retain(|_, a| !old.contains(a));
        self.accounts.extend(part.accounts);
        self.numbers.extend(part.numbers);
        true
    }
}
