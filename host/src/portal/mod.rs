//! The admin web portal under `/portal`: server-rendered pages for
//! operators (customers, prices, provisioning, plugins, health, audit,
//! dead letters) and customer admins (telephony and consent, numbers,
//! business applications, licenses, LeanSync Keys, usage, billing, audit,
//! deliveries).
//!
//! Every action goes through the [`Licensing`](crate::licensing::Licensing)
//! service with the session's [`Actor`](crate::licensing::Actor), exactly as
//! the admin REST API does, so authorisation is the service's: another
//! customer's data is "not found", operator-only actions are refused.
//! Sessions live in the hosts' shared state (see `store::shared`); every
//! form carries a per-session CSRF token.
//! Templates are embedded in the binary (minijinja), strings come from
//! [`i18n`] (English and German).

pub mod form;
pub mod i18n;
pub mod session;
pub mod throttle;
pub mod web;

mod customer;
mod operator;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, context};
use serde::Deserialize;

use crate::app::App;
use form::FormData;
use session::{LANG_COOKIE, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Sessions};
use throttle::{Throttle, Verdict};
use web::{Ctx, Page, Posted, render_with, see_other};

/// Largest form body accepted by the portal.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Shared state of the portal (cheap to clone).
#[derive(Clone)]
pub struct PortalState(Arc<Inner>);

struct Inner {
    app: App,
    sessions: Sessions,
    throttle: Throttle,
    env: Environment<'static>,
}

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[ $( ($name, include_str!(concat!("templates/", $name))) ),* ]
    };
}

/// The embedded templates.
const TEMPLATES: &[(&str, &str)] = templates!(
    "base.html",
    "macros.html",
    "login.html",
    "message.html",
    "secret.html",
    "password.html",
    "customers.html",
    "prices.html",
    "plugins.html",
    "health.html",
    "audit.html",
    "dead_letters.html",
    "overview.html",
    "accounts.html",
    "telephony.html",
    "consent.html",
    "import.html",
    "numbers.html",
    "apps.html",
    "app_new.html",
    "licenses.html",
    "keys.html",
    "usage.html",
    "billing.html",
    "deliveries.html",
);

const CSS: &str = include_str!("templates/portal.css");
const JS: &str = include_str!("templates/portal.js");

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, src) in TEMPLATES {
        env.add_template(name, src)
            .unwrap_or_else(|e| panic!("portal template {name} is invalid: {e:#}"));
    }
    env.add_filter("dt", |ms: i64| -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default()
    });
    env
}

impl PortalState {
    /// Portal state over a running host.
    pub fn new(app: App) -> Self {
        PortalState(Arc::new(Inner {
            sessions: Sessions::new(app.shared.clone()),
            throttle: Throttle::new(app.shared.clone()),
            app,
            env: environment(),
        }))
    }

    /// The host.
    pub fn app(&self) -> &App {
        &self.0.app
    }

    /// The sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.0.sessions
    }

    /// The sign-in throttle.
    pub fn throttle(&self) -> &Throttle {
        &self.0.throttle
    }

    /// The template environment.
    pub fn env(&self) -> &Environment<'static> {
        &self.0.env
    }
}

/// The portal routes (`/portal/...`) and `/` redirecting to `/portal/`.
pub fn router(state: PortalState) -> Router {
    let portal = Router::new()
        .route("/portal", get(|| async { Redirect::permanent("/portal/") }))
        .route("/portal/", get(home))
        .route("/portal/login", get(login_page).post(login))
        .route("/portal/logout", post(logout))
        .route("/portal/password", get(password_page).post(password))
        .route("/portal/assets/portal.css", get(css))
        .route("/portal/assets/portal.js", get(js))
        .merge(operator::routes())
        .merge(customer::routes())
        .route("/portal/{*rest}", get(not_found).post(not_found))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(headers))
        .with_state(state);
    Router::new()
        .route("/", get(|| async { Redirect::to("/portal/") }))
        .merge(portal)
}

/// Security headers on every portal response; remembers `?lang=`.
async fn headers(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let lang = web::query_param(&parts.uri, "lang").and_then(|l| i18n::Lang::parse(&l));
    let secure = session::is_tls(&parts.headers, &parts.uri);
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    let h = resp.headers_mut();
    let mut set = |name: header::HeaderName, v: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(v));
        }
    };
    set(header::CACHE_CONTROL, "no-store");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "same-origin");
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    if let Some(l) = lang
        && let Ok(v) = HeaderValue::from_str(&session::set_cookie(
            LANG_COOKIE,
            l.code(),
            Some(365 * 24 * 3600),
            secure,
        ))
    {
        h.append(header::SET_COOKIE, v);
    }
    resp
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        JS,
    )
        .into_response()
}

/// Unknown portal paths: 404 page (signed in or not).
async fn not_found(State(s): State<PortalState>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    match Ctx::from_request_parts(&mut parts, &s).await {
        Ok(ctx) => ctx.not_found(),
        Err(_) => anonymous_page(
            &s,
            &parts,
            StatusCode::NOT_FOUND,
            "not_found_title",
            "not_found_text",
        ),
    }
}

fn anonymous_page(
    s: &PortalState,
    parts: &Parts,
    status: StatusCode,
    title: &str,
    text: &str,
) -> Response {
    let lang = web::lang_of(parts);
    let base = context! {
        t => i18n::table(lang),
        lang => lang.code(),
        path => "/portal/",
    };
    render_with(
        s,
        status,
        "message.html",
        base,
        context! { title => i18n::text(lang, title), text => i18n::text(lang, text) },
    )
}

async fn home(ctx: Ctx) -> Response {
    match &ctx.actor().customer_id {
        None => see_other("/portal/customers"),
        Some(c) => see_other(&format!("/portal/c/{c}/")),
    }
}

#[derive(Deserialize, Default)]
struct Next_ {
    next: Option<String>,
}

/// Only local portal paths are followed after sign-in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/portal/") && !n.contains("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/portal/".to_owned(),
    }
}

fn login_render(
    s: &PortalState,
    parts: &Parts,
    status: StatusCode,
    email: &str,
    next: &str,
    error: Option<&str>,
) -> Response {
    let lang = web::lang_of(parts);
    let secure = session::is_tls(&parts.headers, &parts.uri);
    let token = session::random_token();
    let base = context! {
        t => i18n::table(lang),
        lang => lang.code(),
        path => parts.uri.path(),
        csrf => &token,
    };
    let mut resp = render_with(
        s,
        status,
        "login.html",
        base,
        context! { email, next, error => error.map(|k| i18n::text(lang, k)) },
    );
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        LOGIN_CSRF_COOKIE,
        &token,
        Some(3600),
        secure,
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn login_page(
    State(s): State<PortalState>,
    Query(q): Query<Next_>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let signed_in = match session::cookie(&parts.headers, SESSION_COOKIE) {
        Some(sid) => s.sessions().get(&sid).await.is_some(),
        None => false,
    };
    if signed_in {
        return see_other(&safe_next(q.next.as_deref()));
    }
    login_render(
        &s,
        &parts,
        StatusCode::OK,
        "",
        &safe_next(q.next.as_deref()),
        None,
    )
}

async fn login(State(s): State<PortalState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let form = match axum::extract::Form::<Vec<(String, String)>>::from_request(
        Request::from_parts(parts.clone(), body),
        &(),
    )
    .await
    {
        Ok(axum::extract::Form(v)) => FormData(v),
        Err(_) => FormData::default(),
    };
    // Double-submit token: the hidden field must match the cookie set with
    // the form.
    let cookie = session::cookie(&parts.headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if cookie.is_empty() || !session::same_token(form.get("csrf"), &cookie) {
        return anonymous_page(&s, &parts, StatusCode::FORBIDDEN, "csrf_title", "csrf_text");
    }
    let email = form.get("email").to_owned();
    let next = safe_next(Some(form.get("next")));
    let sessions = s.sessions();
    let source = web::source_of(&parts);
    let refuse = |v: Verdict| {
        tracing::warn!(%email, %source, ?v, "portal: sign-in refused, throttled");
        let key = match v {
            Verdict::SourceLocked => "login_locked_source",
            _ => "login_locked",
        };
        login_render(
            &s,
            &parts,
            StatusCode::TOO_MANY_REQUESTS,
            &email,
            &next,
            Some(key),
        )
    };
    // The password pool or the session store cannot take it now.
    let busy = || {
        let mut resp = login_render(
            &s,
            &parts,
            StatusCode::SERVICE_UNAVAILABLE,
            &email,
            &next,
            Some("login_busy"),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    };
    match s.throttle().check(&source, &email).await {
        Verdict::Check(delay) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        v => return refuse(v),
    }
    let actor = match s.app().licensing.login(&email, form.get("password")).await {
        Ok(Some(actor)) => actor,
        Ok(None) => {
            let locked = s.throttle().failed(&source, &email).await;
            tracing::info!(%email, %source, ?locked, "portal: sign-in failed");
            if let Some(v) = locked {
                return refuse(v);
            }
            return login_render(
                &s,
                &parts,
                StatusCode::UNAUTHORIZED,
                &email,
                &next,
                Some("login_failed"),
            );
        }
        Err(_busy) => {
            return busy();
        }
    };
    s.throttle().succeeded(&source, &email).await;
    tracing::info!(account = %actor.name, "portal: signed in");
    let sid = match sessions.create(actor).await {
        Ok(sid) => sid,
        Err(e) => {
            tracing::error!(error = %e, "portal: cannot store the session");
            return busy();
        }
    };
    let secure = session::is_tls(&parts.headers, &parts.uri);
    let mut resp = see_other(&next);
    for c in [
        session::set_cookie(
            SESSION_COOKIE,
            &sid,
            Some(session::SESSION_TTL.as_secs()),
            secure,
        ),
        session::set_cookie(LOGIN_CSRF_COOKIE, "", Some(0), secure),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

async fn logout(p: Posted) -> Response {
    p.ctx.state.sessions().remove(&p.ctx.sid).await;
    let mut resp = see_other("/portal/login");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(SESSION_COOKIE, "", Some(0), false)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn password_page(ctx: Ctx) -> Response {
    ctx.render(
        StatusCode::OK,
        "password.html",
        context! { errors => web::Errors::new() },
    )
}

async fn password(p: Posted) -> Page {
    let Posted { ctx, form } = p;
    let mut errors = web::Errors::new();
    let (current, new, confirm) = (
        form.get("current"),
        form.get("password"),
        form.get("confirm"),
    );
    if new != confirm {
        errors.insert("confirm".into(), ctx.t("passwords_differ").into());
    }
    // The current password is checked like a sign-in: throttled per
    // source and account, on the bounded password pool.
    if errors.is_empty() {
        let name = ctx.actor().name.clone();
        let throttle = ctx.state.throttle();
        match throttle.check(&ctx.source, &name).await {
            Verdict::Check(delay) => {
                tokio::time::sleep(delay).await;
                match ctx.state.app().licensing.login(&name, current).await {
                    Ok(Some(_)) => throttle.succeeded(&ctx.source, &name).await,
                    Ok(None) => {
                        let key = match throttle.failed(&ctx.source, &name).await {
                            Some(Verdict::SourceLocked) => "login_locked_source",
                            Some(_) => "login_locked",
                            None => "current_password_wrong",
                        };
                        errors.insert("current".into(), ctx.t(key).into());
                    }
                    Err(_busy) => {
                        errors.insert("current".into(), ctx.t("login_busy").into());
                    }
                }
            }
            Verdict::SourceLocked => {
                errors.insert("current".into(), ctx.t("login_locked_source").into());
            }
            Verdict::PairLocked => {
                errors.insert("current".into(), ctx.t("login_locked").into());
            }
        }
    }
    if errors.is_empty() {
        match ctx
            .state
            .app()
            .licensing
            .set_password(ctx.actor(), &ctx.actor().account_id, new)
            .await
        {
            Ok(()) => {
                ctx.state.sessions().password_changed(&ctx.sid).await;
                ctx.flash("password_saved").await;
                return Ok(see_other("/portal/password"));
            }
            Err(e) => errors = web::errors_of(&e),
        }
    }
    Ok(ctx.render(
        StatusCode::UNPROCESSABLE_ENTITY,
        "password.html",
        context! { errors },
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_compiles() {
        let env = super::environment();
        for (name, _) in super::TEMPLATES {
            env.get_template(name).unwrap();
        }
    }
}
