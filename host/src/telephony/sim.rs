//! The simulated PBX: the host's embedded default. Produces the same event
//! sequences a real PBX would — ringing, then answered and ended with a
//! duration, or missed — from the CLI, the operator API or click-to-call.

use std::cmp::Ordering as Order;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use futures::future::BoxFuture;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Originate, Provider, ProviderStatus, TelephonyError};
use crate::api::ApiError;
use crate::call::{CallEvent, CallState, Direction, now_ms};
use crate::number::E164;

/// A call to simulate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedCall {
    /// The called (monitored) number.
    pub to: String,
    /// The caller; absent = anonymous.
    #[serde(default)]
    pub from: Option<String>,
    /// Seconds of ringing before the call is answered (or missed).
    #[serde(default = "default_ring")]
    pub answer_after: f64,
    /// Seconds of talk before hang-up.
    #[serde(default = "default_talk")]
    pub hangup_after: f64,
    /// Nobody answers: ringing, then missed.
    #[serde(default)]
    pub missed: bool,
    /// The device or extension that picks up (reported on the answered and
    /// ended events, connector API 1.1.0), e.g. `201`.
    #[serde(default)]
    pub answered_by: Option<String>,
}

fn default_ring() -> f64 {
    2.0
}

fn default_talk() -> f64 {
    5.0
}

/// The simulated provider.
pub struct SimProvider {
    events: mpsc::Sender<CallEvent>,
    monitored: RwLock<BTreeSet<E164>>,
    next: AtomicU64,
    /// New calls for the one task that plays every simulated call,
    /// started with the first call.
    player: OnceLock<mpsc::UnboundedSender<(CallEvent, Script)>>,
}

/// The states a call goes through after ringing, each after its delay in
/// seconds from the one before, and who answers.
struct Script {
    steps: Vec<(f64, CallState)>,
    answered_by: Option<String>,
}

impl SimProvider {
    /// A simulated PBX sending events on `events`.
    pub fn new(events: mpsc::Sender<CallEvent>) -> Self {
        Self {
            events,
            monitored: RwLock::new(BTreeSet::new()),
            next: AtomicU64::new(1),
            player: OnceLock::new(),
        }
    }

    /// Hands a call, ringing now, to the player.
    fn play(&self, ringing: CallEvent, script: Script) {
        let player = self.player.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(player(self.events.clone(), rx));
            tx
        });
        let _ = player.send((ringing, script));
    }

    fn call_id(&self) -> String {
        format!(
            "sim-{:x}-{}",
            now_ms(),
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Starts a simulated inbound call; events follow in real time.
    pub fn simulate(&self, call: &SimulatedCall) -> Result<String, String> {
        let to = E164::parse(&call.to).map_err(|e| e.to_string())?;
        let from = call
            .from
            .as_deref()
            .filter(|f| !f.trim().is_empty() && !f.eq_ignore_ascii_case("anonymous"))
            .map(E164::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        for (name, v) in [
            ("answer_after", call.answer_after),
            ("hangup_after", call.hangup_after),
        ] {
            if !(0.0..=3600.0).contains(&v) {
                return Err(format!(
                    "{name} = {v} is out of range; give seconds between 0 and 3600"
                ));
            }
        }
        let id = self.call_id();
        let ringing = CallEvent {
            call_id: id.clone(),
            direction: Direction::Inbound,
            state: CallState::Ringing,
            caller: from,
            callee: to.clone(),
            monitored: to,
            started_at_ms: now_ms(),
            answered_at_ms: None,
            ended_at_ms: None,
            duration_secs: None,
            answered_by: None,
        };
        if let Some(dev) = &call.answered_by
            && (dev.trim().is_empty() || dev.len() > 256)
        {
            return Err(format!(
                "answered_by = {dev:?}: give the answering device or extension (1-256 characters), or leave it out"
            ));
        }
        let steps = if call.missed {
            vec![(call.answer_after, CallState::Missed)]
        } else {
            vec![
                (call.answer_after, CallState::Answered),
                (call.hangup_after, CallState::Ended),
            ]
        };
        let script = Script {
            steps,
            answered_by: call.answered_by.clone().filter(|_| !call.missed),
        };
        self.play(ringing, script);
        Ok(id)
    }
}

/// A simulated call between two of its events.
struct Call {
    /// The next event, its state already set.
    event: CallEvent,
    answered: Option<Instant>,
    script: std::vec::IntoIter<(f64, CallState)>,
    answered_by: Option<String>,
}

/// A call waiting for its next state; small, so the heap moves little.
struct Step {
    at: Instant,
    /// Ties broken by arrival, so calls due at once keep their order.
    seq: u64,
    call: Box<Call>,
}

impl Step {
    /// The step after `event`, if its script has one.
    fn next(
        mut event: CallEvent,
        answered: Option<Instant>,
        mut script: std::vec::IntoIter<(f64, CallState)>,
        answered_by: Option<String>,
        from: Instant,
        seq: &mut u64,
    ) -> Option<Self> {
        let (delay, state) = script.next()?;
        *seq += 1;
        event.state = state;
        Some(Self {
            at: from + Duration::from_secs_f64(delay),
            seq: *seq,
            call: Box::new(Call {
                event,
                answered,
                script,
                answered_by,
            }),
        })
    }
}

impl PartialEq for Step {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Step {}

impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl Ord for Step {
    /// Reversed, so the heap's top is the earliest step.
    fn cmp(&self, other: &Self) -> Order {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Plays every simulated call: emits its ringing event at once, then each
/// scripted state when it is due. One task and one timer for all calls,
/// so thousands of concurrent simulated calls cost a heap entry each.
async fn player(
    events: mpsc::Sender<CallEvent>,
    mut calls: mpsc::UnboundedReceiver<(CallEvent, Script)>,
) {
    let mut due: BinaryHeap<Step> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut arrived: Vec<(CallEvent, Script)> = Vec::new();
    loop {
        // What is due first, then the calls that arrived: new calls
        // arriving without pause never hold back answers and hang-ups.
        let now = Instant::now();
        while due.peek().is_some_and(|s| s.at <= now)
            && let Some(Step { at, call, .. }) = due.pop()
        {
            let Call {
                event: mut ev,
                mut answered,
                script,
                answered_by,
            } = *call;
            // Talk time from the schedule; timestamps from the wall clock.
            let wall = now_ms();
            match ev.state {
                CallState::Answered => {
                    ev.answered_at_ms = Some(wall);
                    ev.answered_by = answered_by.clone();
                    answered = Some(at);
                }
                CallState::Ended | CallState::Missed => {
                    ev.ended_at_ms = Some(wall);
                    ev.duration_secs = answered.map(|a| (at - a).as_secs_f64().round() as u32);
                }
                CallState::Ringing => {}
            }
            if events.send(ev.clone()).await.is_err() {
                return;
            }
            due.extend(Step::next(ev, answered, script, answered_by, at, &mut seq));
        }
        for (ringing, script) in arrived.drain(..) {
            if events.send(ringing.clone()).await.is_err() {
                return;
            }
            due.extend(Step::next(
                ringing,
                None,
                script.steps.into_iter(),
                script.answered_by,
                Instant::now(),
                &mut seq,
            ));
        }
        let wake = due.peek().map(|s| s.at);
        tokio::select! {
            n = calls.recv_many(&mut arrived, 256) => {
                if n == 0 {
                    return;
                }
            }
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
    }
}

impl Provider for SimProvider {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn set_monitored(&self, numbers: BTreeSet<E164>) {
        *self.monitored.write() = numbers;
    }

    /// The user's phone "answers" after 1 s, the destination after 2 s more,
    /// and the call lasts 10 s: an outbound sequence on the user's number.
    fn originate(&self, req: Originate) -> BoxFuture<'static, Result<String, TelephonyError>> {
        let id = self.call_id();
        let ringing = CallEvent {
            call_id: id.clone(),
            direction: Direction::Outbound,
            state: CallState::Ringing,
            caller: Some(req.phone.clone()),
            callee: req.destination,
            monitored: req.phone,
            started_at_ms: now_ms(),
            answered_at_ms: None,
            ended_at_ms: None,
            duration_secs: None,
            answered_by: None,
        };
        let script = Script {
            steps: vec![(3.0, CallState::Answered), (10.0, CallState::Ended)],
            answered_by: None,
        };
        self.play(ringing, script);
        Box::pin(async move { Ok(id) })
    }

    fn status(&self) -> ProviderStatus {
        ProviderStatus {
            kind: "sim",
            connected: true,
            monitored: self.monitored.read().len(),
            active: self.monitored.read().len(),
            last_error: None,
            registration: None,
        }
    }
}

/// Operator API: `POST /api/v1/sim/calls` with a [`SimulatedCall`].
pub fn router(sim: Arc<SimProvider>) -> Router {
    Router::new()
        .route("/api/v1/sim/calls", post(simulate))
        .with_state(sim)
}

async fn simulate(
    State(sim): State<Arc<SimProvider>>,
    body: Result<Json<SimulatedCall>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(call) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("expected {{\"to\": \"044 123 45 67\", \"from\": \"+41791234567\", \"answer_after\": 2, \"hangup_after\": 5, \"missed\": false}}: {e}"),
        )
    })?;
    let id = sim
        .simulate(&call)
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_call", m))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "call_id": id })),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answered_call_sequence() {
        let (tx, mut rx) = mpsc::channel(8);
        let sim = SimProvider::new(tx);
        let id = sim
            .simulate(&SimulatedCall {
                to: "044 123 45 67".into(),
                from: Some("079 123 45 67".into()),
                answer_after: 1.0,
                hangup_after: 3.0,
                missed: false,
                answered_by: None,
            })
            .unwrap();
        let states: Vec<CallEvent> = vec![
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
        ];
        assert_eq!(
            states.iter().map(|e| e.state).collect::<Vec<_>>(),
            [CallState::Ringing, CallState::Answered, CallState::Ended]
        );
        assert!(states.iter().all(|e| e.call_id == id));
        assert_eq!(states[0].caller.as_ref().unwrap().as_str(), "+41791234567");
        assert_eq!(states[2].duration_secs, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn many_calls_each_state_when_due() {
        let (tx, mut rx) = mpsc::channel(1024);
        let sim = SimProvider::new(tx);
        let t0 = Instant::now();
        // Submitted in the reverse order of their answers.
        let mut answer_at = HashMap::new();
        for i in (0..50u32).rev() {
            let answer_after = 0.1 * f64::from(i) + 0.05;
            let id = sim
                .simulate(&SimulatedCall {
                    to: "044 123 45 67".into(),
                    from: None,
                    answer_after,
                    hangup_after: 2.0,
                    missed: false,
                    answered_by: None,
                })
                .unwrap();
            answer_at.insert(id, answer_after);
        }
        let mut last: HashMap<String, CallState> = HashMap::new();
        for _ in 0..150 {
            let ev = rx.recv().await.unwrap();
            let at = (Instant::now() - t0).as_secs_f64();
            let due = match ev.state {
                CallState::Ringing => 0.0,
                CallState::Answered => answer_at[&ev.call_id],
                _ => answer_at[&ev.call_id] + 2.0,
            };
            assert!(
                (at - due).abs() < 0.002,
                "{:?} at {at} s, due at {due} s",
                ev.state
            );
            let before = last.insert(ev.call_id.clone(), ev.state);
            let expected = match ev.state {
                CallState::Ringing => None,
                CallState::Answered => Some(CallState::Ringing),
                _ => Some(CallState::Answered),
            };
            assert_eq!(before, expected, "order of {}", ev.call_id);
            if ev.state == CallState::Ended {
                assert_eq!(ev.duration_secs, Some(2));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn missed_and_anonymous() {
        let (tx, mut rx) = mpsc::channel(8);
        let sim = SimProvider::new(tx);
        sim.simulate(&SimulatedCall {
            to: "+41441234567".into(),
            from: None,
            answer_after: 1.0,
            hangup_after: 1.0,
            missed: true,
            answered_by: None,
        })
        .unwrap();
        let a = rx.recv().await.unwrap();
        let b = rx.recv().await.unwrap();
        assert_eq!((a.state, b.state), (CallState::Ringing, CallState::Missed));
        assert!(a.caller.is_none());
        assert_eq!(b.duration_secs, None);
    }

    #[test]
    fn bad_input_is_named() {
        let (tx, _rx) = mpsc::channel(8);
        let sim = SimProvider::new(tx);
        let err = sim
            .simulate(&SimulatedCall {
                to: "garbage".into(),
                from: None,
                answer_after: 1.0,
                hangup_after: 1.0,
                missed: false,
                answered_by: None,
            })
            .unwrap_err();
        assert!(err.contains("'garbage'"), "{err}");
    }
}
