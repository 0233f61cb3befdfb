//! Token buckets per key and per customer, plus the burst rule that
//! auto-blocks a key dialling abnormally fast.

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
    /// The burst rule tripped: block the key for this reason.
    Block(String),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Limits state for all keys and customers.
pub struct Limiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
    attempts: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    /// New limiter.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Records an attempt by `key` of `customer` and decides.
    pub fn check(&self, key: &str, customer: &str) -> Verdict {
        self.check_at(key, customer, Instant::now())
    }

    fn check_at(&self, key: &str, customer: &str, now: Instant) -> Verdict {
        let l = &self.limits;
        {
            let mut attempts = self.attempts.lock();
            let q = attempts.entry(key.to_owned()).or_default();
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
        }
        let mut buckets = self.buckets.lock();
        let key_wait = peek(
            &mut buckets,
            &format!("k:{key}"),
            l.per_key_per_minute,
            l.per_key_burst,
            now,
        );
        let cust_wait = peek(
            &mut buckets,
            &format!("c:{customer}"),
            l.per_customer_per_minute,
            l.per_customer_burst,
            now,
        );
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
        for id in [format!("k:{key}"), format!("c:{customer}")] {
            if let Some(b) = buckets.get_mut(&id) {
                b.tokens -= 1.0;
            }
        }
        Verdict::Allow
    }
}

/// Refills a bucket and returns how long until one token is available.
fn peek(
    buckets: &mut HashMap<String, Bucket>,
    id: &str,
    per_minute: f64,
    burst: f64,
    now: Instant,
) -> Option<Duration> {
    let rate = per_minute / 60.0;
    let b = buckets.entry(id.to_owned()).or_insert(Bucket {
        tokens: burst,
        at: now,
    });
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
    b.at = now;
    if b.tokens >= 1.0 {
        None
    } else {
        Some(Duration::from_secs_f64(
            ((1.0 - b.tokens) / rate).max(0.001),
        ))
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
