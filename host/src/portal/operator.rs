//! Operator pages: customers (create, block, unblock), the price list, the
//! plugin catalogue, system health, the whole audit log and dead letters.

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use minijinja::context;
use serde::Deserialize;

use super::PortalState;
use super::web::{Ctx, Errors, OrPage, Page, Posted, Refusal, errors_of, see_other};
use crate::licensing::queries::PriceView;
use crate::plugins::Status;

/// Operator routes.
pub(super) fn routes() -> Router<PortalState> {
    Router::new()
        .route("/portal/customers", get(customers).post(create_customer))
        .route("/portal/customers/{cid}/block", post(block))
        .route("/portal/customers/{cid}/unblock", post(unblock))
        .route("/portal/prices", get(prices).post(set_price))
        .route("/portal/plugins", get(plugins))
        .route("/portal/health", get(health))
        .route("/portal/audit", get(audit))
        .route("/portal/dead-letters", get(dead_letters))
        .route("/portal/deliveries/{id}/redrive", post(redrive))
}

async fn customers_page(ctx: &Ctx, status: StatusCode, errors: Errors, name: &str) -> Page {
    ctx.require_operator()?;
    let list = ctx
        .state
        .app()
        .licensing
        .customers(ctx.actor())
        .await
        .or_page(ctx)?;
    Ok(ctx.render(
        status,
        "customers.html",
        context! { customers => list, errors, name, active => "customers" },
    ))
}

async fn customers(ctx: Ctx) -> Page {
    customers_page(&ctx, StatusCode::OK, Errors::new(), "").await
}

async fn create_customer(p: Posted) -> Page {
    let Posted { ctx, form } = p;
    ctx.require_operator()?;
    match ctx
        .state
        .app()
        .licensing
        .create_customer(ctx.actor(), form.get("name"))
        .await
    {
        Ok(c) => {
            ctx.flash("customer_created").await;
            Ok(see_other(&format!("/portal/c/{}/", c.id)))
        }
        Err(e) => {
            customers_page(
                &ctx,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors_of(&e),
                form.get("name"),
            )
            .await
        }
    }
}

async fn block(Path(cid): Path<String>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    ctx.require_operator()?;
    let back = safe_back(form.get("back"), &cid);
    match ctx
        .state
        .app()
        .licensing
        .set_customer_block(ctx.actor(), &cid, Some(form.get("reason")))
        .await
    {
        Ok(_) => {
            ctx.flash("customer_blocked").await;
            Ok(see_other(&back))
        }
        Err(e) if e.code == "reason_required" => {
            let c = ctx.customer(&cid).await?;
            super::customer::overview_page(
                &ctx,
                &c,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors_of(&e),
            )
            .await
        }
        Err(e) => Err(ctx.fail(e).into()),
    }
}

async fn unblock(Path(cid): Path<String>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    ctx.require_operator()?;
    ctx.state
        .app()
        .licensing
        .set_customer_block(ctx.actor(), &cid, None)
        .await
        .or_page(&ctx)?;
    ctx.flash("customer_unblocked").await;
    Ok(see_other(&safe_back(form.get("back"), &cid)))
}

fn safe_back(back: &str, cid: &str) -> String {
    if back == "customers" {
        "/portal/customers".into()
    } else {
        format!("/portal/c/{cid}/")
    }
}

async fn prices_page(ctx: &Ctx, status: StatusCode, errors: Errors, v: &PriceView) -> Page {
    ctx.require_operator()?;
    let list = ctx.state.app().licensing.prices().await.or_page(ctx)?;
    let connectors: Vec<String> = ctx
        .state
        .app()
        .plugins
        .list()
        .into_iter()
        .map(|p| p.name)
        .collect();
    Ok(ctx.render(
        status,
        "prices.html",
        context! { prices => list, connectors, errors, values => v, active => "prices" },
    ))
}

async fn prices(ctx: Ctx) -> Page {
    let today = chrono::Utc::now().date_naive().to_string();
    let v = PriceView {
        connector: String::new(),
        valid_from: today,
        monthly_chf: String::new(),
    };
    prices_page(&ctx, StatusCode::OK, Errors::new(), &v).await
}

async fn set_price(p: Posted) -> Page {
    let Posted { ctx, form } = p;
    ctx.require_operator()?;
    let v = PriceView {
        connector: form.get("connector").to_owned(),
        valid_from: form.get("valid_from").to_owned(),
        monthly_chf: form.get("monthly_chf").to_owned(),
    };
    match ctx.state.app().licensing.set_price(ctx.actor(), &v).await {
        Ok(_) => {
            ctx.flash("price_saved").await;
            Ok(see_other("/portal/prices"))
        }
        Err(e) => prices_page(&ctx, StatusCode::UNPROCESSABLE_ENTITY, errors_of(&e), &v).await,
    }
}

async fn plugins(ctx: Ctx) -> Page {
    ctx.require_operator()?;
    let list = ctx.state.app().plugins.list();
    Ok(ctx.render(
        StatusCode::OK,
        "plugins.html",
        context! { plugins => list, active => "plugins" },
    ))
}

async fn health(ctx: Ctx) -> Page {
    ctx.require_operator()?;
    let app = ctx.state.app();
    let problems = app.readiness_problems().await;
    let t = crate::telephony::Provider::status(app.telephony.as_ref());
    let plugins = app.plugins.list();
    let unhealthy: Vec<_> = plugins
        .iter()
        .filter(|p| p.status != Status::Active)
        .cloned()
        .collect();
    let dead = app.pipeline.outbox().dead(None).await.or_page(&ctx)?.len();
    Ok(ctx.render(
        StatusCode::OK,
        "health.html",
        context! {
            problems,
            telephony => context! { kind => t.kind, connected => t.connected, last_error => t.last_error },
            plugin_count => plugins.len(),
            unhealthy,
            dead,
            active => "health",
        },
    ))
}

/// Audit filters (all optional).
#[derive(Deserialize, Default, Clone, serde::Serialize)]
pub(super) struct AuditFilter {
    /// Part of the actor's e-mail.
    #[serde(default)]
    pub user: String,
    /// Action prefix, e.g. `key.`.
    #[serde(default)]
    pub action: String,
    /// First day (YYYY-MM-DD).
    #[serde(default)]
    pub from: String,
    /// Last day (YYYY-MM-DD).
    #[serde(default)]
    pub to: String,
    /// Customer id (operators' whole log).
    #[serde(default)]
    pub customer: String,
}

impl AuditFilter {
    /// Whether an entry passes the filters.
    pub fn keep(&self, e: &crate::licensing::AuditEntry) -> bool {
        let day = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|d| d.date_naive().to_string())
                .unwrap_or_default()
        };
        let d = day(e.at_ms);
        (self.user.trim().is_empty()
            || e.actor
                .to_lowercase()
                .contains(&self.user.trim().to_lowercase()))
            && (self.action.trim().is_empty() || e.action.starts_with(self.action.trim()))
            && (self.from.trim().is_empty() || d.as_str() >= self.from.trim())
            && (self.to.trim().is_empty() || d.as_str() <= self.to.trim())
            && (self.customer.trim().is_empty()
                || e.customer_id.as_deref() == Some(self.customer.trim()))
    }
}

/// The newest 500 matching entries, newest first, and the match count.
pub(super) fn filtered(
    entries: Vec<crate::licensing::AuditEntry>,
    f: &AuditFilter,
) -> (Vec<crate::licensing::AuditEntry>, usize, Vec<String>) {
    let mut actions: Vec<String> = entries.iter().map(|e| e.action.clone()).collect();
    actions.sort();
    actions.dedup();
    let mut rows: Vec<_> = entries.into_iter().filter(|e| f.keep(e)).collect();
    let total = rows.len();
    rows.reverse();
    rows.truncate(500);
    (rows, total, actions)
}

async fn audit(ctx: Ctx, Query(f): Query<AuditFilter>) -> Page {
    ctx.require_operator()?;
    let entries = ctx
        .state
        .app()
        .licensing
        .audit_log(ctx.actor(), None)
        .await
        .or_page(&ctx)?;
    let (rows, total, actions) = filtered(entries, &f);
    Ok(ctx.render(
        StatusCode::OK,
        "audit.html",
        context! { entries => rows, total, actions, filter => f, all => true, action_url => "/portal/audit", active => "audit" },
    ))
}

async fn dead_letters(ctx: Ctx) -> Page {
    ctx.require_operator()?;
    let dead = ctx
        .state
        .app()
        .pipeline
        .outbox()
        .dead(None)
        .await
        .or_page(&ctx)?;
    Ok(ctx.render(
        StatusCode::OK,
        "dead_letters.html",
        context! { dead, active => "dead" },
    ))
}

async fn redrive(Path(id): Path<i64>, p: Posted) -> Page {
    let Posted { ctx, .. } = p;
    redrive_one(&ctx, id, None).await?;
    Ok(see_other("/portal/dead-letters"))
}

/// Re-drives a dead letter (operators), optionally only of `customer`.
pub(super) async fn redrive_one(ctx: &Ctx, id: i64, customer: Option<&str>) -> Result<(), Refusal> {
    ctx.require_operator()?;
    let pipeline = &ctx.state.app().pipeline;
    let row = pipeline.outbox().delivery(id).await.or_page(ctx)?;
    match row {
        Some(r) if customer.is_none_or(|c| c == r.customer_id) => {}
        _ => return Err(ctx.not_found().into()),
    }
    if pipeline.redrive(id).await.or_page(ctx)? {
        ctx.flash("redriven").await;
    } else {
        ctx.flash("not_dead").await;
    }
    Ok(())
}
