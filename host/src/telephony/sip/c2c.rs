//! Click-to-call over SIP by third-party call control, RFC 3725 flow I.
//!
//! ```text
//!  phone (A)            LeanSync              destination (B)
//!     |<-- INVITE (no SDP) --|                        |
//!     |--- 200 offer1 ------>|                        |
//!     |                      |--- INVITE offer1 ----->|
//!     |                      |<-- 200 answer1 --------|
//!     |                      |--- ACK --------------->|
//!     |<-- ACK answer1 ------|                        |
//!     |<============ media flows directly ==========>|
//! ```
//!
//! The phone rings first and shows the destination as the caller (display
//! name of From), so the user sees whom they are calling. The destination
//! sees the user's number. A leg that is busy, fails or is not answered in
//! time ends the attempt cleanly: CANCEL for a ringing leg, ACK + BYE for an
//! answered one; no dialog is left behind. Once both legs are up, a BYE from
//! either side is answered and passed on to the other. Progress is reported
//! as outbound call events on the phone's number: `ringing` at the start,
//! `answered` when the destination picks up, `ended` with the talk time, or
//! `missed` when it never connected.
//!
//! The destination must answer within `answer_timeout_secs` (25 s by
//! default): flow I leaves the phone's 200 unacknowledged while the
//! destination rings, and phones give up on an unacknowledged 200 after
//! 32 s (RFC 3261 timer H).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rsipstack::dialog::authenticate::handle_client_authenticate;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{
    self as rsip, Header, Method, Request, Response, SipMessage, StatusCode, ToTypedHeader,
};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::{Transaction, make_tag};
use tokio::sync::mpsc;

use super::{Inner, split_uris, tag_of};
use crate::call::{CallEvent, CallState, Direction, now_ms};
use crate::number::E164;

/// One established (or being established) dialog the host is the UAC of.
#[derive(Debug, Clone)]
struct Leg {
    call_id: String,
    from: rsip::typed::From,
    to: rsip::typed::To,
    target: rsip::Uri,
    routes: Vec<String>,
    seq: u32,
}

/// A click-to-call: both legs and its progress.
pub(super) struct Bridge {
    id: String,
    phone: E164,
    destination: E164,
    started_at_ms: u64,
    state: Mutex<BridgeState>,
}

#[derive(Default)]
struct BridgeState {
    a: Option<Leg>,
    b: Option<Leg>,
    answered_at_ms: Option<u64>,
    finished: bool,
}

impl Bridge {
    fn event(&self, state: CallState) -> CallEvent {
        let s = self.state.lock();
        let now = now_ms();
        let finished = matches!(state, CallState::Ended | CallState::Missed);
        CallEvent {
            call_id: self.id.clone(),
            direction: Direction::Outbound,
            state,
            caller: Some(self.phone.clone()),
            callee: self.destination.clone(),
            monitored: self.phone.clone(),
            started_at_ms: self.started_at_ms,
            answered_at_ms: s.answered_at_ms,
            ended_at_ms: finished.then_some(now),
            duration_secs: (state == CallState::Ended)
                .then(|| {
                    s.answered_at_ms
                        .map(|t| ((now.saturating_sub(t) + 500) / 1000) as u32)
                })
                .flatten(),
            answered_by: None,
        }
    }
}

/// Starts a click-to-call from `phone` to `destination`; returns its call id
/// at once and reports progress as call events.
pub(super) fn originate(inner: Arc<Inner>, phone: E164, destination: E164) -> String {
    let bridge = Arc::new(Bridge {
        id: format!("sip-c2c-{}", uuid::Uuid::now_v7().simple()),
        phone,
        destination,
        started_at_ms: now_ms(),
        state: Mutex::new(BridgeState::default()),
    });
    let id = bridge.id.clone();
    tokio::spawn(async move {
        emit(&inner, bridge.event(CallState::Ringing));
        let outcome = run(&inner, &bridge).await;
        if let Err(why) = outcome {
            tracing::info!(call = %bridge.id, phone = %bridge.phone, destination = %bridge.destination, "click-to-call did not connect: {why}");
            *inner.last_c2c_error.lock() = Some(format!("{}: {why}", bridge.id));
            finish(&inner, &bridge, CallState::Missed);
        }
    });
    id
}

fn emit(inner: &Inner, event: CallEvent) {
    if inner.events.try_send(event).is_err() {
        tracing::error!("click-to-call event dropped: the pipeline queue is full");
    }
}

/// Ends the bridge once: forgets its legs and reports the final state.
fn finish(inner: &Inner, bridge: &Bridge, state: CallState) {
    {
        let mut s = bridge.state.lock();
        if s.finished {
            return;
        }
        s.finished = true;
        let mut legs = inner.c2c_legs.lock();
        for leg in [&s.a, &s.b].into_iter().flatten() {
            legs.remove(&leg.call_id);
        }
    }
    emit(inner, bridge.event(state));
}

async fn run(inner: &Arc<Inner>, bridge: &Arc<Bridge>) -> Result<(), String> {
    let cfg = &inner.cfg;
    let domain = cfg.domain();
    // Leg A: the user's phone, shown the destination as the caller.
    let a_call_id = format!("ls-a-{}", uuid::Uuid::now_v7().simple());
    inner
        .c2c_legs
        .lock()
        .insert(a_call_id.clone(), bridge.clone());
    let a = LegRequest {
        call_id: a_call_id,
        target: uri(&format!("sip:{}@{domain}", cfg.user_of(&bridge.phone)))?,
        display: bridge.destination.as_str().to_owned(),
        body: Vec::new(),
    };
    let ring = Duration::from_secs(u64::from(cfg.ring_timeout_secs.max(1)));
    let (a_leg, offer) = match invite(inner, &a, ring).await? {
        Answer::Ok(leg, body) => (*leg, body),
        Answer::Failed(code) => {
            return Err(format!("the phone {} answered {code}", bridge.phone));
        }
        Answer::Timeout => {
            return Err(format!(
                "the phone {} did not answer within {} s",
                bridge.phone,
                ring.as_secs()
            ));
        }
    };
    bridge.state.lock().a = Some(a_leg.clone());
    if offer.is_empty() {
        send_ack(inner, &a_leg, &[]).await;
        bye(inner, &a_leg).await;
        return Err(format!(
            "the phone {} answered without an SDP offer",
            bridge.phone
        ));
    }
    // Leg B: the destination, given the phone's offer.
    let b_call_id = format!("ls-b-{}", uuid::Uuid::now_v7().simple());
    inner
        .c2c_legs
        .lock()
        .insert(b_call_id.clone(), bridge.clone());
    let b = LegRequest {
        call_id: b_call_id,
        target: uri(&format!(
            "sip:{}@{domain}",
            cfg.user_of(&bridge.destination)
        ))?,
        display: bridge.phone.as_str().to_owned(),
        body: offer.clone(),
    };
    let wait = Duration::from_secs(u64::from(cfg.answer_timeout_secs.max(1)));
    let outcome = invite(inner, &b, wait).await;
    match outcome {
        Ok(Answer::Ok(b_leg, answer)) => {
            send_ack(inner, &b_leg, &[]).await;
            send_ack(inner, &a_leg, &answer).await;
            {
                let mut s = bridge.state.lock();
                s.b = Some(*b_leg);
                s.answered_at_ms = Some(now_ms());
            }
            emit(inner, bridge.event(CallState::Answered));
            tracing::info!(call = %bridge.id, phone = %bridge.phone, destination = %bridge.destination, "click-to-call connected");
            Ok(())
        }
        other => {
            // Close the phone's leg: acknowledge its offer with every
            // stream rejected, then hang up.
            send_ack(inner, &a_leg, &reject_all(&offer)).await;
            bye(inner, &a_leg).await;
            Err(match other {
                Ok(Answer::Failed(code)) => {
                    format!("the destination {} answered {code}", bridge.destination)
                }
                Ok(Answer::Timeout) => format!(
                    "the destination {} did not answer within {} s",
                    bridge.destination,
                    wait.as_secs()
                ),
                Err(e) => e,
                Ok(Answer::Ok(..)) => unreachable!(),
            })
        }
    }
}

/// A BYE arrived on one leg of a connected click-to-call: pass it on.
pub(super) fn on_bye(inner: &Arc<Inner>, call_id: &str) -> bool {
    let Some(bridge) = inner.c2c_legs.lock().get(call_id).cloned() else {
        return false;
    };
    let other = {
        let s = bridge.state.lock();
        [&s.a, &s.b]
            .into_iter()
            .flatten()
            .find(|l| l.call_id != call_id)
            .cloned()
    };
    finish(inner, &bridge, CallState::Ended);
    if let Some(other) = other {
        let inner = inner.clone();
        tokio::spawn(async move { bye(&inner, &other).await });
    }
    true
}

/// Whether a dialog (by SIP Call-ID) is a leg the host placed itself; the
/// PBX's dialog-info for it must not be reported as an incoming call.
pub(super) fn is_own_leg(inner: &Inner, call_id: &str) -> bool {
    inner.c2c_legs.lock().contains_key(call_id)
}

struct LegRequest {
    call_id: String,
    target: rsip::Uri,
    display: String,
    body: Vec<u8>,
}

enum Answer {
    Ok(Box<Leg>, Vec<u8>),
    Failed(StatusCode),
    Timeout,
}

fn uri(s: &str) -> Result<rsip::Uri, String> {
    rsip::Uri::try_from(s).map_err(|e| format!("invalid SIP URI {s}: {e}"))
}

/// Sends an INVITE (digest-authenticated when challenged) and waits up to
/// `wait` for its final answer, cancelling it on timeout.
async fn invite(inner: &Arc<Inner>, leg: &LegRequest, wait: Duration) -> Result<Answer, String> {
    let cfg = &inner.cfg;
    let domain = cfg.domain();
    let me = uri(&format!("sip:{}@{domain}", cfg.username))?;
    let from = rsip::typed::From {
        display_name: Some(leg.display.clone()),
        uri: me.clone(),
        params: vec![],
    }
    .with_tag(make_tag());
    let to = rsip::typed::To {
        display_name: None,
        uri: leg.target.clone(),
        params: vec![],
    };
    let via = inner.via().await?;
    let mut request = inner.endpoint.make_request(
        Method::Invite,
        leg.target.clone(),
        via,
        from.clone(),
        to.clone(),
        1,
        Some(leg.call_id.clone().into()),
    );
    inner.push_contact(&mut request).await?;
    if !leg.body.is_empty() {
        request
            .headers
            .unique_push(Header::ContentType("application/sdp".into()));
    }
    request
        .headers
        .unique_push(Header::ContentLength((leg.body.len() as u32).into()));
    request.body = leg.body.clone();

    // The transaction lives in its own task (its receive is not cancel-safe)
    // and reports every response here; `current` holds the INVITE as last
    // sent, which a CANCEL must match.
    let (tx_out, mut responses) = mpsc::channel::<Response>(16);
    let current = Arc::new(Mutex::new(request.clone()));
    {
        let inner = inner.clone();
        let current = current.clone();
        let credential = cfg.credential();
        tokio::spawn(async move {
            let key = match TransactionKey::from_request(&request, TransactionRole::Client) {
                Ok(k) => k,
                Err(_) => return,
            };
            let mut tx = Transaction::new_client(key, request, inner.endpoint.clone(), None);
            tx.destination = Some(inner.server.clone());
            if tx.send().await.is_err() {
                return;
            }
            let mut seq = 1;
            let mut challenged = false;
            while let Some(msg) = tx.receive().await {
                let SipMessage::Response(resp) = msg else {
                    continue;
                };
                let code = resp.status_code.code();
                if matches!(code, 401 | 407) && !challenged {
                    challenged = true;
                    seq += 1;
                    match handle_client_authenticate(seq, &tx, resp, &credential).await {
                        Ok(next) => {
                            tx = next;
                            tx.destination = Some(inner.server.clone());
                            *current.lock() = tx.original.clone();
                            if tx.send().await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                    continue;
                }
                let last = code >= 200;
                if tx_out.send(resp).await.is_err() || last {
                    // Keep absorbing retransmissions until the transaction ends.
                    if last {
                        while tx.receive().await.is_some() {}
                    }
                    return;
                }
            }
        });
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut cancelled = false;
    loop {
        let next = if cancelled {
            tokio::time::timeout(Duration::from_secs(5), responses.recv()).await
        } else {
            tokio::time::timeout_at(deadline, responses.recv()).await
        };
        match next {
            Ok(Some(resp)) => {
                let code = resp.status_code.code();
                if code < 200 {
                    continue;
                }
                if (200..300).contains(&code) {
                    let sent = current.lock().clone();
                    let leg = established(leg, from.clone(), to.clone(), &resp, &sent)?;
                    if cancelled {
                        // Answered just as we gave up: close it again.
                        send_ack(inner, &leg, &reject_all(resp.body())).await;
                        bye(inner, &leg).await;
                        return Ok(Answer::Timeout);
                    }
                    return Ok(Answer::Ok(Box::new(leg), resp.body().to_vec()));
                }
                if matches!(code, 401 | 407) {
                    return Err(format!(
                        "the PBX refused the credentials of '{}' for a call ({}); {}",
                        cfg.username,
                        resp.status_code,
                        cfg.credentials_hint()
                    ));
                }
                return Ok(if cancelled {
                    Answer::Timeout
                } else {
                    Answer::Failed(resp.status_code)
                });
            }
            Ok(None) => {
                return Err(format!(
                    "no answer from the PBX at {} to the INVITE for {}",
                    cfg.server, leg.target
                ));
            }
            Err(_) if cancelled => return Ok(Answer::Timeout),
            Err(_) => {
                cancelled = true;
                let sent = current.lock().clone();
                cancel(inner, &sent).await;
            }
        }
    }
}

/// The dialog a 2xx to our INVITE created.
fn established(
    leg: &LegRequest,
    from: rsip::typed::From,
    to: rsip::typed::To,
    resp: &Response,
    sent: &Request,
) -> Result<Leg, String> {
    let to_tag = resp
        .to_header()
        .ok()
        .and_then(|t| tag_of(t.value()))
        .ok_or("a 2xx without a To tag")?;
    let target = resp
        .contact_header()
        .ok()
        .and_then(|c| c.typed().ok())
        .map(|c| c.uri)
        .unwrap_or_else(|| leg.target.clone());
    // Route set: the Record-Route entries, reversed for the caller's side.
    let mut routes: Vec<String> = resp
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::RecordRoute(rr) => Some(rr.value().to_owned()),
            _ => None,
        })
        .flat_map(|v| split_uris(&v))
        .collect();
    routes.reverse();
    let seq = sent
        .cseq_header()
        .ok()
        .and_then(|c| c.seq().ok())
        .unwrap_or(1);
    Ok(Leg {
        call_id: leg.call_id.clone(),
        from,
        to: to.with_tag(to_tag.into()),
        target,
        routes,
        seq,
    })
}

/// An SDP answer that rejects every stream of `offer` (port 0), used to
/// close a leg whose offer cannot be bridged.
fn reject_all(offer: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(offer);
    let mut out = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("m=") {
            let mut parts: Vec<&str> = rest.split(' ').collect();
            if parts.len() > 1 {
                parts[1] = "0";
            }
            out.push_str("m=");
            out.push_str(&parts.join(" "));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// A request inside `leg`'s dialog.
async fn in_dialog(inner: &Inner, leg: &Leg, method: Method, seq: u32) -> Result<Request, String> {
    let via = inner.via().await?;
    let mut r = inner.endpoint.make_request(
        method,
        leg.target.clone(),
        via,
        leg.from.clone(),
        leg.to.clone(),
        seq,
        Some(leg.call_id.clone().into()),
    );
    for route in &leg.routes {
        r.headers.push(Header::Route(route.as_str().into()));
    }
    Ok(r)
}

/// ACK for the 2xx of `leg`'s INVITE, carrying `sdp` when not empty. The
/// ACK of a 2xx is its own request (no transaction), sent via the PBX.
async fn send_ack(inner: &Inner, leg: &Leg, sdp: &[u8]) {
    let Ok(mut ack) = in_dialog(inner, leg, Method::Ack, leg.seq).await else {
        return;
    };
    if !sdp.is_empty() {
        ack.headers
            .unique_push(Header::ContentType("application/sdp".into()));
    }
    ack.headers
        .unique_push(Header::ContentLength((sdp.len() as u32).into()));
    ack.body = sdp.to_vec();
    match inner
        .endpoint
        .transport_layer
        .lookup(&inner.server, None)
        .await
    {
        Ok((conn, addr)) => {
            if let Err(e) = conn.send(SipMessage::Request(ack), Some(&addr)).await {
                tracing::warn!(call_id = %leg.call_id, "ACK not sent: {e}");
            }
        }
        Err(e) => tracing::warn!(call_id = %leg.call_id, "ACK not sent: {e}"),
    }
}

/// Hangs up `leg` and waits (briefly) for the answer.
async fn bye(inner: &Inner, leg: &Leg) {
    let Ok(request) = in_dialog(inner, leg, Method::Bye, leg.seq + 1).await else {
        return;
    };
    non_invite(inner, request, "BYE").await;
}

/// CANCELs a ringing INVITE (same Via branch, Call-ID, From, To and CSeq
/// number as the INVITE as last sent).
async fn cancel(inner: &Inner, invite: &Request) {
    let mut c = invite.clone();
    c.headers.retain(|h| {
        !matches!(
            h,
            Header::ContentLength(_)
                | Header::ContentType(_)
                | Header::Contact(_)
                | Header::Authorization(_)
                | Header::ProxyAuthorization(_)
        )
    });
    c.method = Method::Cancel;
    let seq = c.cseq_header().ok().and_then(|h| h.seq().ok()).unwrap_or(1);
    if let Ok(h) = c.cseq_header_mut() {
        let _ = h.mut_seq(seq).and_then(|h| h.mut_method(Method::Cancel));
    }
    c.body.clear();
    non_invite(inner, c, "CANCEL").await;
}

async fn non_invite(inner: &Inner, request: Request, what: &str) {
    let Ok(key) = TransactionKey::from_request(&request, TransactionRole::Client) else {
        return;
    };
    let mut tx = Transaction::new_client(key, request, inner.endpoint.clone(), None);
    tx.destination = Some(inner.server.clone());
    if let Err(e) = tx.send().await {
        tracing::warn!("{what} not sent: {e}");
        return;
    }
    let wait = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = tx.receive().await {
            if let SipMessage::Response(r) = msg
                && r.status_code.code() >= 200
            {
                return Some(r.status_code);
            }
        }
        None
    })
    .await;
    if let Ok(Some(code)) = wait
        && code.code() >= 300
    {
        tracing::debug!("{what} answered {code}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejecting_answer_keeps_the_offer_but_zeroes_every_port() {
        let offer = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\nm=video 6002 RTP/AVP 96\r\n";
        let answer = String::from_utf8(reject_all(offer)).unwrap();
        assert!(answer.contains("m=audio 0 RTP/AVP 0 8\r\n"), "{answer}");
        assert!(answer.contains("m=video 0 RTP/AVP 96\r\n"), "{answer}");
        assert!(answer.starts_with("v=0\r\n"));
    }
}
