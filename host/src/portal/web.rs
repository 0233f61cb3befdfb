//! Request plumbing of the portal: the signed-in context ([`Ctx`]), posted
//! forms with their CSRF check ([`Posted`]), page rendering and error pages.

use std::collections::BTreeMap;

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::{Value, context};
use serde::Serialize;

use super::PortalState;
use super::form::FormData;
use super::i18n::{self, Lang};
use super::session::{self, LANG_COOKIE, SESSION_COOKIE, Session};
use crate::licensing::{self, CustomerView, ErrorKind};

/// A handler result: a page either way.
pub type Page = Result<Response, Refusal>;

/// An error page ready to be sent (boxed: responses are large).
pub struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(r: Response) -> Self {
        Refusal(Box::new(r))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// The language of a request: `?lang=`, then the cookie, then English.
pub fn lang_of(parts: &Parts) -> Lang {
    query_param(&parts.uri, "lang")
        .and_then(|l| Lang::parse(&l))
        .or_else(|| session::cookie(&parts.headers, LANG_COOKIE).and_then(|l| Lang::parse(&l)))
        .unwrap_or(Lang::En)
}

/// One query parameter of a URI (first occurrence, percent-decoded).
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// A signed-in request: state, session and language.
pub struct Ctx {
    /// Portal state.
    pub state: PortalState,
    /// Language of the page.
    pub lang: Lang,
    /// Session id.
    pub sid: String,
    /// The session (actor and CSRF token).
    pub session: Session,
    /// Path of the request (for language links).
    pub path: String,
    /// Where the request came from (see [`source_of`]).
    pub source: String,
    /// The message to show on this page.
    flash: Option<(String, String)>,
}

/// The client a request came from, as the sign-in throttle counts it: the
/// peer's IP address, an IPv6 peer by its /64 (one subscriber's network);
/// `unknown` when the listener did not record it.
pub fn source_of(parts: &Parts) -> String {
    use std::net::IpAddr;
    match parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
    {
        Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or_else(String::new, |v4| v4.to_string()),
        Some(ip) => ip.to_string(),
        None => "unknown".into(),
    }
}

impl FromRequestParts<PortalState> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &PortalState,
    ) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path().to_owned();
        let found = match session::cookie(&parts.headers, SESSION_COOKIE) {
            Some(sid) => state.sessions().get(&sid).await.map(|s| (sid, s)),
            None => None,
        };
        // A session ends as soon as its account is disabled or deleted or
        // its customer blocked, on whichever host the change was made.
        let found = match found {
            Some((sid, session)) => match state
                .app()
                .licensing
                .recheck(&session.actor, session.since_ms)
                .await
            {
                Ok(()) => Some((sid, session)),
                Err(_) => {
                    state.sessions().remove(&sid).await;
                    None
                }
            },
            None => None,
        };
        let Some((sid, session)) = found else {
            let next = if parts.method == axum::http::Method::GET {
                format!("?next={}", urlencode(&path))
            } else {
                String::new()
            };
            return Err(Redirect::to(&format!("/portal/login{next}")).into_response());
        };
        // A page shows the message the previous request left, once.
        let flash = if session.flash.is_some() && parts.method == axum::http::Method::GET {
            state.sessions().take_flash(&sid).await
        } else {
            None
        };
        Ok(Ctx {
            state: state.clone(),
            lang: lang_of(parts),
            sid,
            session,
            path,
            source: source_of(parts),
            flash,
        })
    }
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A posted form of a signed-in session whose CSRF token matched.
pub struct Posted {
    /// The signed-in context.
    pub ctx: Ctx,
    /// The fields.
    pub form: FormData,
}

impl FromRequest<PortalState> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &PortalState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let ctx = Ctx::from_request_parts(&mut parts, state).await?;
        let req = Request::from_parts(parts, body);
        let form = match Form::<Vec<(String, String)>>::from_request(req, &()).await {
            Ok(Form(v)) => FormData(v),
            Err(_) => FormData::default(),
        };
        if !session::same_token(form.get("csrf"), &ctx.session.csrf) {
            tracing::warn!(account = %ctx.session.actor.name, path = %ctx.path, "portal: form refused, CSRF token missing or wrong");
            return Err(ctx.csrf_refused());
        }
        Ok(Posted { ctx, form })
    }
}

/// Problems of a form, by field name (`_form` for the whole form).
pub type Errors = BTreeMap<String, String>;

/// The field a licensing error code belongs to, if any.
pub fn field_of(code: &str) -> &'static str {
    match code {
        "invalid_name" => "name",
        "reason_required" => "reason",
        "invalid_email" | "email_taken" => "email",
        "weak_password" => "password",
        "invalid_provider" => "provider",
        "invalid_settings" => "numbers",
        "invalid_number" | "number_taken" => "number",
        "invalid_count" => "count",
        "invalid_date" => "valid_from",
        "invalid_price" => "monthly_chf",
        "invalid_connector" | "unknown_connector" => "connector",
        "invalid_host" => "granted_hosts",
        _ => "_form",
    }
}

/// Errors of a licensing failure, placed next to the field it concerns.
pub fn errors_of(e: &licensing::Error) -> Errors {
    let mut m = Errors::new();
    m.insert(field_of(e.code).to_owned(), e.message.clone());
    m
}

impl Ctx {
    /// The signed-in actor.
    pub fn actor(&self) -> &licensing::Actor {
        &self.session.actor
    }

    /// A string of the page's language.
    pub fn t(&self, key: &str) -> &'static str {
        i18n::text(self.lang, key)
    }

    /// Sets the message shown on the next page.
    pub async fn flash(&self, key: &str) {
        self.state
            .sessions()
            .flash(&self.sid, "ok", i18n::text(self.lang, key))
            .await;
    }

    /// Renders `template` with the common values and `page`.
    pub fn render(&self, status: StatusCode, template: &str, page: impl Serialize) -> Response {
        let flash = self.flash.clone();
        let a = self.actor();
        let base = context! {
            t => i18n::table(self.lang),
            lang => self.lang.code(),
            path => &self.path,
            csrf => &self.session.csrf,
            flash => flash.map(|(kind, text)| context! { kind, text }),
            me => context! {
                name => &a.name,
                operator => a.is_operator(),
                impersonal => a.impersonal,
                customer_id => &a.customer_id,
            },
        };
        render_with(&self.state, status, template, base, page)
    }

    /// Renders a customer page: `customer` and the customer navigation.
    pub fn render_customer(
        &self,
        status: StatusCode,
        template: &str,
        customer: &CustomerView,
        active: &str,
        page: impl Serialize,
    ) -> Response {
        let page = Value::from_serialize(page);
        self.render(
            status,
            template,
            context! { customer => customer, active => active, ..page },
        )
    }

    /// A message page (errors).
    pub fn message(&self, status: StatusCode, title: &str, text: &str) -> Response {
        // Language links go to the start page: an error page must not echo
        // the address that was asked for.
        self.render(
            status,
            "message.html",
            context! { title, text, path => "/portal/" },
        )
    }

    /// 404: missing or not visible (other customers' data looks missing).
    pub fn not_found(&self) -> Response {
        self.message(
            StatusCode::NOT_FOUND,
            self.t("not_found_title"),
            self.t("not_found_text"),
        )
    }

    /// 403 for operator-only pages and actions.
    pub fn forbidden(&self) -> Response {
        self.message(
            StatusCode::FORBIDDEN,
            self.t("forbidden_title"),
            self.t("forbidden_text"),
        )
    }

    /// 403 for a form without a valid CSRF token; nothing was changed.
    pub fn csrf_refused(&self) -> Response {
        self.message(
            StatusCode::FORBIDDEN,
            self.t("csrf_title"),
            self.t("csrf_text"),
        )
    }

    /// 500; the detail goes to the log only.
    pub fn internal(&self, e: impl std::fmt::Display) -> Response {
        tracing::error!(error = %e, path = %self.path, "portal: internal error");
        self.message(
            StatusCode::INTERNAL_SERVER_ERROR,
            self.t("internal_title"),
            self.t("internal_text"),
        )
    }

    /// The page for a licensing error that no form field explains.
    pub fn fail(&self, e: licensing::Error) -> Response {
        match e.kind {
            ErrorKind::NotFound => self.not_found(),
            ErrorKind::Forbidden => {
                self.message(StatusCode::FORBIDDEN, self.t("forbidden_title"), &e.message)
            }
            ErrorKind::Internal => self.internal(&e.message),
            ErrorKind::Busy => {
                self.message(StatusCode::SERVICE_UNAVAILABLE, self.t("error"), &e.message)
            }
            ErrorKind::Invalid | ErrorKind::Conflict => self.message(
                StatusCode::UNPROCESSABLE_ENTITY,
                self.t("error"),
                &format!("{} ({})", e.message, e.code),
            ),
        }
    }

    /// Fails with 403 unless the actor is an operator.
    pub fn require_operator(&self) -> Result<(), Refusal> {
        if self.actor().is_operator() {
            Ok(())
        } else {
            Err(self.forbidden().into())
        }
    }

    /// The customer, if the actor may see it (404 otherwise).
    pub async fn customer(&self, cid: &str) -> Result<CustomerView, Refusal> {
        self.state
            .app()
            .licensing
            .customer(self.actor(), cid)
            .await
            .map_err(|e| self.fail(e).into())
    }
}

/// Renders a template with base values and page values merged.
pub fn render_with(
    state: &PortalState,
    status: StatusCode,
    template: &str,
    base: Value,
    page: impl Serialize,
) -> Response {
    let page = Value::from_serialize(page);
    let ctx = context! { ..page, ..base };
    match state
        .env()
        .get_template(template)
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), template, "portal: template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>The page could not be rendered; see the host log.</p>".to_string()),
            )
                .into_response()
        }
    }
}

/// A 303 redirect (after a successful POST).
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// Licensing results inside handlers: errors become pages.
pub trait OrPage<T> {
    /// Maps a licensing error to its page.
    fn or_page(self, ctx: &Ctx) -> Result<T, Refusal>;
}

impl<T> OrPage<T> for licensing::Result<T> {
    fn or_page(self, ctx: &Ctx) -> Result<T, Refusal> {
        self.map_err(|e| ctx.fail(e).into())
    }
}

impl<T> OrPage<T> for anyhow::Result<T> {
    fn or_page(self, ctx: &Ctx) -> Result<T, Refusal> {
        self.map_err(|e| ctx.internal(format!("{e:#}")).into())
    }
}
