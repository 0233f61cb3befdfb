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
    /// Blocks a key (or, for `installation:ID`, that installation's
    /// dialling) at once, records why in the audit log and tells the
    /// customer.
    fn block_key(&self, key_id: &str, reason: &str);
    /// Tells a customer something (portal notifications and the notify
    /// webhook).
    fn notify(&self, customer_id: &str, kind: &str, message: &str);
}

/// The click-to-call service behind `POST /api/v1/calls`.
pub struct ClickToCall {
    checks: Arc<Checks>,
    originator: Arc<dyn Originator>,
}

/// The limiter and the guard, shared with the calls in flight.
struct Checks {
    limiter: Limiter,
    guard: Arc<dyn Guard>,
}

impl ClickToCall {
    /// New service with its rate state in memory (one host).
    pub fn new(limits: RateLimits, guard: Arc<dyn Guard>, originator: Arc<dyn Originator>) -> Self {
        Self::with_limiter(Limiter::new(limits), guard, originator)
    }

    /// New service with `limiter` (whose state may be shared by hosts).
    pub fn with_limiter(
        limiter: Limiter,
        guard: Arc<dyn Guard>,
        originator: Arc<dyn Originator>,
    ) -> Self {
        Self {
            checks: Arc::new(Checks { limiter, guard }),
            originator,
        }
    }
}

impl Dialer for ClickToCall {
    fn place(&self, scope: KeyScope, to: String) -> BoxFuture<'static, Result<String, ApiError>> {
        let checks = self.checks.clone();
        let originator = self.originator.clone();
        Box::pin(async move {
            let dest = checks.check(&scope, &to).await?;
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

impl Checks {
    async fn check(&self, scope: &KeyScope, to: &str) -> Result<E164, ApiError> {
        // Every attempt counts towards the burst rule, refused ones included.
        let verdict = self
            .limiter
            .check(&scope.key_id, &scope.customer_id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "click-to-call rate state unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rate_state_unavailable",
                    "the call was not placed: its rate limits cannot be checked right now; retry in a few seconds",
                )
                .with_retry_after(2)
            })?;
        match verdict {
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
            Verdict::Exhausted { limit, first } => {
                let text = format!(
                    "the customer's daily budget of {limit} calls is used up; it resets at 00:00 UTC (an operator can raise dialing.per_customer_per_day)"
                );
                if first {
                    tracing::warn!(customer = %scope.customer_id, "{text}");
                    self.guard
                        .notify(&scope.customer_id, "dialing.budget_exhausted", &text);
                }
                let midnight = 86_400 - crate::call::now_ms() / 1000 % 86_400;
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "daily_budget_exhausted",
                    text,
                )
                .with_retry_after(midnight));
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

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Recorder {
        blocked: Mutex<Vec<(String, String)>>,
        told: Mutex<Vec<(String, String)>>,
    }

    impl Guard for Recorder {
        fn permissions(&self, _customer_id: &str) -> DialPermissions {
            DialPermissions::default()
        }
        fn block_key(&self, key_id: &str, reason: &str) {
            self.blocked.lock().push((key_id.into(), reason.into()));
        }
        fn notify(&self, customer_id: &str, kind: &str, _message: &str) {
            self.told.lock().push((customer_id.into(), kind.into()));
        }
    }

    struct Nowhere;

    impl Originator for Nowhere {
        fn originate(&self, _from: E164, _to: E164) -> BoxFuture<'static, Result<String, String>> {
            Box::pin(async { Ok("call-1".to_owned()) })
        }
    }

    fn scope(key: &str) -> KeyScope {
        KeyScope {
            key_id: key.into(),
            license_id: "lic_1".into(),
            customer_id: "cus_1".into(),
            installation_id: "ins_1".into(),
            number: E164::parse("+41 44 668 18 00").unwrap(),
        }
    }

    #[tokio::test]
    async fn plugin_placed_calls_draw_on_the_budgets_and_get_blocked_like_keys() {
        let guard = Arc::new(Recorder::default());
        let c2c = ClickToCall::new(
            RateLimits {
                per_key_burst: 100.0,
                per_customer_burst: 100.0,
                per_key_per_day: 2,
                per_customer_per_day: 3,
                ..Default::default()
            },
            guard.clone(),
            Arc::new(Nowhere),
        );
        let plugin = scope("installation:ins_1");
        for _ in 0..2 {
            c2c.place(plugin.clone(), "044 555 66 77".into())
                .await
                .unwrap();
        }
        let e = c2c
            .place(plugin.clone(), "044 555 66 77".into())
            .await
            .unwrap_err();
        assert_eq!(e.code, "key_blocked");
        assert_eq!(guard.blocked.lock()[0].0, "installation:ins_1");
        assert!(guard.blocked.lock()[0].1.contains("daily budget"));
        // The customer's budget spans keys and plugins; its end is told once.
        c2c.place(scope("key_a"), "044 555 66 77".into())
            .await
            .unwrap();
        for _ in 0..2 {
            let e = c2c
                .place(scope("key_b"), "044 555 66 77".into())
                .await
                .unwrap_err();
            assert_eq!(e.code, "daily_budget_exhausted");
            assert!(e.retry_after.is_some_and(|s| s <= 86_400));
        }
        assert_eq!(
            *guard.told.lock(),
            [("cus_1".to_owned(), "dialing.budget_exhausted".to_owned())]
        );
    }
}
