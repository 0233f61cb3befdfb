//! Listings, operator-entered numbers, notifications, the price list and
//! the monthly billing statement.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::Row;

use super::billing::{self, BillableLicense, Month, Price, PriceList, Statement};
use super::{Actor, Error, InstallationView, Licensing, Record, Result, TelephonyAccountView};

/// A notification to a customer (consent changes, blocks).
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// Sequence.
    pub seq: i64,
    /// When.
    pub at_ms: i64,
    /// Kind, e.g. `consent.revoke`.
    pub kind: String,
    /// Text.
    pub message: String,
}

/// A price list entry as the API shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PriceView {
    /// Connector name.
    pub connector: String,
    /// First day the price applies (YYYY-MM-DD).
    pub valid_from: String,
    /// Monthly price per license in CHF, as a decimal string.
    pub monthly_chf: String,
}

fn day_of_ms(ms: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.date_naive())
        .unwrap_or_default()
}

impl Licensing {
    /// Telephony accounts of a customer.
    pub async fn telephony_accounts(
        &self,
        actor: &Actor,
        cid: &str,
    ) -> Result<Vec<TelephonyAccountView>> {
        actor.check_customer(cid)?;
        let rows =
            sqlx::query("SELECT id FROM telephony_accounts WHERE customer_id = $1 ORDER BY id")
                .bind(cid)
                .fetch_all(&self.db.pool)
                .await?;
        let mut out = Vec::new();
        for r in rows {
            out.push(
                self.telephony_account(actor, &r.try_get::<String, _>(0)?)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Installations (business applications) of a customer.
    pub async fn installations(&self, actor: &Actor, cid: &str) -> Result<Vec<InstallationView>> {
        actor.check_customer(cid)?;
        let rows = sqlx::query("SELECT id FROM installations WHERE customer_id = $1 ORDER BY id")
            .bind(cid)
            .fetch_all(&self.db.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            out.push(
                self.installation(actor, &r.try_get::<String, _>(0)?)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Numbers the telephony account offers for import: those in its
    /// settings (`"numbers": [...]`), the way a provider lists an account's
    /// numbers.
    pub async fn account_numbers(&self, actor: &Actor, tid: &str) -> Result<Vec<String>> {
        let acc = self.telephony_account(actor, tid).await?;
        Ok(acc
            .settings
            .get("numbers")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Notifications of a customer, newest last.
    pub async fn notifications(&self, actor: &Actor, cid: &str) -> Result<Vec<Notification>> {
        actor.check_customer(cid)?;
        let rows = sqlx::query("SELECT seq, at_ms, kind, message FROM notifications WHERE customer_id = $1 ORDER BY seq").bind(cid).fetch_all(&self.db.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(Notification {
                    seq: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    message: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Sets a connector's monthly price from a day on (operator only).
    pub async fn set_price(&self, actor: &Actor, p: &PriceView) -> Result<PriceView> {
        actor.require_operator()?;
        let valid_from =
            chrono::NaiveDate::parse_from_str(&p.valid_from, "%Y-%m-%d").map_err(|_| {
                Error::invalid(
                    "invalid_date",
                    format!(
                        "valid_from '{}' is not a date; use YYYY-MM-DD",
                        p.valid_from
                    ),
                )
            })?;
        let price = Decimal::from_str(p.monthly_chf.trim()).map_err(|_| {
            Error::invalid(
                "invalid_price",
                format!(
                    "monthly_chf '{}' is not a decimal amount; use e.g. \"9.50\"",
                    p.monthly_chf
                ),
            )
        })?;
        if price.is_sign_negative() || price.scale() > 2 {
            return Err(Error::invalid(
                "invalid_price",
                format!(
                    "monthly_chf '{}' must be zero or positive with at most two decimals",
                    p.monthly_chf
                ),
            ));
        }
        if p.connector.trim().is_empty() {
            return Err(Error::invalid(
                "invalid_connector",
                "connector is required, e.g. \"webhook\"",
            ));
        }
        let view = PriceView {
            connector: p.connector.trim().to_owned(),
            valid_from: valid_from.to_string(),
            monthly_chf: price.to_string(),
        };
        let mut m = self.begin().await?;
        sqlx::query("DELETE FROM prices WHERE connector = $1 AND valid_from = $2")
            .bind(&view.connector)
            .bind(&view.valid_from)
            .execute(m.conn())
            .await?;
        sqlx::query("INSERT INTO prices (connector, valid_from, monthly_chf) VALUES ($1, $2, $3)")
            .bind(&view.connector)
            .bind(&view.valid_from)
            .bind(&view.monthly_chf)
            .execute(m.conn())
            .await?;
        let rec = Record::created(actor, None, "price.set", &view.connector, &view).no_index();
        self.commit(m, rec).await?;
        Ok(view)
    }

    /// The whole price list.
    pub async fn prices(&self) -> Result<Vec<PriceView>> {
        let rows = sqlx::query(
            "SELECT connector, valid_from, monthly_chf FROM prices ORDER BY connector, valid_from",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PriceView {
                    connector: r.try_get(0)?,
                    valid_from: r.try_get(1)?,
                    monthly_chf: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// The billing statement of a customer for a month (`YYYY-MM`).
    pub async fn billing(&self, actor: &Actor, cid: &str, month: &str) -> Result<Statement> {
        self.customer(actor, cid).await?;
        let month = Month::parse(month).map_err(|m| Error::invalid("invalid_month", m))?;
        let prices = self.price_list().await?;
        let rows = sqlx::query("SELECT l.id, l.installation_id, i.connector, l.number, l.provisioned_at_ms, l.cancelled_at_ms FROM licenses l JOIN installations i ON i.id = l.installation_id WHERE l.customer_id = $1 AND l.provisioned_at_ms IS NOT NULL ORDER BY l.id")
            .bind(cid)
            .fetch_all(&self.db.pool)
            .await?;
        let mut licenses = Vec::with_capacity(rows.len());
        for r in rows {
            licenses.push(BillableLicense {
                license_id: r.try_get(0)?,
                installation_id: r.try_get(1)?,
                connector: r.try_get(2)?,
                number: r.try_get(3)?,
                provisioned_on: day_of_ms(r.try_get(4)?),
                cancelled_on: r.try_get::<Option<i64>, _>(5)?.map(day_of_ms),
            });
        }
        Ok(billing::statement(cid, month, &licenses, &prices))
    }

    async fn price_list(&self) -> Result<PriceList> {
        let mut out = Vec::new();
        for p in self.prices().await? {
            let (Ok(valid_from), Ok(monthly_chf)) = (
                chrono::NaiveDate::parse_from_str(&p.valid_from, "%Y-%m-%d"),
                Decimal::from_str(&p.monthly_chf),
            ) else {
                continue;
            };
            out.push(Price {
                connector: p.connector,
                valid_from,
                monthly_chf,
            });
        }
        Ok(PriceList::new(out))
    }
}
