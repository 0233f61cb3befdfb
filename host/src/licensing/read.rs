//! Reading one customer, telephony account, installation or license on a
//! given connection: a mutation's own transaction (so it sees its own
//! writes) or a pooled one. Authorisation is the caller's job.

use sqlx::{AnyConnection, Row};

use super::{
    Consent, CustomerView, Error, InstallationView, KeyView, LicenseView, Result,
    TelephonyAccountView,
};

/// Reads an integer flag column stored as `INTEGER` (0/1) or `BOOLEAN`.
fn flag(row: &sqlx::any::AnyRow, i: usize) -> std::result::Result<bool, sqlx::Error> {
    row.try_get::<bool, _>(i)
        .or_else(|_| row.try_get::<i32, _>(i).map(|v| v != 0))
}

/// Customer `cid`.
pub(super) async fn customer(c: &mut AnyConnection, cid: &str) -> Result<CustomerView> {
    let row = sqlx::query("SELECT id, name, blocked_reason, allow_international, allow_premium FROM customers WHERE id = $1")
        .bind(cid)
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| Error::not_found("customer", cid))?;
    Ok(CustomerView {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        blocked_reason: row.try_get(2)?,
        allow_international: flag(&row, 3)?,
        allow_premium: flag(&row, 4)?,
    })
}

/// Telephony account `tid` (without its secret).
pub(super) async fn telephony_account(
    c: &mut AnyConnection,
    tid: &str,
) -> Result<TelephonyAccountView> {
    let row = sqlx::query("SELECT id, customer_id, provider, settings, secret_sealed IS NOT NULL, consent_by, consent_at_ms, consent_scope FROM telephony_accounts WHERE id = $1")
        .bind(tid)
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| Error::not_found("telephony account", tid))?;
    Ok(TelephonyAccountView {
        id: row.try_get(0)?,
        customer_id: row.try_get(1)?,
        provider: row.try_get(2)?,
        settings: serde_json::from_str(&row.try_get::<String, _>(3)?).unwrap_or_default(),
        has_secret: flag(&row, 4)?,
        consent: match row.try_get::<Option<String>, _>(5)? {
            Some(by) => Some(Consent {
                by,
                at_ms: row.try_get(6)?,
                scope: row.try_get(7)?,
            }),
            None => None,
        },
    })
}

/// Installation `iid` (secrets never included).
pub(super) async fn installation(c: &mut AnyConnection, iid: &str) -> Result<InstallationView> {
    let row = sqlx::query("SELECT id, customer_id, connector, config, granted_hosts, deliver_internal FROM installations WHERE id = $1")
        .bind(iid)
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| Error::not_found("installation", iid))?;
    Ok(InstallationView {
        id: row.try_get(0)?,
        customer_id: row.try_get(1)?,
        connector: row.try_get(2)?,
        config: serde_json::from_str(&row.try_get::<String, _>(3)?).unwrap_or_default(),
        granted_hosts: serde_json::from_str(&row.try_get::<String, _>(4)?).unwrap_or_default(),
        deliver_internal: flag(&row, 5)?,
    })
}

/// License `lid` with its keys (masked).
pub(super) async fn license(c: &mut AnyConnection, lid: &str) -> Result<LicenseView> {
    let row = sqlx::query("SELECT id, customer_id, installation_id, state, number, ordered_at_ms, provisioned_at_ms, cancelled_at_ms FROM licenses WHERE id = $1")
        .bind(lid)
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| Error::not_found("license", lid))?;
    let mut view = LicenseView {
        id: row.try_get(0)?,
        customer_id: row.try_get(1)?,
        installation_id: row.try_get(2)?,
        state: row.try_get(3)?,
        number: row.try_get(4)?,
        ordered_at_ms: row.try_get(5)?,
        provisioned_at_ms: row.try_get(6)?,
        cancelled_at_ms: row.try_get(7)?,
        keys: Vec::new(),
    };
    let keys = sqlx::query("SELECT id, masked, revoked_at_ms, blocked_reason FROM license_keys WHERE license_id = $1 ORDER BY created_at_ms")
        .bind(lid)
        .fetch_all(&mut *c)
        .await?;
    for k in keys {
        view.keys.push(KeyView {
            id: k.try_get(0)?,
            masked: k.try_get(1)?,
            revoked: k.try_get::<Option<i64>, _>(2)?.is_some(),
            blocked_reason: k.try_get(3)?,
        });
    }
    Ok(view)
}
