//! Token buckets per key and per customer, the burst rule that auto-blocks
//! a key dialling abnormally fast, and daily call budgets (a key over its
//! budget is blocked; a customer over its budget dials no more that day).
//! Budgets reset at 00:00 UTC. On PostgreSQL every host counts into the
//! same state.

use std::collections::VecDeque;
use std::time::Duration;

use crate::store::shared::Shared;

/// Rate-limit settings (operator-configurable).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RateLimits {
    /// Calls per minute a key may place on average.
    pub per_key_per_minute: f64,
    /// Calls a key may place at once.
    pub per_key_burst: f64,
    /// Calls per minute a customer may place on average.
    pub per_customer_per_minute: f64,
    /// Calls a customer may place at once.
    pub per_customer_burst: f64,
    /// Burst rule: this many attempts by one key ...
    pub block_after_attempts: usize,
    /// ... within this many seconds auto-block the key.
    pub block_window_secs: u64,
    /// Calls one key (or one plugin installation) may place per UTC day;
    /// the next attempt blocks it (0: no budget).
    pub per_key_per_day: u32,
    /// Calls one customer may place per UTC day; further attempts are
    /// refused until the next day (0: no budget).
    pub per_customer_per_day: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_key_per_minute: 10.0,
            per_key_burst: 5.0,
            per_customer_per_minute: 120.0,
            per_customer_burst: 30.0,
            block_after_attempts: 60,
            block_window_secs: 60,
            per_key_per_day: 200,
            per_customer_per_day: 2_000,
        }
    }
}

/// The outcome of asking for one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Too fast: retry after this long.
    Limited {
        /// Which limit.
        scope: &'static str,
        /// When a token is available.
        retry_after: Duration,
    },
    /// The burst rule or the key's daily budget tripped: block the key for
    /// this reason.
    Block(String),
    /// The customer's daily budget is used up.
    Exhausted {
        /// The budget.
        limit: u32,
        /// Whether this is the first refusal today (tell the customer).
        first: bool,
    },
}

/// Calls counted on one UTC day.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Day {
    day: u64,
    calls: u32,
    refused: bool,
}

impl Day {
    fn on(&mut self, day: u64) -> &mut Self {
        if self.day != day {
            *self = Day {
                day,
                ..Day::default()
            };
        }
        self
    }
}

/// Today's number since the Unix epoch (UTC).
fn today() -> u64 {
    crate::call::now_ms() / 86_400_000
}

/// A token bucket (also the webhook routes' budget, `api::business`), on
/// the wall clock so hosts can share it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Bucket {
    pub(crate) tokens: f64,
    at_ms: i64,
}

impl Bucket {
    /// A bucket holding its whole burst.
    pub(crate) fn full(burst: f64, now_ms: i64) -> Self {
        Self {
            tokens: burst,
            at_ms: now_ms,
        }
    }

    /// Refills the bucket to `now_ms`; returns how long until one token is
    /// available, `None` if one is.
    pub(crate) fn refill(&mut self, per_minute: f64, burst: f64, now_ms: i64) -> Option<Duration> {
        let rate = per_minute / 60.0;
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at_ms = self.at_ms.max(now_ms);
        (self.tokens < 1.0)
            .then(|| Duration::from_secs_f64(((1.0 - self.tokens) / rate).max(0.001)))
    }
}

/// What the limiter keeps per key and per customer (a customer has no
/// attempts: the burst rule is per key).
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Dial {
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    attempts: VecDeque<i64>,
    bucket: Option<Bucket>,
    day: Day,
}

/// How long a key's or customer's state outlives its last attempt: the
/// daily budget spans a day.
const STATE_TTL: Duration = Duration::from_secs(26 * 3600);

/// Limits state for all keys and customers: in memory on one host, shared
/// by every host of a PostgreSQL database ([`Shared`]), so a key or
/// customer has one bucket, one burst count and one budget however many
/// hosts its calls reach.
pub struct Limiter {
    limits: RateLimits,
    state: Shared,
}

impl Limiter {
    /// New limiter with its state in memory.
    pub fn new(limits: RateLimits) -> Self {
        Self::with_state(limits, Shared::memory())
    }

    /// New limiter on `state`.
    pub fn with_state(limits: RateLimits, state: Shared) -> Self {
        Self { limits, state }
    }

    /// Records an attempt by `key` of `customer` and decides.
    pub async fn check(&self, key: &str, customer: &str) -> anyhow::Result<Verdict> {
        self.check_on(key, customer, crate::call::now_ms() as i64, today())
            .await
    }

    async fn check_on(
        &self,
        key: &str,
        customer: &str,
        now: i64,
        day: u64,
    ) -> anyhow::Result<Verdict> {
        let ids = [
            format!("dial:key:{key}"),
            format!("dial:customer:{customer}"),
        ];
        let l = &self.limits;
        self.state
            .update(&[&ids[0], &ids[1]], STATE_TTL, |v: &mut [Dial]| {
                let (k, c) = v.split_at_mut(1);
                decide(l, &mut k[0], &mut c[0], now, day)
            })
            .await
    }
}

/// The decision on one attempt by key state `k` of customer state `c`.
fn decide(l: &RateLimits, k: &mut Dial, c: &mut Dial, now: i64, day: u64) -> Verdict {
    let q = &mut k.attempts;
    q.push_back(now);
    let window = l.block_window_secs as i64 * 1000;
    while q.front().is_some_and(|t| now - *t > window) {
        q.pop_front();
    }
    if l.block_after_attempts > 0 && q.len() >= l.block_after_attempts {
        q.clear();
        return Verdict::Block(format!(
            "burst rule: {} click-to-call attempts within {} s",
            l.block_after_attempts, l.block_window_secs
        ));
    }
    let kb = k
        .bucket
        .get_or_insert_with(|| Bucket::full(l.per_key_burst, now));
    let key_wait = kb.refill(l.per_key_per_minute, l.per_key_burst, now);
    let cb = c
        .bucket
        .get_or_insert_with(|| Bucket::full(l.per_customer_burst, now));
    let cust_wait = cb.refill(l.per_customer_per_minute, l.per_customer_burst, now);
    if let Some(w) = key_wait {
        return Verdict::Limited {
            scope: "key",
            retry_after: w,
        };
    }
    if let Some(w) = cust_wait {
        return Verdict::Limited {
            scope: "customer",
            retry_after: w,
        };
    }
    let kd = k.day.on(day);
    if l.per_key_per_day > 0 && kd.calls >= l.per_key_per_day {
        kd.calls = 0;
        return Verdict::Block(format!(
            "daily budget: {} calls by one key today (dialing.per_key_per_day)",
            l.per_key_per_day
        ));
    }
    let cd = c.day.on(day);
    if l.per_customer_per_day > 0 && cd.calls >= l.per_customer_per_day {
        let first = !cd.refused;
        cd.refused = true;
        return Verdict::Exhausted {
            limit: l.per_customer_per_day,
            first,
        };
    }
    cd.calls += 1;
    k.day.calls += 1;
    if let Some(b) = &mut k.bucket {
        b.tokens -= 1.0;
    }
    if let Some(b) = &mut c.bucket {
        b.tokens -= 1.0;
    }
    Verdict::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_bucket_limits_then_refills() {
        let lim = Limiter::new(RateLimits {
            per_key_per_minute: 60.0,
            per_key_burst: 2.0,
            ..Default::default()
        });
        let t0 = 1_700_000_000_000;
        assert_eq!(
            lim.check_on("k", "c", t0, 20_000).await.unwrap(),
            Verdict::Allow
        );
        assert_eq!(
            lim.check_on("k", "c", t0, 20_000).await.unwrap(),
            Verdict::Allow
        );
        match lim.check_on("k", "c", t0, 20_000).await.unwrap() {
            Verdict::Limited {
                scope: "key",
                retry_after,
            } => assert!(retry_after <= Duration::from_secs(1)),
            v => panic!("{v:?}"),
        }
        assert_eq!(
            lim.check_on("k", "c", t0 + 1000, 20_000).await.unwrap(),
            Verdict::Allow
        );
        // Another key of the same customer is unaffected.
        assert_eq!(
            lim.check_on("k2", "c", t0, 20_000).await.unwrap(),
            Verdict::Allow
        );
    }

    #[tokio::test]
    async fn customer_bucket_spans_keys() {
        let lim = Limiter::new(RateLimits {
            per_customer_burst: 2.0,
            ..Default::default()
        });
        let t0 = 1_700_000_000_000;
        assert_eq!(
            lim.check_on("a", "c", t0, 20_000).await.unwrap(),
            Verdict::Allow
        );
        assert_eq!(
            lim.check_on("b", "c", t0, 20_000).await.unwrap(),
            Verdict::Allow
        );
        assert!(matches!(
            lim.check_on("d", "c", t0, 20_000).await.unwrap(),
            Verdict::Limited {
                scope: "customer",
                ..
            }
        ));
    }

    #[tokio::test]
    async fn daily_budgets_block_the_key_and_stop_the_customer_until_tomorrow() {
        let lim = Limiter::new(RateLimits {
            per_key_burst: 100.0,
            per_customer_burst: 100.0,
            per_key_per_day: 3,
            per_customer_per_day: 5,
            ..Default::default()
        });
        let t0 = 1_700_000_000_000;
        for i in 0..3 {
            assert_eq!(
                lim.check_on("k1", "c", t0, 1).await.unwrap(),
                Verdict::Allow,
                "call {i}"
            );
        }
        assert!(
            matches!(lim.check_on("k1", "c", t0, 1).await.unwrap(), Verdict::Block(ref r) if r.contains("daily budget: 3")),
        );
        assert_eq!(
            lim.check_on("k2", "c", t0, 1).await.unwrap(),
            Verdict::Allow
        );
        assert_eq!(
            lim.check_on("k2", "c", t0, 1).await.unwrap(),
            Verdict::Allow
        );
        assert_eq!(
            lim.check_on("k3", "c", t0, 1).await.unwrap(),
            Verdict::Exhausted {
                limit: 5,
                first: true
            }
        );
        assert_eq!(
            lim.check_on("k3", "c", t0, 1).await.unwrap(),
            Verdict::Exhausted {
                limit: 5,
                first: false
            }
        );
        assert_eq!(
            lim.check_on("k3", "other", t0, 1).await.unwrap(),
            Verdict::Allow
        );
        // A new day, a new budget.
        assert_eq!(
            lim.check_on("k3", "c", t0, 2).await.unwrap(),
            Verdict::Allow
        );
    }

    #[tokio::test]
    async fn burst_rule_blocks() {
        let lim = Limiter::new(RateLimits {
            block_after_attempts: 5,
            block_window_secs: 10,
            ..Default::default()
        });
        let t0 = 1_700_000_000_000;
        let mut verdicts = Vec::new();
        for _ in 0..5 {
            verdicts.push(lim.check_on("k", "c", t0, 20_000).await.unwrap());
        }
        assert!(matches!(verdicts[4], Verdict::Block(_)), "{verdicts:?}");
    }
}
