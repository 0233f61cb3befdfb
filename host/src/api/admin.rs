//! The admin REST API under `/api/v1` (operators and customer admins).
//! Every route is declared once in [`admin_routes!`], which builds both the
//! router and the OpenAPI document at `/api/v1/openapi.json`, so the two
//! cannot drift apart. Authorisation is per customer inside the licensing
//! service: another customer's data answers 404, operator-only actions 403.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use super::ApiError;
use super::auth::{Admin, Body, HasLicensing};
use crate::licensing::queries::PriceView;
use crate::licensing::{Licensing, NewInstallation, TelephonyAccountView};
use crate::pipeline::Pipeline;
use crate::telephony::{ProviderStatus, TelephonyHub};

/// Largest admin request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// State of the admin routes.
#[derive(Clone)]
pub struct AdminApi {
    /// Licensing.
    pub licensing: Licensing,
    /// Pipeline (deliveries of a customer).
    pub pipeline: Pipeline,
    /// Telephony (connection status of telephony accounts).
    pub telephony: Arc<TelephonyHub>,
}

/// A telephony account with the status of its connection.
#[derive(serde::Serialize)]
struct AccountWithConnection {
    #[serde(flatten)]
    account: TelephonyAccountView,
    connection: ProviderStatus,
}

impl AdminApi {
    fn with_connection(&self, account: TelephonyAccountView) -> AccountWithConnection {
        AccountWithConnection {
            connection: self
                .telephony
                .account_status(&account.id, &account.provider),
            account,
        }
    }
}

impl HasLicensing for AdminApi {
    fn licensing(&self) -> &Licensing {
        &self.licensing
    }
}

type Res = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> Res {
    Ok(Json(v).into_response())
}

fn created(v: impl serde::Serialize) -> Res {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// One documented route.
pub struct RouteDoc {
    /// HTTP method.
    pub method: &'static str,
    /// Path template.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Example request body, if any.
    pub body: Option<&'static str>,
}

macro_rules! admin_routes {
    ($( $method:ident $path:literal => $handler:ident, $summary:literal $(, body = $body:literal)? ;)*) => {
        /// Admin routes.
        pub fn router(api: AdminApi) -> Router {
            Router::new()
                $( .route($path, $method($handler)) )*
                .route("/api/v1/openapi.json", get(openapi))
                .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
                .with_state(api)
        }

        /// Every admin route, for the OpenAPI document.
        pub const ROUTES: &[RouteDoc] = &[
            $( RouteDoc { method: stringify!($method), path: $path, summary: $summary, body: admin_routes!(@body $($body)?) }, )*
        ];
    };
    (@body $b:literal) => { Some($b) };
    (@body) => { None };
}

admin_routes! {
    get "/api/v1/me" => me, "The authenticated account";
    get "/api/v1/accounts" => operator_accounts, "Operator accounts (operators)";
    post "/api/v1/accounts" => create_operator, "Create an operator account; returns its API token once", body = r#"{"email":"ops@example.ch","impersonal":false}"#;
    put "/api/v1/accounts/{id}/password" => set_password, "Set an account's portal password", body = r#"{"password":"at least 10 chars"}"#;
    post "/api/v1/accounts/{id}/token" => rotate_token, "Issue a new API token for an account (its own, or as its admin); the old token stops at once; returns the new one once";
    post "/api/v1/accounts/{id}/disable" => disable_account, "Disable an account: its token and portal sessions stop at once (never the last enabled operator)", body = r#"{"reason":"left the company"}"#;
    post "/api/v1/accounts/{id}/enable" => enable_account, "Enable a disabled account again";
    delete "/api/v1/accounts/{id}" => delete_account, "Delete an account (the audit keeps its name; never the last enabled operator)";
    get "/api/v1/customers" => customers, "Customers visible to the caller";
    post "/api/v1/customers" => create_customer, "Create a customer (operators)", body = r#"{"name":"Muster AG"}"#;
    get "/api/v1/customers/{cid}" => customer, "One customer";
    post "/api/v1/customers/{cid}/block" => block_customer, "Block a customer at once (operators)", body = r#"{"reason":"unpaid invoices"}"#;
    delete "/api/v1/customers/{cid}/block" => unblock_customer, "Unblock a customer (operators)";
    put "/api/v1/customers/{cid}/dial-permissions" => dial_permissions, "What a customer may dial (operators)", body = r#"{"international":true,"premium":false}"#;
    get "/api/v1/customers/{cid}/accounts" => customer_accounts, "Admin accounts of a customer";
    post "/api/v1/customers/{cid}/accounts" => create_customer_account, "Create a customer admin; returns its API token once", body = r#"{"email":"anna@muster.ch","impersonal":false}"#;
    get "/api/v1/customers/{cid}/telephony-accounts" => telephony_accounts, "Telephony accounts of a customer, each with its connection status";
    post "/api/v1/customers/{cid}/telephony-accounts" => create_telephony_account, "Connect a telephony account (secret stored encrypted, never returned); provider sip: the host connects to that PBX with these settings", body = r#"{"provider":"sip","settings":{"server":"pbx.example.ch:5060","username":"leansync"},"secret":"sip password"}"#;
    get "/api/v1/telephony-accounts/{tid}" => telephony_account, "One telephony account with its connection status (connected, monitored, active, last_error)";
    put "/api/v1/telephony-accounts/{tid}" => update_telephony_account, "Change a telephony account's settings and/or secret (what is left out stays); a sip account reconnects with them", body = r#"{"settings":{"server":"pbx.example.ch:5060","username":"leansync"},"secret":"new sip password"}"#;
    post "/api/v1/telephony-accounts/{tid}/consent" => grant_consent, "Give consent to read the account's numbers (customer admins)", body = r#"{"scope":"read numbers"}"#;
    delete "/api/v1/telephony-accounts/{tid}/consent" => revoke_consent, "Revoke consent: monitoring and click-to-call stop at once";
    post "/api/v1/telephony-accounts/{tid}/import" => import_numbers, "Import the account's numbers (needs consent)", body = r#"{"numbers":["044 123 45 67"]}"#;
    get "/api/v1/customers/{cid}/numbers" => numbers, "Numbers of a customer";
    post "/api/v1/customers/{cid}/numbers" => add_numbers, "Enter numbers by hand (operators); a number another customer claimed through its own PBX moves here", body = r#"{"numbers":["+41 44 123 45 67"]}"#;
    post "/api/v1/numbers/{number}/move" => move_number, "Move a number to another customer, audited with a reason (operators settle disputes); the previous owner's licenses on it are unassigned", body = r#"{"customer":"cus_0123","reason":"ported, ticket 4711"}"#;
    get "/api/v1/customers/{cid}/installations" => installations, "Business applications of a customer";
    post "/api/v1/customers/{cid}/installations" => create_installation, "Enable a connector (config validated against its schema)", body = r#"{"connector":"webhook","config":{"url":"http://127.0.0.1:9000/calls","secret":"s3cret"},"granted_hosts":["127.0.0.1"],"deliver_internal":false}"#;
    get "/api/v1/installations/{iid}" => installation, "One business application";
    post "/api/v1/installations/{iid}/licenses" => order_licenses, "Order licenses for a business application", body = r#"{"count":1}"#;
    get "/api/v1/customers/{cid}/licenses" => licenses, "Licenses of a customer";
    delete "/api/v1/customers/{cid}/licenses" => delete_licenses, "Delete all licenses and keys of a customer (operators)";
    get "/api/v1/licenses/{lid}" => license, "One license";
    post "/api/v1/licenses/{lid}/provision" => provision, "Provision an ordered license (operators); returns its LeanSync Key once";
    post "/api/v1/licenses/{lid}/assign" => assign, "Assign a license to a number", body = r#"{"number":"044 123 45 67"}"#;
    post "/api/v1/licenses/{lid}/cancel" => cancel, "Cancel a license (billing stops today)";
    post "/api/v1/licenses/{lid}/keys" => rotate_key, "Generate a new LeanSync Key (old ones revoked); returned once";
    delete "/api/v1/keys/{kid}" => revoke_key, "Revoke a LeanSync Key at once";
    put "/api/v1/installations/{iid}/allow-networks" => installation_networks, "Let one installation's plugin reach non-public ranges (operators; e.g. the customer's app behind a VPN); [] clears", body = r#"{"networks":["10.20.0.0/16"]}"#;
    post "/api/v1/installations/{iid}/dial-block" => block_installation_dialing, "Stop calls placed by an installation's plugin (operators; also automatic on the burst rule or daily budget)", body = r#"{"reason":"abuse"}"#;
    delete "/api/v1/installations/{iid}/dial-block" => unblock_installation_dialing, "Let an installation's plugin place calls again (operators)";
    post "/api/v1/keys/{kid}/block" => block_key, "Block a key at once (operators)", body = r#"{"reason":"abuse"}"#;
    delete "/api/v1/keys/{kid}/block" => unblock_key, "Unblock a key (operators)";
    get "/api/v1/customers/{cid}/usage" => usage, "Usage report (JSON, or CSV with ?format=csv)";
    get "/api/v1/customers/{cid}/billing" => billing, "Billing statement for ?month=YYYY-MM (JSON, or CSV with &format=csv)";
    get "/api/v1/prices" => prices, "The price list";
    put "/api/v1/prices" => set_price, "Set a connector's monthly price from a day on (operators)", body = r#"{"connector":"webhook","valid_from":"2026-12-01","monthly_chf":"9.50"}"#;
    get "/api/v1/customers/{cid}/audit" => customer_audit, "Audit log of a customer (JSON, or CSV with ?format=csv)";
    get "/api/v1/audit" => audit, "Whole audit log (operators)";
    get "/api/v1/customers/{cid}/notifications" => notifications, "Notifications of a customer";
    get "/api/v1/customers/{cid}/deliveries" => customer_deliveries, "Recent deliveries of a customer's applications";
}

#[derive(Deserialize)]
struct NewAccount {
    email: String,
    #[serde(default)]
    impersonal: bool,
}

#[derive(Deserialize)]
struct Password {
    password: String,
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

#[derive(Deserialize)]
struct Reason {
    reason: String,
}

#[derive(Deserialize)]
struct MoveTo {
    customer: String,
    reason: String,
}

#[derive(Deserialize)]
struct Permissions {
    international: bool,
    premium: bool,
}

#[derive(Deserialize)]
struct NewTelephony {
    provider: String,
    #[serde(default = "empty")]
    settings: Value,
    secret: Option<String>,
}

fn empty() -> Value {
    json!({})
}

#[derive(Deserialize)]
struct Scope {
    #[serde(default = "default_scope")]
    scope: String,
}

fn default_scope() -> String {
    "read the account's numbers to monitor calls and place click-to-calls".into()
}

#[derive(Deserialize, Default)]
struct Numbers {
    #[serde(default)]
    numbers: Vec<String>,
}

#[derive(Deserialize)]
struct Count {
    count: u32,
}

#[derive(Deserialize)]
struct Assign {
    number: String,
}

#[derive(Deserialize, Default)]
struct Format {
    format: Option<String>,
    month: Option<String>,
}

impl Format {
    fn csv(&self) -> bool {
        self.format.as_deref() == Some("csv")
    }
}

/// An optional JSON body: empty means `None`.
fn optional<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("{e}; see /api/v1/openapi.json for the expected shape"),
        )
    })
}

fn csv(name: String, body: String) -> Res {
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

async fn me(Admin(a): Admin) -> Res {
    ok(
        json!({ "id": a.account_id, "email": a.name, "customer_id": a.customer_id, "role": if a.is_operator() { "operator" } else { "customer_admin" }, "impersonal": a.impersonal }),
    )
}

async fn operator_accounts(State(s): State<AdminApi>, Admin(a): Admin) -> Res {
    ok(s.licensing.accounts(&a, None).await?)
}

async fn create_operator(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Body(b): Body<NewAccount>,
) -> Res {
    let (acc, token) = s
        .licensing
        .create_account(&a, None, &b.email, b.impersonal)
        .await?;
    created(
        json!({ "account": acc, "token": token.expose(), "note": "the token is shown only now; store it safely" }),
    )
}

async fn set_password(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(id): Path<String>,
    Body(b): Body<Password>,
) -> Res {
    s.licensing.set_password(&a, &id, &b.password).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rotate_token(State(s): State<AdminApi>, Admin(a): Admin, Path(id): Path<String>) -> Res {
    let (acc, token) = s.licensing.rotate_token(&a, &id).await?;
    ok(
        json!({ "account": acc, "token": token.expose(), "note": "the token is shown only now; the previous one no longer works" }),
    )
}

async fn disable_account(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(id): Path<String>,
    Body(b): Body<Reason>,
) -> Res {
    ok(s.licensing
        .set_account_disabled(&a, &id, Some(&b.reason))
        .await?)
}

async fn enable_account(State(s): State<AdminApi>, Admin(a): Admin, Path(id): Path<String>) -> Res {
    ok(s.licensing.set_account_disabled(&a, &id, None).await?)
}

async fn delete_account(State(s): State<AdminApi>, Admin(a): Admin, Path(id): Path<String>) -> Res {
    s.licensing.delete_account(&a, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn customers(State(s): State<AdminApi>, Admin(a): Admin) -> Res {
    ok(s.licensing.customers(&a).await?)
}

async fn create_customer(State(s): State<AdminApi>, Admin(a): Admin, Body(b): Body<Name>) -> Res {
    created(s.licensing.create_customer(&a, &b.name).await?)
}

async fn customer(State(s): State<AdminApi>, Admin(a): Admin, Path(cid): Path<String>) -> Res {
    ok(s.licensing.customer(&a, &cid).await?)
}

async fn block_customer(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
    Body(b): Body<Reason>,
) -> Res {
    ok(s.licensing
        .set_customer_block(&a, &cid, Some(&b.reason))
        .await?)
}

async fn unblock_customer(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
) -> Res {
    ok(s.licensing.set_customer_block(&a, &cid, None).await?)
}

async fn dial_permissions(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
    Body(b): Body<Permissions>,
) -> Res {
    ok(s.licensing
        .set_dial_permissions(&a, &cid, b.international, b.premium)
        .await?)
}

async fn customer_accounts(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
) -> Res {
    ok(s.licensing.accounts(&a, Some(&cid)).await?)
}

async fn create_customer_account(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
    Body(b): Body<NewAccount>,
) -> Res {
    let (acc, token) = s
        .licensing
        .create_account(&a, Some(&cid), &b.email, b.impersonal)
        .await?;
    created(
        json!({ "account": acc, "token": token.expose(), "note": "the token is shown only now; store it safely" }),
    )
}

async fn telephony_accounts(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
) -> Res {
    let accounts = s.licensing.telephony_accounts(&a, &cid).await?;
    ok(accounts
        .into_iter()
        .map(|t| s.with_connection(t))
        .collect::<Vec<_>>())
}

async fn create_telephony_account(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
    Body(b): Body<NewTelephony>,
) -> Res {
    let account = s
        .licensing
        .create_telephony_account(&a, &cid, &b.provider, b.settings, b.secret.as_deref())
        .await?;
    created(s.with_connection(account))
}

async fn telephony_account(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(tid): Path<String>,
) -> Res {
    let account = s.licensing.telephony_account(&a, &tid).await?;
    ok(s.with_connection(account))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TelephonyChange {
    settings: Option<Value>,
    secret: Option<String>,
}

async fn update_telephony_account(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(tid): Path<String>,
    Body(b): Body<TelephonyChange>,
) -> Res {
    let account = s
        .licensing
        .update_telephony_account(&a, &tid, b.settings, b.secret.as_deref())
        .await?;
    ok(s.with_connection(account))
}

async fn grant_consent(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(tid): Path<String>,
    body: axum::body::Bytes,
) -> Res {
    let scope = optional::<Scope>(&body)?
        .map(|b| b.scope)
        .unwrap_or_else(default_scope);
    ok(s.licensing.grant_consent(&a, &tid, &scope).await?)
}

async fn revoke_consent(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(tid): Path<String>,
) -> Res {
    ok(s.licensing.revoke_consent(&a, &tid).await?)
}

async fn import_numbers(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(tid): Path<String>,
    body: axum::body::Bytes,
) -> Res {
    let mut numbers = optional::<Numbers>(&body)?
        .map(|b| b.numbers)
        .unwrap_or_default();
    if numbers.is_empty() {
        numbers = s.licensing.account_numbers(&a, &tid).await?;
    }
    ok(s.licensing.import_numbers(&a, &tid, &numbers).await?)
}

async fn numbers(State(s): State<AdminApi>, Admin(a): Admin, Path(cid): Path<String>) -> Res {
    ok(s.licensing.numbers(&a, &cid).await?)
}

async fn add_numbers(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
    Body(b): Body<Numbers>,
) -> Res {
    ok(s.licensing.add_numbers(&a, &cid, &b.numbers).await?)
}

#[derive(Deserialize)]
struct Networks {
    networks: Vec<String>,
}

async fn installation_networks(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(iid): Path<String>,
    Body(b): Body<Networks>,
) -> Res {
    let nets = s
        .licensing
        .set_installation_networks(&a, &iid, &b.networks)
        .await?;
    ok(json!({ "installation_id": iid, "allow_networks": nets }))
}

async fn block_installation_dialing(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(iid): Path<String>,
    Body(b): Body<Reason>,
) -> Res {
    s.licensing
        .set_installation_dial_block(&a, &iid, Some(&b.reason))
        .await?;
    ok(json!({ "installation_id": iid, "dial_blocked_reason": b.reason }))
}

async fn unblock_installation_dialing(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(iid): Path<String>,
) -> Res {
    s.licensing
        .set_installation_dial_block(&a, &iid, None)
        .await?;
    ok(json!({ "installation_id": iid, "dial_blocked_reason": null }))
}

async fn move_number(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(number): Path<String>,
    Body(b): Body<MoveTo>,
) -> Res {
    ok(s.licensing
        .move_number(&a, &number, &b.customer, &b.reason)
        .await?)
}

async fn installations(State(s): State<AdminApi>, Admin(a): Admin, Path(cid): Path<String>) -> Res {
    ok(s.licensing.installations(&a, &cid).await?)
}

async fn create_installation(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
    Body(b): Body<NewInstallation>,
) -> Res {
    created(s.licensing.create_installation(&a, &cid, b).await?)
}

async fn installation(State(s): State<AdminApi>, Admin(a): Admin, Path(iid): Path<String>) -> Res {
    ok(s.licensing.installation(&a, &iid).await?)
}

async fn order_licenses(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(iid): Path<String>,
    Body(b): Body<Count>,
) -> Res {
    created(s.licensing.order_licenses(&a, &iid, b.count).await?)
}

async fn licenses(State(s): State<AdminApi>, Admin(a): Admin, Path(cid): Path<String>) -> Res {
    ok(s.licensing.licenses(&a, &cid).await?)
}

async fn delete_licenses(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
) -> Res {
    ok(json!({ "deleted": s.licensing.delete_licenses(&a, &cid).await? }))
}

async fn license(State(s): State<AdminApi>, Admin(a): Admin, Path(lid): Path<String>) -> Res {
    ok(s.licensing.license(&a, &lid).await?)
}

async fn provision(State(s): State<AdminApi>, Admin(a): Admin, Path(lid): Path<String>) -> Res {
    let (l, key) = s.licensing.provision(&a, &lid).await?;
    ok(
        json!({ "license": l, "key": key.expose(), "note": "the LeanSync Key is shown only now; give it to the business application" }),
    )
}

async fn assign(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(lid): Path<String>,
    Body(b): Body<Assign>,
) -> Res {
    ok(s.licensing.assign(&a, &lid, &b.number).await?)
}

async fn cancel(State(s): State<AdminApi>, Admin(a): Admin, Path(lid): Path<String>) -> Res {
    ok(s.licensing.cancel(&a, &lid).await?)
}

async fn rotate_key(State(s): State<AdminApi>, Admin(a): Admin, Path(lid): Path<String>) -> Res {
    let (l, key) = s.licensing.rotate_key(&a, &lid).await?;
    created(
        json!({ "license": l, "key": key.expose(), "note": "the LeanSync Key is shown only now; earlier keys of this license are revoked" }),
    )
}

async fn revoke_key(State(s): State<AdminApi>, Admin(a): Admin, Path(kid): Path<String>) -> Res {
    ok(s.licensing.revoke_key(&a, &kid).await?)
}

async fn block_key(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(kid): Path<String>,
    Body(b): Body<Reason>,
) -> Res {
    ok(s.licensing.set_key_block(&a, &kid, Some(&b.reason)).await?)
}

async fn unblock_key(State(s): State<AdminApi>, Admin(a): Admin, Path(kid): Path<String>) -> Res {
    ok(s.licensing.set_key_block(&a, &kid, None).await?)
}

async fn usage(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
    Query(f): Query<Format>,
) -> Res {
    let report = s.licensing.usage(&a, &cid).await?;
    if f.csv() {
        return csv(format!("usage-{cid}.csv"), report.to_csv());
    }
    ok(report)
}

async fn billing(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
    Query(f): Query<Format>,
) -> Res {
    let month = f
        .month
        .clone()
        .unwrap_or_else(|| chrono::Utc::now().format("%Y-%m").to_string());
    let st = s.licensing.billing(&a, &cid, &month).await?;
    if f.csv() {
        return csv(format!("billing-{cid}-{month}.csv"), st.to_csv());
    }
    ok(st)
}

async fn prices(State(s): State<AdminApi>, Admin(_): Admin) -> Res {
    ok(s.licensing.prices().await?)
}

async fn set_price(State(s): State<AdminApi>, Admin(a): Admin, Body(b): Body<PriceView>) -> Res {
    ok(s.licensing.set_price(&a, &b).await?)
}

async fn customer_audit(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
    Query(f): Query<Format>,
) -> Res {
    let entries = s.licensing.audit_log(&a, Some(&cid)).await?;
    if f.csv() {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record([
            "seq",
            "at_ms",
            "actor",
            "impersonal",
            "action",
            "target",
            "before",
            "after",
        ]);
        for e in &entries {
            let j = |v: &Option<Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
            let _ = w.write_record([
                e.seq.to_string(),
                e.at_ms.to_string(),
                e.actor.clone(),
                e.impersonal_actor.to_string(),
                e.action.clone(),
                e.target.clone(),
                j(&e.before),
                j(&e.after),
            ]);
        }
        return csv(
            format!("audit-{cid}.csv"),
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default(),
        );
    }
    ok(entries)
}

async fn audit(State(s): State<AdminApi>, Admin(a): Admin) -> Res {
    ok(s.licensing.audit_log(&a, None).await?)
}

async fn notifications(State(s): State<AdminApi>, Admin(a): Admin, Path(cid): Path<String>) -> Res {
    ok(s.licensing.notifications(&a, &cid).await?)
}

async fn customer_deliveries(
    State(s): State<AdminApi>,
    Admin(a): Admin,
    Path(cid): Path<String>,
) -> Res {
    a.check_customer(&cid)?;
    ok(s.pipeline
        .outbox()
        .recent(Some(&cid), 200)
        .await
        .map_err(ApiError::internal)?)
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The OpenAPI 3.1 document of the admin API, built from [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}_{}", r.method, r.path.trim_start_matches("/api/v1/").replace(['/', '{', '}', '-'], "_")),
            "security": [{ "bearer": [] }],
            "parameters": params,
            "responses": {
                "200": { "description": "Success (201 for creations, 204 without body)" },
                "4XX": { "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        });
        if let Some(body) = r.body {
            let example: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "type": "object" }, "example": example } } });
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "LeanSync Voice admin API", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "API token of a personal account" } },
            "schemas": { "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } } }
        },
        "paths": paths
    })
}
