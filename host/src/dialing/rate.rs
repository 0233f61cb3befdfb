//! Token buckets per key and per customer, the burst rule that auto-blocks
//! a key dialling abnormally fast, and daily call budgets (a key over its
//! budget is blocked; a customer over its budget dials no more that day).
//! Budgets count per host and reset at 00:00 UTC.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

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
#[derive(Default, Clone, Copy)]
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

/// A token bucket (also the webhook routes' budget, `api::business`).
pub(crate) struct Bucket {
    pub(crate) tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A bucket holding its whole burst.
    pub(crate) fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    /// Refills the bucket to `now`; returns how long until one token is
    /// available, `None` if one is.
    pub(crate) fn refill(&mut self, per_minute: f64, burst: f64, now: Instant) -> Option<Duration> {
        let rate = per_minute / 60.0;
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst);
        self.at = now;
        (self.tokens < 1.0)
            .then(|| Duration::from_secs_f64(((1.0 - self.tokens) / rate).max(0.001)))
    }
}

/// Everything the limiter keeps, under one lock.
#[derive(Default)]
struct State {
    attempts: HashMap<String, VecDeque<Instant>>,
    keys: HashMap<String, Bucket>,
    customers: HashMap<String, Bucket>,
    key_days: HashMap<String, Day>,
    customer_days: HashMap<String, Day>,
}

/// The entry of `id`, made with `new` when missing; the id is copied only
/// then.
fn entry<'a, T>(map: &'a mut HashMap<String, T>, id: &str, new: impl FnOnce() -> T) -> &'a mut T {
    if !map.contains_key(id) {
        map.insert(id.to_owned(), new());
    }
    map.get_mut(id).expect("inserted above")
}

/// Limits state for all keys and customers.
pub struct Limiter {
    limits: RateLimits,
    state: Mutex<State>,
}

impl Limiter {
    /// New limiter.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Records an attempt by `key` of `customer` and decides.
    pub fn check(&self, key: &str, customer: &str) -> Verdict {
        self.check_on(key, customer, Instant::now(), today())
    }

    #[cfg(test)]
    fn check_at(&self, key: &str, customer: &str, now: Instant) -> Verdict {
        self.check_on(key, customer, now, 20_000)
    }

    fn check_on(&self, key: &str, customer: &str, now: Instant, day: u64) -> Verdict {
        let l = &self.limits;
        let mut state = self.state.lock();
        let State {
            attempts,
            keys,
            customers,
            key_days,
            customer_days,
        } = &mut *state;
        let q = entry(attempts, key, VecDeque::new);
        q.push_back(now);
        let window = Duration::from_secs(l.block_window_secs);
        while q.front().is_some_and(|t| now.duration_since(*t) > window) {
            q.pop_front();
        }
        if l.block_after_attempts > 0 && q.len() >= l.block_after_attempts {
            q.clear();
            return Verdict::Block(format!(
                "burst rule: {} click-to-call attempts within {} s",
                l.block_after_attempts, l.block_window_secs
            ));
        }
        let k = entry(keys, key, || Bucket::full(l.per_key_burst, now));
        let key_wait = k.refill(l.per_key_per_minute, l.per_key_burst, now);
        let c = entry(customers, customer, || {
            Bucket::full(l.per_customer_burst, now)
        });
        let cust_wait = c.refill(l.per_customer_per_minute, l.per_customer_burst, now);
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
        let kd = entry(key_days, key, Day::default).on(day);
        if l.per_key_per_day > 0 && kd.calls >= l.per_key_per_day {
            kd.calls = 0;
            return Verdict::Block(format!(
                "daily budget: {} calls by one key today (dialing.per_key_per_day)",
                l.per_key_per_day
            ));
        }
        let cd = entry(customer_days, customer, Day::default).on(day);
        if l.per_customer_per_day > 0 && cd.calls >= l.per_customer_per_day {
            let first = !cd.refused;
            cd.refused = true;
            return Verdict::Exhausted {
                limit: l.per_customer_per_day,
                first,
            };
        }
        cd.calls += 1;
        entry(key_days, key, Day::default).calls += 1;
        k.tokens -= 1.0;
        c.tokens -= 1.0;
        Verdict::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bucket_limits_then_refills() {
        let lim = Limiter::new(RateLimits {
            per_key_per_minute: 60.0,
            per_key_burst: 2.0,
            ..Default::default()
        });
        let t0 = Instant::now();
        assert_eq!(lim.check_at("k", "c", t0), Verdict::Allow);
        assert_eq!(lim.check_at("k", "c", t0), Verdict::Allow);
        match lim.check_at("k", "c", t0) {
            Verdict::Limited {
                scope: "key",
                retry_after,
            } => assert!(retry_after <= Duration::from_secs(1)),
            v => panic!("{v:?}"),
        }
        assert_eq!(
            lim.check_at("k", "c", t0 + Duration::from_secs(1)),
            Verdict::Allow
        );
        // Another key of the same customer is unaffected.
        assert_eq!(lim.check_at("k2", "c", t0), Verdict::Allow);
    }

    #[test]
    fn customer_bucket_spans_keys() {
        let lim = Limiter::new(RateLimits {
            per_customer_burst: 2.0,
            ..Default::default()
        });
        let t0 = Instant::now();
        assert_eq!(lim.check_at("a", "c", t0), Verdict::Allow);
        assert_eq!(lim.check_at("b", "c", t0), Verdict::Allow);
        assert!(matches!(
            lim.check_at("d", "c", t0),
            Verdict::Limited {
                scope: "customer",
                ..
            }
        ));
    }

    #[test]
    fn daily_budgets_block_the_key_and_stop_the_customer_until_tomorrow() {
        let lim = Limiter::new(RateLimits {
            per_key_burst: 100.0,
            per_customer_burst: 100.0,
            per_key_per_day: 3,
            per_customer_per_day: 5,
            ..Default::default()
        });
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(lim.check_on("k1", "c", t0, 1), Verdict::Allow, "call {i}");
        }
        assert!(
            matches!(lim.check_on("k1", "c", t0, 1), Verdict::Block(ref r) if r.contains("daily budget: 3")),
        );
        assert_eq!(lim.check_on("k2", "c", t0, 1), Verdict::Allow);
        assert_eq!(lim.check_on("k2", "c", t0, 1), Verdict::Allow);
        assert_eq!(
            lim.check_on("k3", "c", t0, 1),
            Verdict::Exhausted {
                limit: 5,
                first: true
            }
        );
        assert_eq!(
            lim.check_on("k3", "c", t0, 1),
            Verdict::Exhausted {
                limit: 5,
                first: false
            }
        );
        assert_eq!(lim.check_on("k3", "other", t0, 1), Verdict::Allow);
        // A new day, a new budget.
        assert_eq!(lim.check_on("k3", "c", t0, 2), Verdict::Allow);
    }

    #[test]
    fn burst_rule_blocks() {
        let lim = Limiter::new(RateLimits {
            block_after_attempts: 5,
            block_window_secs: 10,
            ..Default::default()
        });
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..5).map(|_| lim.check_at("k", "c", t0)).collect();
        assert!(matches!(verdicts[4], Verdict::Block(_)), "{verdicts:?}");
    }
}
