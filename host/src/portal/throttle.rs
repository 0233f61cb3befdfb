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
//! A source is the client's IP address as the listener saw it. The state is
//! in memory per host; behind a load balancer each host throttles what it
//! sees.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

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
/// Entries kept per map before expired ones are dropped.
const MAX_ENTRIES: usize = 100_000;

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

#[derive(Debug, Clone, Copy)]
struct Window {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            count: 0,
            since: now,
            locked_until: None,
        }
    }

    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }

    fn live(&self, now: Instant) -> bool {
        self.locked(now) || now.duration_since(self.since) < WINDOW
    }

    /// Counts a failure; locks for `lock` once `max` is reached.
    fn fail(&mut self, now: Instant, max: u32, lock: Duration) -> bool {
        if now.duration_since(self.since) >= WINDOW && !self.locked(now) {
            *self = Window::new(now);
        }
        self.count += 1;
        if max > 0 && self.count >= max {
            self.locked_until = Some(now + lock);
        }
        self.locked(now)
    }
}

#[derive(Default)]
struct State {
    pairs: HashMap<(String, String), Window>,
    sources: HashMap<String, Window>,
    emails: HashMap<String, Window>,
}

fn prune<K: Eq + std::hash::Hash>(m: &mut HashMap<K, Window>, now: Instant) {
    if m.len() > MAX_ENTRIES {
        m.retain(|_, w| w.live(now));
    }
}

/// The sign-in throttle of one host (cheap to clone).
#[derive(Clone, Default)]
pub struct Throttle(Arc<Mutex<State>>);

fn norm(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Throttle {
    /// Decides on an attempt from `source` for `email`.
    pub fn check(&self, source: &str, email: &str) -> Verdict {
        let now = Instant::now();
        let s = self.0.lock();
        if s.sources.get(source).is_some_and(|w| w.locked(now)) {
            return Verdict::SourceLocked;
        }
        let email = norm(email);
        if s.pairs
            .get(&(source.to_owned(), email.clone()))
            .is_some_and(|w| w.locked(now))
        {
            return Verdict::PairLocked;
        }
        let failures = s
            .emails
            .get(&email)
            .filter(|w| w.live(now))
            .map_or(0, |w| w.count);
        let extra = failures.saturating_sub(FREE_FAILURES);
        Verdict::Check((DELAY_STEP * extra).min(MAX_DELAY))
    }

    /// Records a failed attempt; the verdict the next attempt of this pair
    /// gets if it is now locked.
    pub fn failed(&self, source: &str, email: &str) -> Option<Verdict> {
        let now = Instant::now();
        let mut s = self.0.lock();
        let email = norm(email);
        prune(&mut s.pairs, now);
        prune(&mut s.sources, now);
        prune(&mut s.emails, now);
        s.emails
            .entry(email.clone())
            .or_insert_with(|| Window::new(now))
            .fail(now, 0, Duration::ZERO);
        let source_locked = s
            .sources
            .entry(source.to_owned())
            .or_insert_with(|| Window::new(now))
            .fail(now, SOURCE_FAILURES, SOURCE_LOCK);
        let pair_locked = s
            .pairs
            .entry((source.to_owned(), email))
            .or_insert_with(|| Window::new(now))
            .fail(now, PAIR_FAILURES, PAIR_LOCK);
        if source_locked {
            Some(Verdict::SourceLocked)
        } else if pair_locked {
            Some(Verdict::PairLocked)
        } else {
            None
        }
    }

    /// A successful sign-in clears that pair (the source's and the e-mail's
    /// counts stay: a success does not excuse failures on other accounts).
    pub fn succeeded(&self, source: &str, email: &str) {
        self.0
            .lock()
            .pairs
            .remove(&(source.to_owned(), norm(email)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_pair_leaves_the_owner_elsewhere_alone() {
        let t = Throttle::default();
        for i in 1..PAIR_FAILURES {
            assert_eq!(t.failed("10.0.0.9", "Op@x.ch"), None, "attempt {i}");
        }
        assert_eq!(t.failed("10.0.0.9", "op@x.ch"), Some(Verdict::PairLocked));
        assert_eq!(t.check("10.0.0.9", "OP@x.ch"), Verdict::PairLocked);
        // The owner at another address is checked, at most a short delay.
        match t.check("192.0.2.7", "op@x.ch") {
            Verdict::Check(d) => assert!(d <= MAX_DELAY),
            v => panic!("owner refused: {v:?}"),
        }
        // The attacker may still try other e-mails until the source limit.
        assert_eq!(
            t.check("10.0.0.9", "other@x.ch"),
            Verdict::Check(Duration::ZERO)
        );
    }

    #[test]
    fn spraying_locks_the_source_for_every_email() {
        let t = Throttle::default();
        let mut last = None;
        for i in 0..SOURCE_FAILURES {
            last = t.failed("10.0.0.9", &format!("user{i}@x.ch"));
        }
        assert_eq!(last, Some(Verdict::SourceLocked));
        assert_eq!(t.check("10.0.0.9", "fresh@x.ch"), Verdict::SourceLocked);
        assert_eq!(
            t.check("10.0.0.8", "fresh@x.ch"),
            Verdict::Check(Duration::ZERO)
        );
    }

    #[test]
    fn many_sources_on_one_email_only_slow_it_down() {
        let t = Throttle::default();
        for i in 0..40 {
            t.failed(&format!("10.0.1.{i}"), "boss@x.ch");
        }
        assert_eq!(t.check("192.0.2.7", "boss@x.ch"), Verdict::Check(MAX_DELAY));
        assert_eq!(
            t.check("192.0.2.7", "other@x.ch"),
            Verdict::Check(Duration::ZERO)
        );
        t.failed("10.0.2.1", "carol@x.ch");
        t.failed("10.0.2.1", "carol@x.ch");
        assert_eq!(
            t.check("10.0.2.2", "carol@x.ch"),
            Verdict::Check(Duration::ZERO)
        );
        for _ in 0..4 {
            t.failed("10.0.2.3", "carol@x.ch");
        }
        assert_eq!(
            t.check("10.0.2.2", "carol@x.ch"),
            Verdict::Check(DELAY_STEP)
        );
    }
}
