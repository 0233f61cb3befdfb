//! Click-to-call: every check between a business app's request and the PBX
//! (destination policy, rate limits, the burst rule), then origination.

pub mod policy;
pub mod rate;

use std::sync::Arc;

use axum::http::StatusCode;
use futures::future::BoxFuture;

use crate::api::ApiError;
use crate::api::business::{Dialer, KeyScope};
use crate::number::E164;
pub use policy::{DialPermissions, Refusal};
pub use rate::{Limiter, RateLimits, Verdict};

/// Starts calls on the telephony provider.
pub trait Originator: Send + Sync + 'static {
    /// Rings `from`'s phone, then `to`; returns the call id.
    fn originate(&self, from: E164, to: E164) -> BoxFuture<'static, Result<String, String>>;
}

/// Customer permissions and the abuse switch, provided by licensing.
pub trait Guard: Send + Sync + 'static {
    /// What the customer may dial.
    fn permissions(&self, customer_id: &str) -> DialPermissions;
    /// Blocks a key at once and records why in the audit log.
    fn block_key(&self, key_id: &str, reason: &str);
}

/// The click-to-call service behind `POST /api/v1/calls`.
pub struct ClickToCall {
    limiter: Limiter,
    guard: Arc<dyn Guard>,
    originator: Arc<dyn Originator>,
}

impl ClickToCall {
    /// New service.
    pub fn new(limits: RateLimits, guard: Arc<dyn Guard>, originator: Arc<dyn Originator>) -> Self {
        Self {
            limiter: Limiter::new(limits),
            guard,
            originator,
        }
    }
}

impl Dialer for ClickToCall {
    fn place(&self, scope: KeyScope, to: String) -> BoxFuture<'static, Result<String, ApiError>> {
        let checked = self.check(&scope, &to);
        let originator = self.originator.clone();
        Box::pin(async move {
            let dest = checked?;
            originator
                .originate(scope.number.clone(), dest)
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "telephony_failed",
                        format!("the call could not be placed: {e}"),
                    )
                })
        })
    }
}

impl ClickToCall {
    fn check(&self, scope: &KeyScope, to: &str) -> Result<E164, ApiError> {
        // Every attempt counts towards the burst rule, refused ones included.
        match self.limiter.check(&scope.key_id, &scope.customer_id) {
            Verdict::Allow => {}
            Verdict::Limited {
                scope: which,
                retry_after,
            } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many calls for this {which}; retry in {secs} s"),
                )
                .with_retry_after(secs));
            }
            Verdict::Block(reason) => {
                tracing::warn!(key = %scope.key_id, "{reason}: key blocked");
                self.guard.block_key(&scope.key_id, &reason);
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "key_blocked",
                    format!(
                        "this key was blocked ({reason}); ask your admin to review and unblock it"
                    ),
                ));
            }
        }
        let perms = self.guard.permissions(&scope.customer_id);
        policy::check(to, &perms).map_err(|r| {
            let code = match r {
                Refusal::Emergency(_) => "emergency_number",
                Refusal::Invalid(_) => "invalid_number",
                _ => "destination_blocked",
            };
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, r.to_string())
        })
    }
}
