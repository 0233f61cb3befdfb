//! The call pipeline: telephony events → licensed targets → durable outbox →
//! per-installation dispatch to connector plugins, with retries, dead
//! letters, contact lookup and the live stream for SSE listeners.

mod fanout;
pub use fanout::Screen;
pub mod metrics;
pub mod outbox;
pub mod routing;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::call::{CallEvent, CallState, Contact, Direction};
use crate::number::E164;
use crate::plugins::{Delivery, Installation, InvokeError, PluginRuntime};
use metrics::Metrics;
pub use outbox::{DeliveryRow, DeliveryStatus, NewDelivery, Outbox, StoredEvent};

/// Where events of a number go; implemented by licensing.
pub trait Routing: Send + Sync + 'static {
    /// Active licenses of `number` (assigned key, customer not blocked,
    /// consent in force, not cancelled).
    fn targets(&self, number: &E164) -> Vec<Target>;
    /// The active target of an installation, if it still has one.
    fn installation(&self, installation_id: &str) -> Option<Target>;
    /// The customer owning `number`, if any (to spot internal calls).
    fn customer_of(&self, number: &E164) -> Option<String>;
}

/// One active license: the installation an event is delivered to.
#[derive(Debug, Clone)]
pub struct Target {
    /// License id.
    pub license_id: String,
    /// Customer id.
    pub customer_id: String,
    /// The installation with its config and grants.
    pub installation: Arc<Installation>,
    /// Whether internal calls are delivered to this installation.
    pub deliver_internal: bool,
    /// Whether the installation's plugin resolves contacts.
    pub lookup: bool,
}

/// Tunables of delivery.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub base_backoff: Duration,
    /// Upper bound of a retry delay (a longer Retry-After still wins).
    pub max_backoff: Duration,
    /// Parallel lanes per installation; events of one call share a lane.
    pub lanes: usize,
    /// How long a ringing event waits for contact lookup.
    pub lookup_timeout: Duration,
    /// How long a delivery stays this host's without renewal (renewed
    /// every third of it); a dead host's deliveries are taken over by the
    /// others after at most this.
    pub lease: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            lanes: 4,
            lookup_timeout: Duration::from_millis(1500),
            lease: outbox::DEFAULT_LEASE,
        }
    }
}

type Ack = oneshot::Sender<anyhow::Result<i64>>;
type ContactFuture = Shared<BoxFuture<'static, Option<Contact>>>;
/// One attempt's outcome: delivery id, status, attempts, last error.
type Outcome = (i64, DeliveryStatus, i32, Option<String>);

/// What the outcome recorder receives.
enum Completion {
    /// Record this outcome with the next batch.
    Outcome(Outcome),
    /// Write everything received so far now, then answer.
    Flush(oneshot::Sender<()>),
}

/// How long outcomes gather before they are written. One transaction per
/// window instead of one per burst of deliveries keeps SQLite's single
/// write turn free for the appends events wait on. A crash loses at most
/// this window's outcomes: those deliveries are made again, with the same
/// idempotency key (at-least-once).
const RECORD_WINDOW: Duration = Duration::from_millis(50);

struct Inner {
    outbox: Outbox,
    plugins: PluginRuntime,
    routing: Arc<dyn Routing>,
    settings: Settings,
    ingest: mpsc::Sender<(CallEvent, Option<Ack>)>,
    live: broadcast::Sender<Arc<StoredEvent>>,
    /// Calls plugins pushed to their installations' screens.
    screens: broadcast::Sender<Arc<Screen>>,
    /// Tells the other hosts which events reached this host's live stream.
    announcer: fanout::Announcer,
    lanes: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Job>>>>,
    completions: mpsc::UnboundedSender<Completion>,
    contacts: Mutex<HashMap<String, ContactFuture>>,
    in_flight: AtomicUsize,
    /// Deliveries this host is working on (so a takeover never queues one
    /// twice here).
    working: Mutex<std::collections::HashSet<i64>>,
    /// Whether this host still renews its leases (see [`Pipeline::release`]).
    leasing: std::sync::atomic::AtomicBool,
    metrics: Metrics,
}

struct Job {
    row: DeliveryRow,
    event: Arc<StoredEvent>,
}

/// Handle to the running pipeline (cheap to clone).
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

impl Pipeline {
    /// Starts the pipeline and re-queues every delivery left pending by a
    /// previous run (crash recovery).
    pub async fn start(
        outbox: Outbox,
        plugins: PluginRuntime,
        routing: Arc<dyn Routing>,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let (ingest_tx, ingest_rx) = mpsc::channel(10_000);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (live, _) = broadcast::channel(4096);
        let (screens, _) = broadcast::channel(1024);
        let announcer = fanout::Announcer::start(&outbox);
        fanout::follow(outbox.clone(), live.clone(), screens.clone());
        let p = Pipeline {
            inner: Arc::new(Inner {
                outbox,
                plugins,
                routing,
                settings,
                ingest: ingest_tx,
                live,
                screens,
                announcer,
                lanes: Mutex::new(HashMap::new()),
                completions: done_tx,
                contacts: Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
                working: Mutex::default(),
                leasing: std::sync::atomic::AtomicBool::new(true),
                metrics: Metrics::default(),
            }),
        };
        p.inner.outbox.set_lease(p.inner.settings.lease);
        tokio::spawn(p.clone().ingest_loop(ingest_rx));
        tokio::spawn(record_loop(p.inner.outbox.clone(), done_rx, RECORD_WINDOW));
        // Crash recovery. SQLite has one host: everything pending is a
        // previous run's. On PostgreSQL only deliveries whose lease ran
        // out are taken now (others are another live host's); the rest
        // follow as their leases expire (see `keep_leases`).
        let before = if p.inner.outbox.backend() == crate::store::Backend::Sqlite {
            i64::MAX
        } else {
            crate::call::now_ms() as i64
        };
        let taken = p.take_over(before, true).await?;
        if taken > 0 {
            tracing::info!(
                count = taken,
                "re-queued deliveries left pending by a previous run"
            );
        }
        tokio::spawn(p.clone().keep_leases());
        Ok(p)
    }

    /// Stops renewing and taking over leases and hands this host's pending
    /// deliveries to the other hosts at once (their next lease check picks
    /// them up): the end of a host that stops, after [`Pipeline::drain`].
    pub async fn release(&self) -> anyhow::Result<u64> {
        self.inner.leasing.store(false, Ordering::SeqCst);
        self.inner.outbox.release().await
    }

    /// Claims pending deliveries whose lease ran out before `before_ms`
    /// and queues them; how many.
    async fn take_over(&self, before_ms: i64, own: bool) -> anyhow::Result<usize> {
        let mut total = 0;
        let mut events: HashMap<i64, Arc<StoredEvent>> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        loop {
            let rows = if own {
                // At start, in one pass (own rows stay claimable, so they
                // cannot be paged by a limit), as recovery always did.
                self.inner
                    .outbox
                    .claim_own_and_expired(before_ms, i64::MAX)
                    .await?
            } else {
                self.inner.outbox.claim_expired(before_ms, 1000).await?
            };
            let n = rows.len();
            let rows: Vec<DeliveryRow> = rows.into_iter().filter(|r| seen.insert(r.id)).collect();
            let fresh = rows.len();
            for row in rows {
                if self.inner.working.lock().contains(&row.id) {
                    continue;
                }
                let event = match events.get(&row.event_seq) {
                    Some(e) => e.clone(),
                    None => match self.inner.outbox.event(row.event_seq).await? {
                        Some(e) => {
                            let e = Arc::new(e);
                            events.insert(row.event_seq, e.clone());
                            e
                        }
                        None => continue,
                    },
                };
                total += 1;
                self.enqueue(Job { row, event });
            }
            if own || n < 1000 || fresh == 0 {
                return Ok(total);
            }
        }
    }

    /// Renews this host's leases every third of the lease, and takes over
    /// the deliveries of hosts that stopped renewing theirs.
    async fn keep_leases(self) {
        let lease = self.inner.settings.lease;
        let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.inner.leasing.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = self.inner.outbox.renew().await {
                tracing::warn!(error = %e, "could not renew delivery leases; retrying");
                continue;
            }
            match self.take_over(crate::call::now_ms() as i64, false).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    count = n,
                    "took over deliveries of a host that stopped renewing its leases"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "could not take over expired deliveries; retrying")
                }
            }
        }
    }

    /// Sender for telephony providers: events are stored, then dispatched.
    pub fn events(&self) -> mpsc::Sender<CallEvent> {
        let (tx, mut rx) = mpsc::channel::<CallEvent>(10_000);
        let ingest = self.inner.ingest.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if ingest.send((ev, None)).await.is_err() {
                    break;
                }
            }
        });
        tx
    }

    /// Accepts one event and returns its sequence number once it and its
    /// deliveries are durably stored.
    pub async fn submit(&self, event: CallEvent) -> anyhow::Result<i64> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ingest
            .send((event, Some(tx)))
            .await
            .map_err(|_| anyhow::anyhow!("the pipeline is shutting down"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the pipeline is shutting down"))?
    }

    /// Live events (after storage) for SSE listeners.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.inner.live.subscribe()
    }

    /// Shows `event` to the live listeners of `installation_id` on every
    /// host (a plugin's push-to-screen); not stored, not delivered.
    pub fn push_to_screen(&self, installation_id: &str, event: CallEvent) {
        let screen = Screen {
            installation_id: installation_id.to_owned(),
            event,
        };
        let _ = self.inner.screens.send(Arc::new(screen.clone()));
        self.inner.announcer.announce_screen(screen);
    }

    /// Screen pushes for SSE listeners.
    pub fn screens(&self) -> broadcast::Receiver<Arc<Screen>> {
        self.inner.screens.subscribe()
    }

    /// The outbox, for queries.
    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// Per-installation delivery metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Re-drives a dead letter; `false` if it is not dead (or unknown).
    pub async fn redrive(&self, delivery_id: i64) -> anyhow::Result<bool> {
        if !self.inner.outbox.redrive(delivery_id).await? {
            return Ok(false);
        }
        let Some(row) = self.inner.outbox.delivery(delivery_id).await? else {
            return Ok(false);
        };
        let Some(event) = self.inner.outbox.event(row.event_seq).await? else {
            return Ok(false);
        };
        self.enqueue(Job {
            row,
            event: Arc::new(event),
        });
        Ok(true)
    }

    /// Purges call events (personal data) older than `days`, now and then
    /// every hour, for as long as the pipeline runs.
    pub fn spawn_retention(&self, days: u32) {
        let outbox = self.inner.outbox.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let cutoff = crate::call::now_ms() as i64 - i64::from(days) * 86_400_000;
                match outbox.purge_before(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, days, "purged call events past retention"),
                    Err(e) => {
                        tracing::warn!(error = %e, "retention purge failed; will retry in an hour")
                    }
                }
            }
        });
    }

    /// Waits until no delivery is in flight, at most `deadline`; returns how
    /// many were still running.
    pub async fn drain(&self, deadline: Duration) -> usize {
        let until = Instant::now() + deadline;
        loop {
            let n = self.inner.in_flight.load(Ordering::SeqCst);
            if n == 0 || Instant::now() >= until {
                // Outcomes of the last deliveries are written before we return.
                let (tx, rx) = oneshot::channel();
                if self.inner.completions.send(Completion::Flush(tx)).is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
                }
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn ingest_loop(self, mut rx: mpsc::Receiver<(CallEvent, Option<Ack>)>) {
        let mut batch = Vec::with_capacity(512);
        while rx.recv_many(&mut batch, 512).await > 0 {
            let routed: Vec<(CallEvent, Vec<NewDelivery>)> = batch
                .iter()
                .map(|(ev, _)| (ev.clone(), self.route(ev)))
                .collect();
            let stored = self.inner.outbox.append(&routed).await;
            match stored {
                Ok(results) => {
                    for (((event, targets), (_, ack)), (seq, rows)) in
                        routed.into_iter().zip(batch.drain(..)).zip(results)
                    {
                        if let Some(ack) = ack {
                            let _ = ack.send(Ok(seq));
                        }
                        // A duplicate is already delivered or pending.
                        if let Some(rows) = rows {
                            self.accepted(seq, event, targets, rows);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store call events; they are refused");
                    for (_, ack) in batch.drain(..) {
                        if let Some(ack) = ack {
                            let _ = ack.send(Err(anyhow::anyhow!("cannot store the event: {e}")));
                        }
                    }
                }
            }
        }
    }

    fn route(&self, ev: &CallEvent) -> Vec<NewDelivery> {
        let internal = ev.direction == Direction::Internal || self.is_internal(ev);
        self.inner
            .routing
            .targets(&ev.monitored)
            .into_iter()
            .filter(|t| !internal || t.deliver_internal)
            .map(|t| NewDelivery {
                installation_id: t.installation.id.clone(),
                license_id: t.license_id,
                customer_id: t.customer_id,
            })
            .collect()
    }

    fn is_internal(&self, ev: &CallEvent) -> bool {
        let Some(caller) = &ev.caller else {
            return false;
        };
        let r = &self.inner.routing;
        match (r.customer_of(caller), r.customer_of(&ev.callee)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    fn accepted(
        &self,
        seq: i64,
        event: CallEvent,
        _targets: Vec<NewDelivery>,
        rows: Vec<DeliveryRow>,
    ) {
        let contact = if event.state == CallState::Ringing {
            self.start_lookup(&event)
        } else {
            self.inner.contacts.lock().get(&event.call_id).cloned()
        };
        if event.state.is_final() {
            // Later events of this call reuse the contact through the stored event.
            self.inner.contacts.lock().remove(&event.call_id);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let contact = match contact {
                Some(f) => tokio::time::timeout(this.inner.settings.lookup_timeout, f)
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            if let Some(c) = &contact
                && let Err(e) = this.inner.outbox.set_contact(seq, c).await
            {
                tracing::warn!(error = %e, "cannot store the resolved contact");
            }
            let stored = Arc::new(StoredEvent {
                seq,
                event,
                contact,
            });
            let _ = this.inner.live.send(stored.clone());
            this.inner.announcer.announce(seq);
            for row in rows {
                this.enqueue(Job {
                    row,
                    event: stored.clone(),
                });
            }
        });
    }

    /// Starts one contact lookup per call across the number's lookup-capable
    /// installations; the first name found wins.
    fn start_lookup(&self, event: &CallEvent) -> Option<ContactFuture> {
        let caller = event.caller.clone()?;
        let lookups: Vec<Target> = self
            .inner
            .routing
            .targets(&event.monitored)
            .into_iter()
            .filter(|t| t.lookup)
            .collect();
        if lookups.is_empty() {
            return None;
        }
        let plugins = self.inner.plugins.clone();
        let fut: BoxFuture<'static, Option<Contact>> = Box::pin(async move {
            for t in lookups {
                match plugins
                    .lookup_contact(&t.installation, caller.as_str())
                    .await
                {
                    Ok(Some(c)) => return Some(c),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(installation = %t.installation.id, error = %e, "contact lookup failed")
                    }
                }
            }
            None
        });
        let shared = fut.shared();
        self.inner
            .contacts
            .lock()
            .insert(event.call_id.clone(), shared.clone());
        Some(shared)
    }

    fn enqueue(&self, job: Job) {
        let mut lanes = self.inner.lanes.lock();
        let n = self.inner.settings.lanes.max(1);
        let senders = lanes
            .entry(job.row.installation_id.clone())
            .or_insert_with(|| {
                (0..n)
                    .map(|_| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        tokio::spawn(self.clone().lane(rx));
                        tx
                    })
                    .collect()
            });
        let mut h = std::collections::hash_map::DefaultHasher::new();
        job.row.call_id.hash(&mut h);
        let lane = (h.finish() % n as u64) as usize;
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        self.inner.working.lock().insert(job.row.id);
        let _ = senders[lane].send(job);
    }

    /// One lane of one installation: deliveries in order, retrying in place
    /// so later events of the same call never overtake earlier ones.
    async fn lane(self, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = rx.recv().await {
            self.deliver(job).await;
            self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn deliver(&self, job: Job) {
        let Job { row, event } = job;
        let s = &self.inner.settings;
        let mut attempts = row.attempts as u32;
        loop {
            let Some(target) = self.inner.routing.installation(&row.installation_id) else {
                let msg = format!(
                    "license {} of installation {} is no longer active; not delivered",
                    row.license_id, row.installation_id
                );
                self.finish(&row, DeliveryStatus::Dead, attempts, Some(msg));
                return;
            };
            attempts += 1;
            let delivery = Delivery {
                idempotency_key: row.idempotency_key.clone(),
                attempt: attempts,
            };
            let t = Instant::now();
            let result = self
                .inner
                .plugins
                .on_call_event(
                    &target.installation,
                    &event.event,
                    event.contact.as_ref(),
                    &delivery,
                )
                .await;
            self.inner
                .metrics
                .observe(&row.installation_id, t.elapsed());
            match result {
                Ok(()) => {
                    self.finish(&row, DeliveryStatus::Delivered, attempts, None);
                    return;
                }
                Err(e) if e.is_retryable() && attempts < s.max_attempts => {
                    self.inner
                        .metrics
                        .retried(&row.installation_id, &e.to_string());
                    let wait = backoff(s, attempts, &e);
                    tracing::debug!(delivery = row.id, attempt = attempts, ?wait, error = %e, "delivery will be retried");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    let reason = if e.is_retryable() {
                        format!("gave up after {attempts} attempts: {e}")
                    } else {
                        e.to_string()
                    };
                    tracing::warn!(delivery = row.id, installation = %row.installation_id, "dead letter: {reason}");
                    self.finish(&row, DeliveryStatus::Dead, attempts, Some(reason));
                    return;
                }
            }
        }
    }

    fn finish(
        &self,
        row: &DeliveryRow,
        status: DeliveryStatus,
        attempts: u32,
        error: Option<String>,
    ) {
        self.inner.working.lock().remove(&row.id);
        match status {
            DeliveryStatus::Delivered => self.inner.metrics.delivered(&row.installation_id),
            DeliveryStatus::Dead => self
                .inner
                .metrics
                .dead(&row.installation_id, error.as_deref().unwrap_or_default()),
            DeliveryStatus::Pending => {}
        }
        let _ = self.inner.completions.send(Completion::Outcome((
            row.id,
            status,
            attempts as i32,
            error,
        )));
    }
}

/// Exponential backoff with full jitter, at least what Retry-After asked.
fn backoff(s: &Settings, attempt: u32, e: &InvokeError) -> Duration {
    let exp = s
        .base_backoff
        .saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
    let cap = exp.min(s.max_backoff);
    let jittered = cap.mul_f64(0.5 + rand::random::<f64>() * 0.5);
    match e.retry_after() {
        Some(ra) => ra.max(jittered.min(ra)),
        None => jittered,
    }
}

/// Writes attempt outcomes in batches, one per `window` (or at once when a
/// flush is asked for).
async fn record_loop(
    outbox: Outbox,
    mut rx: mpsc::UnboundedReceiver<Completion>,
    window: Duration,
) {
    let mut received = Vec::with_capacity(512);
    let mut batch: Vec<Outcome> = Vec::with_capacity(512);
    let mut flushes = Vec::new();
    loop {
        if rx.recv_many(&mut received, 512).await == 0 {
            return;
        }
        let until = tokio::time::Instant::now() + window;
        let mut closed = false;
        loop {
            for c in received.drain(..) {
                match c {
                    Completion::Outcome(o) => batch.push(o),
                    Completion::Flush(done) => flushes.push(done),
                }
            }
            if !flushes.is_empty() {
                break;
            }
            match tokio::time::timeout_at(until, rx.recv_many(&mut received, 512)).await {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let mut tries = 0;
        while !batch.is_empty()
            && let Err(e) = outbox.record(&batch).await
        {
            tries += 1;
            tracing::error!(error = %e, tries, "cannot record delivery outcomes; retrying");
            tokio::time::sleep(Duration::from_millis(200 * tries.min(25))).await;
        }
        batch.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outcomes_gather_for_a_window_and_a_flush_writes_them_at_once() {
        let (_dir, outbox) = outbox::testing::temp_outbox().await;
        let ids = outbox::testing::pending_deliveries(&outbox, 3).await;
        let status = |id| {
            let outbox = outbox.clone();
            async move { outbox.delivery(id).await.unwrap().unwrap().status }
        };
        let delivered = |id| Completion::Outcome((id, DeliveryStatus::Delivered, 1, None));

        // A long window: nothing is written until a flush (graceful
        // shutdown), which writes everything before it at once.
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(record_loop(outbox.clone(), rx, Duration::from_secs(30)));
        tx.send(delivered(ids[0])).unwrap();
        tx.send(delivered(ids[1])).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(status(ids[0]).await, DeliveryStatus::Pending);
        let (done, flushed) = oneshot::channel();
        tx.send(Completion::Flush(done)).unwrap();
        tokio::time::timeout(Duration::from_secs(10), flushed)
            .await
            .expect("a flush does not wait for the window")
            .unwrap();
        assert_eq!(status(ids[0]).await, DeliveryStatus::Delivered);
        assert_eq!(status(ids[1]).await, DeliveryStatus::Delivered);

        // A short window: written once it has passed, without a flush.
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(record_loop(outbox.clone(), rx, Duration::from_millis(20)));
        tx.send(delivered(ids[2])).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(ids[2]).await != DeliveryStatus::Delivered {
            assert!(Instant::now() < deadline, "outcome never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let s = Settings::default();
        let plain = InvokeError::Fault("x".into());
        let b1 = backoff(&s, 1, &plain);
        assert!(b1 >= s.base_backoff / 2 && b1 <= s.base_backoff, "{b1:?}");
        let b5 = backoff(&s, 5, &plain);
        assert!(
            b5 >= s.base_backoff * 8 && b5 <= s.base_backoff * 16,
            "{b5:?}"
        );
        assert!(backoff(&s, 30, &plain) <= s.max_backoff);
        let ra = InvokeError::Retryable {
            message: "429".into(),
            retry_after_ms: Some(7_000),
        };
        assert_eq!(backoff(&s, 1, &ra), Duration::from_secs(7));
    }
}
