//! Sign-in throttling that slows an attacker without locking out the owner.
//!
//! Three counters of failed sign-ins, each over a sliding 15-minute window:
//! - per (source, e-mail): after [`PAIR_FAILURES`] that source is locked for
//!   that e-mail for [`PAIR_LOCK`] — the owner signing in from anywhere else
//!   is not affected;
//! - per source: after [`SOURCE_FAILURES`] (password spraying over many
//!   e-mails) the source is locked for every e-mail for [`SOURCE_LOCK`];
//! - per e-mail over all sources: never a lock-out, only a delay before the
//!   password is checked, growing with the failures up to [`MAX_DELAY`], so
//!   many sources guessing one account are slowed and the owner still gets
//!   in.
//!
//! A source is the client's IP address as the listener saw it. On
//! PostgreSQL the counters are shared by every host ([`Shared`]).

use std::time::Duration;

use crate::store::shared::Shared;

/// Failed sign-ins of one source for one e-mail before that pair is locked.
pub const PAIR_FAILURES: u32 = 5;
/// How long a (source, e-mail) pair stays locked.
pub const PAIR_LOCK: Duration = Duration::from_secs(5 * 60);
/// Failed sign-ins of one source (any e-mail) before the source is locked.
pub const SOURCE_FAILURES: u32 = 20;
/// How long a source stays locked.
pub const SOURCE_LOCK: Duration = Duration::from_secs(15 * 60);
/// Failures of one e-mail (all sources) checked without delay.
pub const FREE_FAILURES: u32 = 5;
/// Delay added per failure of an e-mail beyond [`FREE_FAILURES`].
pub const DELAY_STEP: Duration = Duration::from_millis(250);
/// Longest delay before a password is checked.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// The window the counters cover.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// What to do with a sign-in attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Check the password after waiting this long.
    Check(Duration),
    /// This source is locked for this e-mail.
    PairLocked,
    /// This source is locked for every e-mail.
    SourceLocked,
}

/// Failures of one counter within its window (times in Unix ms, so every
/// host reads them alike).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Window {
    count: u32,
    since_ms: i64,
    locked_until_ms: Option<i64>,
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl Window {
    fn locked(&self, now: i64) -> bool {
        self.locked_until_ms.is_some_and(|t| t > now)
    }

    fn live(&self, now: i64) -> bool {
        self.locked(now) || now - self.since_ms < ms(WINDOW)
    }

    /// Counts a failure; locks for `lock` once `max` is reached.
    fn fail(&mut self, now: i64, max: u32, lock: Duration) -> bool {
        if (self.count == 0 || now - self.since_ms >= ms(WINDOW)) && !self.locked(now) {
            *self = Window {
                count: 0,
                since_ms: now,
                locked_until_ms: None,
            };
        }
        self.count += 1;
        if max > 0 && self.count >= max {
            self.locked_until_ms = Some(now + ms(lock));
        }
        self.locked(now)
    }
}

/// The sign-in throttle (cheap to clone): in memory on one host, shared by
/// every host of a PostgreSQL database, so a locked source or pair is
/// locked behind any load balancer.
#[derive(Clone)]
pub struct Throttle(Shared);

impl Default for Throttle {
    fn default() -> Self {
        Self(Shared::memory())
    }
}

fn norm(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The keys of the three counters: (source, e-mail), source, e-mail.
fn keys(source: &str, email: &str) -> [String; 3] {
    let email = norm(email);
    [
        format!("signin:pair:{source} {email}"),
        format!("signin:source:{source}"),
        format!("signin:email:{email}"),
    ]
}

/// How long counters are kept after a failure: the window, or the longest
/// lock.
const KEEP: Duration = if SOURCE_LOCK.as_secs() > WINDOW.as_secs() {
    SOURCE_LOCK
} else {
    WINDOW
};

impl Throttle {
    /// A throttle on `state`.
    pub fn new(state: Shared) -> Self {
        Self(state)
    }

    fn now() -> i64 {
        crate::call::now_ms() as i64
    }

    /// Decides on an attempt from `source` for `email`. Fails closed (a
    /// short refusal) when the shared counters cannot be read.
    pub async fn check(&self, source: &str, email: &str) -> Verdict {
        let now = Self::now();
        let k = keys(source, email);
        let w: Vec<Window> = match self.0.read(&[&k[0], &k[1], &k[2]]).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the sign-in counters; refusing for now");
                return Verdict::PairLocked;
            }
        };
        if w[1].locked(now) {
            return Verdict::SourceLocked;
        }
        if w[0].locked(now) {
            return Verdict::PairLocked;
        }
        let failures = if w[2].live(now) { w[2].count } else { 0 };
        let extra = failures.saturating_sub(FREE_FAILURES);
        Verdict::Check((DELAY_STEP * extra).min(MAX_DELAY))
    }

    /// Records a failed attempt; the verdict the next attempt of this pair
    /// gets if it is now locked.
    pub async fn failed(&self, source: &str, email: &str) -> Option<Verdict> {
        let now = Self::now();
        let k = keys(source, email);
        let r = self
            .0
            .update(&[&k[0], &k[1], &k[2]], KEEP, |w: &mut [Window]| {
                w[2].fail(now, 0, Duration::ZERO);
                let source_locked = w[1].fail(now, SOURCE_FAILURES, SOURCE_LOCK);
                let pair_locked = w[0].fail(now, PAIR_FAILURES, PAIR_LOCK);
                (source_locked, pair_locked)
            })
            .await;
        match r {
            Ok((true, _)) => Some(Verdict::SourceLocked),
            Ok((_, true)) => Some(Verdict::PairLocked),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count a failed sign-in");
                None
            }
        }
    }

    /// A successful sign-in clears that pair (the source's and the e-mail's
    /// counts stay: a success does not excuse failures on other accounts).
    pub async fn succeeded(&self, source: &str, email: &str) {
        if let Err(e) = self.0.remove(&keys(source, email)[0]).await {
            tracing::warn!(error = %e, "cannot clear the sign-in counter");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_locked_pair_leaves_the_owner_elsewhere_alone() {
        let t = Throttle::default();
        for i in 1..PAIR_FAILURES {
            assert_eq!(t.failed("10.0.0.9", "Op@x.ch").await, None, "attempt {i}");
        }
        assert_eq!(
            t.failed("10.0.0.9", "op@x.ch").await,
            Some(Verdict::PairLocked)
        );
        assert_eq!(t.check("10.0.0.9", "OP@x.ch").await, Verdict::PairLocked);
        // The owner at another address is checked, at most a short delay.
        match t.check("192.0.2.7", "op@x.ch").await {
            Verdict::Check(d) => assert!(d <= MAX_DELAY),
            v => panic!("owner refused: {v:?}"),
        }
        // The attacker may still try other e-mails until the source limit.
        assert_eq!(
            t.check("10.0.0.9", "other@x.ch").await,
            Verdict::Check(Duration::ZERO)
        );
    }

    #[tokio::test]
    async fn spraying_locks_the_source_for_every_email() {
        let t = Throttle::default();
        let mut last = None;
        for i in 0..SOURCE_FAILURES {
            last = t.failed("10.0.0.9", &format!("user{i}@x.ch")).await;
        }
        assert_eq!(last, Some(Verdict::SourceLocked));
        assert_eq!(
            t.check("10.0.0.9", "fresh@x.ch").await,
            Verdict::SourceLocked
        );
        assert_eq!(
            t.check("10.0.0.8", "fresh@x.ch").await,
            Verdict::Check(Duration::ZERO)
        );
    }

    #[tokio::test]
    async fn many_sources_on_one_email_only_slow_it_down() {
        let t = Throttle::default();
        for i in 0..40 {
            t.failed(&format!("10.0.1.{i}"), "boss@x.ch").await;
        }
        assert_eq!(
            t.check("192.0.2.7", "boss@x.ch").await,
            Verdict::Check(MAX_DELAY)
        );
        assert_eq!(
            t.check("192.0.2.7", "other@x.ch").await,
            Verdict::Check(Duration::ZERO)
        );
        t.failed("10.0.2.1", "carol@x.ch").await;
        t.failed("10.0.2.1", "carol@x.ch").await;
        assert_eq!(
            t.check("10.0.2.2", "carol@x.ch").await,
            Verdict::Check(Duration::ZERO)
        );
        for _ in 0..4 {
            t.failed("10.0.2.3", "carol@x.ch").await;
        }
        assert_eq!(
            t.check("10.0.2.2", "carol@x.ch").await,
            Verdict::Check(DELAY_STEP)
        );
    }
}
