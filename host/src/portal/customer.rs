//! Customer pages under `/portal/c/{cid}/`: overview, admin accounts,
//! telephony accounts with consent and import, numbers, business
//! applications (forms generated from the connector's config schema),
//! licenses, LeanSync Keys, usage, billing, audit and deliveries.
//!
//! Customer admins see only their own customer and operators see every
//! customer: each handler asks [`Licensing`](crate::licensing::Licensing)
//! with the session's actor, and objects addressed in the URL or a form
//! field must also belong to the customer of the URL.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::PortalState;
use super::form::{self, FormData};
use super::operator::{AuditFilter, filtered, redrive_one};
use super::web::{Ctx, Errors, OrPage, Page, Posted, Refusal, errors_of, see_other};
use crate::licensing::{CustomerView, LicenseView, NewInstallation};

/// Customer routes.
pub(super) fn routes() -> Router<PortalState> {
    Router::new()
        .route("/portal/c/{cid}", get(overview))
        .route("/portal/c/{cid}/", get(overview))
        .route(
            "/portal/c/{cid}/accounts",
            get(accounts).post(create_account),
        )
        .route(
            "/portal/c/{cid}/telephony",
            get(telephony).post(create_telephony),
        )
        .route(
            "/portal/c/{cid}/telephony/{tid}/consent",
            get(consent_page).post(consent),
        )
        .route(
            "/portal/c/{cid}/telephony/{tid}/revoke",
            post(revoke_consent),
        )
        .route(
            "/portal/c/{cid}/telephony/{tid}/import",
            get(import_page).post(import),
        )
        .route("/portal/c/{cid}/numbers", get(numbers))
        .route("/portal/c/{cid}/apps", get(apps))
        .route(
            "/portal/c/{cid}/apps/new/{connector}",
            get(app_new_page).post(app_new),
        )
        .route("/portal/c/{cid}/licenses", get(licenses).post(order))
        .route("/portal/c/{cid}/licenses/{lid}/provision", post(provision))
        .route("/portal/c/{cid}/licenses/{lid}/assign", post(assign))
        .route("/portal/c/{cid}/licenses/{lid}/cancel", post(cancel))
        .route("/portal/c/{cid}/licenses/{lid}/rotate", post(rotate))
        .route("/portal/c/{cid}/keys", get(keys))
        .route("/portal/c/{cid}/keys/{kid}/revoke", post(revoke_key))
        .route("/portal/c/{cid}/usage", get(usage))
        .route("/portal/c/{cid}/usage.csv", get(usage_csv))
        .route("/portal/c/{cid}/billing", get(billing))
        .route("/portal/c/{cid}/billing.csv", get(billing_csv))
        .route("/portal/c/{cid}/audit", get(audit))
        .route("/portal/c/{cid}/deliveries", get(deliveries))
        .route("/portal/c/{cid}/deliveries/{id}/redrive", post(redrive))
}

fn lic(ctx: &Ctx) -> &crate::licensing::Licensing {
    &ctx.state.app().licensing
}

// ---- overview -------------------------------------------------------------

/// The customer overview (also shown again with a blocking error).
pub(super) async fn overview_page(
    ctx: &Ctx,
    c: &CustomerView,
    status: StatusCode,
    errors: Errors,
) -> Page {
    let l = lic(ctx);
    let notifications: Vec<_> = l
        .notifications(ctx.actor(), &c.id)
        .await
        .or_page(ctx)?
        .into_iter()
        .rev()
        .take(20)
        .collect();
    let licenses = l.licenses(ctx.actor(), &c.id).await.or_page(ctx)?;
    let waiting = licenses.iter().filter(|l| l.state == "ordered").count();
    let numbers = l.numbers(ctx.actor(), &c.id).await.or_page(ctx)?.len();
    let apps = l
        .installations(ctx.actor(), &c.id)
        .await
        .or_page(ctx)?
        .len();
    let tel = l
        .telephony_accounts(ctx.actor(), &c.id)
        .await
        .or_page(ctx)?;
    Ok(ctx.render_customer(
        status,
        "overview.html",
        c,
        "overview",
        context! {
            notifications, waiting, numbers, apps,
            telephony => tel.len(),
            consented => tel.iter().filter(|t| t.consent.is_some()).count(),
            licenses => licenses.iter().filter(|l| l.state != "cancelled").count(),
            errors,
        },
    ))
}

async fn overview(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let c = ctx.customer(&cid).await?;
    overview_page(&ctx, &c, StatusCode::OK, Errors::new()).await
}

// ---- accounts ---------------------------------------------------------------

async fn accounts_page(
    ctx: &Ctx,
    c: &CustomerView,
    status: StatusCode,
    errors: Errors,
    email: &str,
) -> Page {
    let list = lic(ctx)
        .accounts(ctx.actor(), Some(&c.id))
        .await
        .or_page(ctx)?;
    Ok(ctx.render_customer(
        status,
        "accounts.html",
        c,
        "accounts",
        context! { accounts => list, errors, email },
    ))
}

async fn accounts(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let c = ctx.customer(&cid).await?;
    accounts_page(&ctx, &c, StatusCode::OK, Errors::new(), "").await
}

async fn create_account(Path(cid): Path<String>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    let c = ctx.customer(&cid).await?;
    let email = form.get("email");
    let password = form.get("password");
    let l = lic(&ctx);
    let result = l
        .create_account(ctx.actor(), Some(&cid), email, form.checked("impersonal"))
        .await;
    let (acc, token) = match result {
        Ok(x) => x,
        Err(e) => {
            return accounts_page(
                &ctx,
                &c,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors_of(&e),
                email,
            )
            .await;
        }
    };
    let mut note = ctx.t("account_created").to_owned();
    if !password.is_empty()
        && let Err(e) = l.set_password(ctx.actor(), &acc.id, password).await
    {
        note = format!("{note} {}", e.message);
    }
    Ok(ctx.render_customer(
        StatusCode::CREATED,
        "secret.html",
        &c,
        "accounts",
        context! {
            heading => ctx.t("api_token"),
            label => format!("{} ({})", ctx.t("api_token"), acc.email),
            secret => token.expose(),
            note,
            back => format!("/portal/c/{cid}/accounts"),
        },
    ))
}

// ---- telephony ----------------------------------------------------------------

async fn telephony_page(
    ctx: &Ctx,
    c: &CustomerView,
    status: StatusCode,
    errors: Errors,
    form: &FormData,
) -> Page {
    let list = lic(ctx)
        .telephony_accounts(ctx.actor(), &c.id)
        .await
        .or_page(ctx)?;
    let telephony = &ctx.state.app().telephony;
    let connections: std::collections::BTreeMap<&str, _> = list
        .iter()
        .map(|a| (a.id.as_str(), telephony.account_status(&a.id, &a.provider)))
        .collect();
    let values = json!({
        // The simulator is for operators (demos); a customer connects a PBX.
        "provider": match form.get("provider") {
            "" if ctx.actor().is_operator() => "sim",
            "" => "sip",
            p => p,
        },
        "numbers": form.get("numbers"),
        "server": form.get("server"),
        "username": form.get("username"),
    });
    Ok(ctx.render_customer(
        status,
        "telephony.html",
        c,
        "telephony",
        context! { accounts => list, connections, errors, values },
    ))
}

async fn telephony(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let c = ctx.customer(&cid).await?;
    telephony_page(
        &ctx,
        &c,
        StatusCode::OK,
        Errors::new(),
        &FormData::default(),
    )
    .await
}

async fn create_telephony(Path(cid): Path<String>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    let c = ctx.customer(&cid).await?;
    let mut settings = serde_json::Map::new();
    let numbers = form::split_list(form.get("numbers"));
    if !numbers.is_empty() {
        settings.insert("numbers".into(), json!(numbers));
    }
    for k in ["server", "username"] {
        if !form.get(k).is_empty() {
            settings.insert(k.into(), json!(form.get(k)));
        }
    }
    let secret = Some(form.get("secret")).filter(|s| !s.is_empty());
    match lic(&ctx)
        .create_telephony_account(
            ctx.actor(),
            &cid,
            form.get("provider"),
            Value::Object(settings),
            secret,
        )
        .await
    {
        Ok(_) => {
            ctx.flash("telephony_created").await;
            Ok(see_other(&format!("/portal/c/{cid}/telephony")))
        }
        Err(e) => {
            telephony_page(
                &ctx,
                &c,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors_of(&e),
                &form,
            )
            .await
        }
    }
}

/// The telephony account, if it belongs to the customer of the URL.
async fn own_telephony(
    ctx: &Ctx,
    cid: &str,
    tid: &str,
) -> Result<crate::licensing::TelephonyAccountView, Refusal> {
    let t = lic(ctx)
        .telephony_account(ctx.actor(), tid)
        .await
        .or_page(ctx)?;
    if t.customer_id != cid {
        return Err(ctx.not_found().into());
    }
    Ok(t)
}

async fn consent_render(
    ctx: &Ctx,
    cid: &str,
    tid: &str,
    status: StatusCode,
    errors: Errors,
) -> Page {
    let c = ctx.customer(cid).await?;
    let t = own_telephony(ctx, cid, tid).await?;
    let numbers = lic(ctx)
        .account_numbers(ctx.actor(), tid)
        .await
        .or_page(ctx)?;
    Ok(ctx.render_customer(
        status,
        "consent.html",
        &c,
        "telephony",
        context! { account => t, numbers, errors },
    ))
}

async fn consent_page(ctx: Ctx, Path((cid, tid)): Path<(String, String)>) -> Page {
    consent_render(&ctx, &cid, &tid, StatusCode::OK, Errors::new()).await
}

/// What a customer admin consents to (recorded with the consent).
const CONSENT_SCOPE: &str = "read the account's phone numbers to monitor calls on licensed numbers and place click-to-calls";

async fn consent(Path((cid, tid)): Path<(String, String)>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    ctx.customer(&cid).await?;
    own_telephony(&ctx, &cid, &tid).await?;
    if !form.checked("confirm") {
        let mut errors = Errors::new();
        errors.insert("confirm".into(), ctx.t("consent_checkbox_required").into());
        return consent_render(&ctx, &cid, &tid, StatusCode::UNPROCESSABLE_ENTITY, errors).await;
    }
    match lic(&ctx)
        .grant_consent(ctx.actor(), &tid, CONSENT_SCOPE)
        .await
    {
        Ok(_) => {
            ctx.flash("consent_granted").await;
            Ok(see_other(&format!(
                "/portal/c/{cid}/telephony/{tid}/import"
            )))
        }
        Err(e) if e.kind != crate::licensing::ErrorKind::NotFound => {
            consent_render(
                &ctx,
                &cid,
                &tid,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors_of(&e),
            )
            .await
        }
        Err(e) => Err(ctx.fail(e).into()),
    }
}

async fn revoke_consent(Path((cid, tid)): Path<(String, String)>, p: Posted) -> Page {
    let Posted { ctx, .. } = p;
    ctx.customer(&cid).await?;
    own_telephony(&ctx, &cid, &tid).await?;
    lic(&ctx)
        .revoke_consent(ctx.actor(), &tid)
        .await
        .or_page(&ctx)?;
    ctx.flash("consent_revoked").await;
    Ok(see_other(&format!("/portal/c/{cid}/telephony")))
}

async fn import_render(
    ctx: &Ctx,
    cid: &str,
    tid: &str,
    status: StatusCode,
    errors: Errors,
) -> Page {
    let c = ctx.customer(cid).await?;
    let t = own_telephony(ctx, cid, tid).await?;
    let offered = lic(ctx)
        .account_numbers(ctx.actor(), tid)
        .await
        .or_page(ctx)?;
    let have: Vec<String> = lic(ctx)
        .numbers(ctx.actor(), cid)
        .await
        .or_page(ctx)?
        .into_iter()
        .map(|n| n.e164)
        .collect();
    let numbers: Vec<Value> = offered
        .iter()
        .map(|n| {
            let e164 = crate::number::E164::parse(n).ok();
            json!({
                "raw": n,
                "e164": e164.as_ref().map(|e| e.as_str().to_owned()),
                "imported": e164.as_ref().is_some_and(|e| have.iter().any(|h| h == e.as_str())),
            })
        })
        .collect();
    Ok(ctx.render_customer(
        status,
        "import.html",
        &c,
        "telephony",
        context! { account => t, numbers, errors },
    ))
}

async fn import_page(ctx: Ctx, Path((cid, tid)): Path<(String, String)>) -> Page {
    import_render(&ctx, &cid, &tid, StatusCode::OK, Errors::new()).await
}

async fn import(Path((cid, tid)): Path<(String, String)>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    ctx.customer(&cid).await?;
    own_telephony(&ctx, &cid, &tid).await?;
    let selected = form.all("number");
    if selected.is_empty() {
        let mut errors = Errors::new();
        errors.insert("number".into(), ctx.t("import_none_selected").into());
        return import_render(&ctx, &cid, &tid, StatusCode::UNPROCESSABLE_ENTITY, errors).await;
    }
    // Only numbers the account really offers can be imported.
    let offered = lic(&ctx)
        .account_numbers(ctx.actor(), &tid)
        .await
        .or_page(&ctx)?;
    let chosen: Vec<String> = offered
        .into_iter()
        .filter(|n| selected.contains(n))
        .collect();
    match lic(&ctx).import_numbers(ctx.actor(), &tid, &chosen).await {
        Ok(_) => {
            ctx.flash("numbers_imported").await;
            Ok(see_other(&format!("/portal/c/{cid}/numbers")))
        }
        Err(e) if e.kind != crate::licensing::ErrorKind::NotFound => {
            import_render(
                &ctx,
                &cid,
                &tid,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors_of(&e),
            )
            .await
        }
        Err(e) => Err(ctx.fail(e).into()),
    }
}

// ---- numbers ------------------------------------------------------------------

async fn numbers(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let c = ctx.customer(&cid).await?;
    let l = lic(&ctx);
    let list = l.numbers(ctx.actor(), &cid).await.or_page(&ctx)?;
    let licenses = l.licenses(ctx.actor(), &cid).await.or_page(&ctx)?;
    let apps = l.installations(ctx.actor(), &cid).await.or_page(&ctx)?;
    let connector_of = |iid: &str| {
        apps.iter()
            .find(|a| a.id == iid)
            .map(|a| a.connector.clone())
            .unwrap_or_default()
    };
    let rows: Vec<Value> = list
        .iter()
        .map(|n| {
            let used: Vec<String> = licenses
                .iter()
                .filter(|l| l.state == "provisioned" && l.number.as_deref() == Some(&n.e164))
                .map(|l| connector_of(&l.installation_id))
                .collect();
            json!({ "e164": n.e164, "national": n.national, "telephony_account_id": n.telephony_account_id, "licensed_for": used })
        })
        .collect();
    Ok(ctx.render_customer(
        StatusCode::OK,
        "numbers.html",
        &c,
        "numbers",
        context! { numbers => rows },
    ))
}

// ---- business applications -------------------------------------------------------

async fn apps(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let c = ctx.customer(&cid).await?;
    let list = lic(&ctx)
        .installations(ctx.actor(), &cid)
        .await
        .or_page(&ctx)?;
    let connectors = ctx.state.app().plugins.list();
    Ok(ctx.render_customer(
        StatusCode::OK,
        "apps.html",
        &c,
        "apps",
        context! { apps => list, connectors },
    ))
}

async fn app_render(
    ctx: &Ctx,
    c: &CustomerView,
    connector: &str,
    status: StatusCode,
    posted: Option<&FormData>,
    errors: Errors,
) -> Page {
    let Some(plugin) = ctx.state.app().plugins.get(connector) else {
        return Err(ctx.not_found().into());
    };
    let mut fields = form::fields(&plugin.manifest.config_schema, posted);
    for f in &mut fields {
        f.error = errors.get(&f.name).cloned();
    }
    let asked: Vec<String> = plugin
        .manifest
        .capabilities
        .outbound_hosts
        .iter()
        .map(|h| h.to_string())
        .collect();
    let values = json!({
        "granted_hosts": posted.map(|f| f.get("granted_hosts")).unwrap_or(""),
        "deliver_internal": posted.is_some_and(|f| f.checked("deliver_internal")),
    });
    Ok(ctx.render_customer(
        status,
        "app_new.html",
        c,
        "apps",
        context! {
            connector => connector,
            description => &plugin.manifest.description,
            version => plugin.manifest.version.to_string(),
            fields, asked, values, errors,
        },
    ))
}

async fn app_new_page(ctx: Ctx, Path((cid, connector)): Path<(String, String)>) -> Page {
    let c = ctx.customer(&cid).await?;
    app_render(&ctx, &c, &connector, StatusCode::OK, None, Errors::new()).await
}

async fn app_new(Path((cid, connector)): Path<(String, String)>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    let c = ctx.customer(&cid).await?;
    let app = ctx.state.app();
    let Some(plugin) = app.plugins.get(&connector) else {
        return Err(ctx.not_found().into());
    };
    let fields = form::fields(&plugin.manifest.config_schema, None);
    let (config, problems) = form::config_from(&fields, &form);
    let mut errors: Errors = problems
        .into_iter()
        .map(|(k, v)| (k, ctx.t(v).to_owned()))
        .collect();
    if errors.is_empty() {
        // Per-field problems from the schema and the connector itself.
        match app.plugins.validate_config(&connector, &config).await {
            Ok(issues) => {
                for i in issues {
                    let field = i
                        .field
                        .trim_start_matches('/')
                        .split('/')
                        .next()
                        .unwrap_or("");
                    let key = if fields.iter().any(|f| f.name == field) {
                        field.to_owned()
                    } else {
                        "_form".to_owned()
                    };
                    errors
                        .entry(key)
                        .and_modify(|m| {
                            m.push_str("; ");
                            m.push_str(&i.message)
                        })
                        .or_insert(i.message);
                }
            }
            Err(e) => {
                errors.insert("_form".into(), e.to_string());
            }
        }
    }
    if errors.is_empty() {
        let req = NewInstallation {
            connector: connector.clone(),
            config,
            granted_hosts: form::split_list(form.get("granted_hosts")),
            deliver_internal: form.checked("deliver_internal"),
        };
        match lic(&ctx).create_installation(ctx.actor(), &cid, req).await {
            Ok(_) => {
                ctx.flash("installation_created").await;
                return Ok(see_other(&format!("/portal/c/{cid}/apps")));
            }
            Err(e) if e.kind == crate::licensing::ErrorKind::NotFound => {
                return Err(ctx.fail(e).into());
            }
            Err(e) => errors = errors_of(&e),
        }
    }
    app_render(
        &ctx,
        &c,
        &connector,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(&form),
        errors,
    )
    .await
}

// ---- licenses -------------------------------------------------------------------

async fn licenses_page(
    ctx: &Ctx,
    c: &CustomerView,
    status: StatusCode,
    errors: Errors,
    lid_error: Option<(&str, String)>,
) -> Page {
    let l = lic(ctx);
    let list = l.licenses(ctx.actor(), &c.id).await.or_page(ctx)?;
    let apps = l.installations(ctx.actor(), &c.id).await.or_page(ctx)?;
    let numbers = l.numbers(ctx.actor(), &c.id).await.or_page(ctx)?;
    let connector_of: BTreeMap<&str, &str> = apps
        .iter()
        .map(|a| (a.id.as_str(), a.connector.as_str()))
        .collect();
    let rows: Vec<Value> = list
        .iter()
        .map(|x| {
            json!({
                "license": x,
                "connector": connector_of.get(x.installation_id.as_str()).copied().unwrap_or(""),
                "active_keys": x.keys.iter().filter(|k| !k.revoked).count(),
                "error": lid_error.as_ref().filter(|(id, _)| *id == x.id).map(|(_, m)| m.clone()),
            })
        })
        .collect();
    let summary: Vec<Value> = apps
        .iter()
        .map(|a| {
            let mine: Vec<&LicenseView> =
                list.iter().filter(|x| x.installation_id == a.id).collect();
            json!({
                "id": a.id,
                "connector": a.connector,
                "ordered": mine.iter().filter(|x| x.state == "ordered").count(),
                "available": mine.iter().filter(|x| x.state == "provisioned" && x.number.is_none()).count(),
                "assigned": mine.iter().filter(|x| x.state == "provisioned" && x.number.is_some()).count(),
            })
        })
        .collect();
    Ok(ctx.render_customer(
        status,
        "licenses.html",
        c,
        "licenses",
        context! { rows, apps, numbers, summary, errors },
    ))
}

async fn licenses(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let c = ctx.customer(&cid).await?;
    licenses_page(&ctx, &c, StatusCode::OK, Errors::new(), None).await
}

async fn order(Path(cid): Path<String>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    let c = ctx.customer(&cid).await?;
    let iid = form.get("installation");
    // The application must belong to the customer of the page.
    let inst = lic(&ctx)
        .installation(ctx.actor(), iid)
        .await
        .or_page(&ctx)?;
    if inst.customer_id != cid {
        return Err(ctx.not_found().into());
    }
    let Ok(count) = form.get("count").parse::<u32>() else {
        let mut errors = Errors::new();
        errors.insert("count".into(), ctx.t("not_a_number").into());
        return licenses_page(&ctx, &c, StatusCode::UNPROCESSABLE_ENTITY, errors, None).await;
    };
    match lic(&ctx).order_licenses(ctx.actor(), iid, count).await {
        Ok(_) => {
            ctx.flash("licenses_ordered").await;
            Ok(see_other(&format!("/portal/c/{cid}/licenses")))
        }
        Err(e) if e.kind == crate::licensing::ErrorKind::Invalid => {
            licenses_page(
                &ctx,
                &c,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors_of(&e),
                None,
            )
            .await
        }
        Err(e) => Err(ctx.fail(e).into()),
    }
}

/// The license, if it belongs to the customer of the URL.
async fn own_license(ctx: &Ctx, cid: &str, lid: &str) -> Result<LicenseView, Refusal> {
    let l = lic(ctx).license(ctx.actor(), lid).await.or_page(ctx)?;
    if l.customer_id != cid {
        return Err(ctx.not_found().into());
    }
    Ok(l)
}

fn key_page(
    ctx: &Ctx,
    c: &CustomerView,
    active: &str,
    l: &LicenseView,
    key: &str,
    note: &str,
) -> Response {
    ctx.render_customer(
        StatusCode::OK,
        "secret.html",
        c,
        active,
        context! {
            heading => ctx.t("key_title"),
            label => format!("{} {} ({})", ctx.t("license"), l.id, l.number.clone().unwrap_or_default()),
            secret => key,
            note => ctx.t(note),
            back => format!("/portal/c/{}/{}", c.id, if active == "keys" { "keys" } else { "licenses" }),
        },
    )
}

async fn provision(Path((cid, lid)): Path<(String, String)>, p: Posted) -> Page {
    let Posted { ctx, .. } = p;
    ctx.require_operator()?;
    let c = ctx.customer(&cid).await?;
    own_license(&ctx, &cid, &lid).await?;
    match lic(&ctx).provision(ctx.actor(), &lid).await {
        Ok((l, key)) => Ok(key_page(
            &ctx,
            &c,
            "licenses",
            &l,
            key.expose(),
            "key_provisioned_note",
        )),
        Err(e) if e.kind == crate::licensing::ErrorKind::Conflict => {
            licenses_page(
                &ctx,
                &c,
                StatusCode::CONFLICT,
                Errors::new(),
                Some((&lid, e.message)),
            )
            .await
        }
        Err(e) => Err(ctx.fail(e).into()),
    }
}

async fn assign(Path((cid, lid)): Path<(String, String)>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    let c = ctx.customer(&cid).await?;
    own_license(&ctx, &cid, &lid).await?;
    match lic(&ctx)
        .assign(ctx.actor(), &lid, form.get("number"))
        .await
    {
        Ok(_) => {
            ctx.flash("license_assigned").await;
            Ok(see_other(&format!("/portal/c/{cid}/licenses")))
        }
        Err(e)
            if matches!(
                e.kind,
                crate::licensing::ErrorKind::Invalid | crate::licensing::ErrorKind::Conflict
            ) =>
        {
            licenses_page(
                &ctx,
                &c,
                StatusCode::UNPROCESSABLE_ENTITY,
                Errors::new(),
                Some((&lid, e.message)),
            )
            .await
        }
        Err(e) => Err(ctx.fail(e).into()),
    }
}

async fn cancel(Path((cid, lid)): Path<(String, String)>, p: Posted) -> Page {
    let Posted { ctx, .. } = p;
    let c = ctx.customer(&cid).await?;
    own_license(&ctx, &cid, &lid).await?;
    match lic(&ctx).cancel(ctx.actor(), &lid).await {
        Ok(_) => {
            ctx.flash("license_cancelled").await;
            Ok(see_other(&format!("/portal/c/{cid}/licenses")))
        }
        Err(e) if e.kind == crate::licensing::ErrorKind::Conflict => {
            licenses_page(
                &ctx,
                &c,
                StatusCode::CONFLICT,
                Errors::new(),
                Some((&lid, e.message)),
            )
            .await
        }
        Err(e) => Err(ctx.fail(e).into()),
    }
}

// ---- keys -----------------------------------------------------------------------

async fn keys(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let c = ctx.customer(&cid).await?;
    let l = lic(&ctx);
    let list: Vec<LicenseView> = l
        .licenses(ctx.actor(), &cid)
        .await
        .or_page(&ctx)?
        .into_iter()
        .filter(|x| x.state == "provisioned")
        .collect();
    let apps = l.installations(ctx.actor(), &cid).await.or_page(&ctx)?;
    let rows: Vec<Value> = list
        .iter()
        .map(|x| {
            json!({
                "license": x,
                "connector": apps.iter().find(|a| a.id == x.installation_id).map(|a| a.connector.as_str()).unwrap_or(""),
            })
        })
        .collect();
    Ok(ctx.render_customer(StatusCode::OK, "keys.html", &c, "keys", context! { rows }))
}

async fn rotate(Path((cid, lid)): Path<(String, String)>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    let c = ctx.customer(&cid).await?;
    own_license(&ctx, &cid, &lid).await?;
    let active = if form.get("from") == "keys" {
        "keys"
    } else {
        "licenses"
    };
    let (l, key) = lic(&ctx)
        .rotate_key(ctx.actor(), &lid)
        .await
        .or_page(&ctx)?;
    Ok(key_page(
        &ctx,
        &c,
        active,
        &l,
        key.expose(),
        "key_rotated_note",
    ))
}

async fn revoke_key(Path((cid, kid)): Path<(String, String)>, p: Posted) -> Page {
    let Posted { ctx, form } = p;
    ctx.customer(&cid).await?;
    // The key must belong to a license of this customer.
    let owned = lic(&ctx)
        .licenses(ctx.actor(), &cid)
        .await
        .or_page(&ctx)?
        .iter()
        .any(|l| l.keys.iter().any(|k| k.id == kid));
    if !owned {
        return Err(ctx.not_found().into());
    }
    lic(&ctx)
        .revoke_key(ctx.actor(), &kid)
        .await
        .or_page(&ctx)?;
    ctx.flash("key_revoked").await;
    let back = if form.get("from") == "licenses" {
        "licenses"
    } else {
        "keys"
    };
    Ok(see_other(&format!("/portal/c/{cid}/{back}")))
}

// ---- reports ----------------------------------------------------------------------

async fn usage(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let c = ctx.customer(&cid).await?;
    let report = lic(&ctx).usage(ctx.actor(), &cid).await.or_page(&ctx)?;
    Ok(ctx.render_customer(
        StatusCode::OK,
        "usage.html",
        &c,
        "usage",
        context! { report },
    ))
}

fn csv_response(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn usage_csv(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let report = lic(&ctx).usage(ctx.actor(), &cid).await.or_page(&ctx)?;
    Ok(csv_response(&format!("usage-{cid}.csv"), report.to_csv()))
}

fn months() -> (String, String) {
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    let current = today.format("%Y-%m").to_string();
    let first = today.with_day(1).unwrap_or(today);
    let prev = first
        .pred_opt()
        .unwrap_or(first)
        .format("%Y-%m")
        .to_string();
    (current, prev)
}

async fn billing(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let c = ctx.customer(&cid).await?;
    let (current, previous) = months();
    let l = lic(&ctx);
    let mut statements = Vec::new();
    for (key, month) in [("current_month", current), ("previous_month", previous)] {
        let st = l.billing(ctx.actor(), &cid, &month).await.or_page(&ctx)?;
        statements.push(context! { title => ctx.t(key), st });
    }
    Ok(ctx.render_customer(
        StatusCode::OK,
        "billing.html",
        &c,
        "billing",
        context! { statements },
    ))
}

#[derive(Deserialize)]
struct MonthQ {
    month: Option<String>,
}

async fn billing_csv(ctx: Ctx, Path(cid): Path<String>, Query(q): Query<MonthQ>) -> Page {
    let month = q.month.unwrap_or_else(|| months().0);
    let st = lic(&ctx)
        .billing(ctx.actor(), &cid, &month)
        .await
        .or_page(&ctx)?;
    Ok(csv_response(
        &format!("billing-{cid}-{}.csv", st.month),
        st.to_csv(),
    ))
}

async fn audit(ctx: Ctx, Path(cid): Path<String>, Query(f): Query<AuditFilter>) -> Page {
    let c = ctx.customer(&cid).await?;
    let entries = lic(&ctx)
        .audit_log(ctx.actor(), Some(&cid))
        .await
        .or_page(&ctx)?;
    let f = AuditFilter {
        customer: String::new(),
        ..f
    };
    let (rows, total, actions) = filtered(entries, &f);
    Ok(ctx.render_customer(
        StatusCode::OK,
        "audit.html",
        &c,
        "audit",
        context! { entries => rows, total, actions, filter => f, all => false, action_url => format!("/portal/c/{cid}/audit") },
    ))
}

async fn deliveries(ctx: Ctx, Path(cid): Path<String>) -> Page {
    let c = ctx.customer(&cid).await?;
    let outbox = ctx.state.app().pipeline.outbox();
    let recent = outbox.recent(Some(&cid), 200).await.or_page(&ctx)?;
    let dead = outbox.dead(Some(&cid)).await.or_page(&ctx)?;
    Ok(ctx.render_customer(
        StatusCode::OK,
        "deliveries.html",
        &c,
        "deliveries",
        context! { recent, dead },
    ))
}

async fn redrive(Path((cid, id)): Path<(String, i64)>, p: Posted) -> Page {
    let Posted { ctx, .. } = p;
    ctx.customer(&cid).await?;
    redrive_one(&ctx, id, Some(&cid)).await?;
    Ok(see_other(&format!("/portal/c/{cid}/deliveries")))
}
