//! Admin authentication: `Authorization: Bearer <API token>` of a personal
//! account, turned into an [`Actor`]; and the JSON body extractor whose
//! errors say what was expected.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::licensing::{self, Actor, ErrorKind, Licensing};

/// Maps licensing errors to HTTP.
impl From<licensing::Error> for ApiError {
    fn from(e: licensing::Error) -> Self {
        let status = match e.kind {
            ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
        };
        let busy = e.kind == ErrorKind::Busy;
        let err = ApiError::new(status, e.code, e.message);
        if busy { err.with_retry_after(1) } else { err }
    }
}

/// Something that can authenticate admin tokens.
pub trait HasLicensing {
    /// The licensing service.
    fn licensing(&self) -> &Licensing;
}

impl HasLicensing for Licensing {
    fn licensing(&self) -> &Licensing {
        self
    }
}

/// Resolves the bearer token of a request to its account.
pub async fn actor_of(
    licensing: &Licensing,
    headers: &axum::http::HeaderMap,
) -> Result<Actor, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send your API token as `Authorization: Bearer <token>`; `leansync admin bootstrap` creates the first operator and prints its token",
            )
        })?;
    licensing.authenticate(token).await.map_err(|r| {
        let status = match r {
            licensing::Refusal::Unknown | licensing::Refusal::Expired(_) => {
                StatusCode::UNAUTHORIZED
            }
            _ => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, r.code(), r.message())
    })
}

/// The authenticated admin of a request.
pub struct Admin(pub Actor);

impl<S: HasLicensing + Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        actor_of(state.licensing(), &parts.headers).await.map(Admin)
    }
}

/// Middleware: only operator admins pass.
pub async fn require_operator(
    State(licensing): State<Licensing>,
    req: Request,
    next: Next,
) -> Response {
    match actor_of(&licensing, req.headers()).await {
        Ok(a) if a.is_operator() => next.run(req).await,
        Ok(_) => ApiError::new(
            StatusCode::FORBIDDEN,
            "operator_only",
            "only an operator admin may do this",
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// A JSON body whose rejection names what was expected.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(rej) => {
                let status = rej.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    Err(ApiError::new(
                        status,
                        "body_too_large",
                        "the request body is too large; admin requests are limited to 64 KiB",
                    ))
                } else {
                    Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_body",
                        format!(
                            "{}; see /api/v1/openapi.json for the expected shape",
                            rej.body_text()
                        ),
                    ))
                }
            }
        }
    }
}
