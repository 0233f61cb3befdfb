//! Live events across the hosts of one PostgreSQL database: a listener on
//! any host sees the calls every host handles.
//!
//! Each host announces the events it published on its own live stream
//! (with their resolved contact) on channel [`EVENTS_CHANNEL`], a few
//! milliseconds' worth per `NOTIFY` (`host-id:seq,seq,…`). Every other host
//! that has live listeners reads those rows back and publishes them on its
//! stream; a host without listeners reads nothing. Streams drop a sequence
//! number they already sent, so an event that reaches a host twice is shown
//! once. A notification lost while a host reconnects its listener is not
//! replayed live; a client that reconnects with `Last-Event-ID` reads it
//! from the store.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::StoredEvent;
use super::outbox::Outbox;

/// The PostgreSQL channel that carries announced event sequence numbers.
pub const EVENTS_CHANNEL: &str = "leansync_events";
/// The PostgreSQL channel that carries plugins' push-to-screen events
/// (not stored: the payload is the event).
pub const SCREENS_CHANNEL: &str = "leansync_screens";

/// A call a plugin showed on its installation's screens.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Screen {
    /// The installation whose listeners see it.
    pub installation_id: String,
    /// The call as the plugin described it.
    pub event: crate::call::CallEvent,
}

/// A screen push as sent to the other hosts.
#[derive(serde::Serialize, serde::Deserialize)]
struct ScreenNote {
    host: String,
    #[serde(flatten)]
    screen: Screen,
}

/// `NOTIFY` payloads must stay under 8,000 bytes.
const MAX_PAYLOAD: usize = 7_000;

/// Announces event sequence numbers this host published, in batches, and
/// screen pushes one by one.
#[derive(Clone)]
pub struct Announcer(Option<mpsc::UnboundedSender<Note>>);

/// What the announcer sends.
enum Note {
    Seq(i64),
    Screen(Screen),
}

impl Announcer {
    /// Nothing to announce to (SQLite: one host).
    pub fn none() -> Self {
        Self(None)
    }

    /// Starts announcing for `outbox`'s host on PostgreSQL; [`Announcer::none`]
    /// on SQLite.
    pub fn start(outbox: &Outbox) -> Self {
        if outbox.backend() != crate::store::Backend::Postgres {
            return Self::none();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(announce(outbox.clone(), rx));
        Self(Some(tx))
    }

    /// Queues `seq` for the next announcement.
    pub fn announce(&self, seq: i64) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Note::Seq(seq));
        }
    }

    /// Sends a screen push to the other hosts.
    pub fn announce_screen(&self, screen: Screen) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Note::Screen(screen));
        }
    }
}

/// The payloads announcing `seqs` for host `me`, each under [`MAX_PAYLOAD`].
fn payloads(me: &str, seqs: &[i64]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for seq in seqs {
        if cur.len() > MAX_PAYLOAD {
            out.push(std::mem::take(&mut cur));
        }
        if cur.is_empty() {
            cur.push_str(me);
            cur.push(':');
        } else {
            cur.push(',');
        }
        cur.push_str(&seq.to_string());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Reads a payload: the announcing host and its sequence numbers.
fn parse(payload: &str) -> Option<(&str, Vec<i64>)> {
    let (host, seqs) = payload.split_once(':')?;
    let seqs = seqs
        .split(',')
        .map(|s| s.parse().ok())
        .collect::<Option<Vec<i64>>>()?;
    Some((host, seqs))
}

async fn announce(outbox: Outbox, mut rx: mpsc::UnboundedReceiver<Note>) {
    let mut notes = Vec::with_capacity(1024);
    let notify = async |channel: &str, payload: String| {
        if let Err(e) = sqlx::query("SELECT 1 FROM pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .fetch_optional(&outbox.db().pool)
            .await
        {
            tracing::warn!(error = %e, "cannot announce live events to the other hosts");
        }
    };
    while rx.recv_many(&mut notes, 1024).await > 0 {
        let mut seqs = Vec::with_capacity(notes.len());
        for note in notes.drain(..) {
            match note {
                Note::Seq(seq) => seqs.push(seq),
                Note::Screen(screen) => {
                    let note = ScreenNote {
                        host: outbox.host().to_owned(),
                        screen,
                    };
                    match serde_json::to_string(&note) {
                        Ok(p) if p.len() <= MAX_PAYLOAD => notify(SCREENS_CHANNEL, p).await,
                        _ => tracing::warn!(
                            installation = %note.screen.installation_id,
                            "a push-to-screen event is too large for the other hosts; shown on this host only"
                        ),
                    }
                }
            }
        }
        for p in payloads(outbox.host(), &seqs) {
            notify(EVENTS_CHANNEL, p).await;
        }
    }
}

/// Publishes other hosts' announced events on `live` and their screen
/// pushes on `screens` while this host has listeners (PostgreSQL only).
pub fn follow(
    outbox: Outbox,
    live: broadcast::Sender<Arc<StoredEvent>>,
    screens: broadcast::Sender<Arc<Screen>>,
) {
    if outbox.backend() != crate::store::Backend::Postgres {
        return;
    }
    tokio::spawn(async move {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect(outbox.db().url()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for other hosts' live events; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen_all([EVENTS_CHANNEL, SCREENS_CHANNEL]).await {
                tracing::warn!(error = %e, "cannot listen for other hosts' live events; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            loop {
                let n = match listener.recv().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "live event listener lost; reconnecting");
                        break;
                    }
                };
                if n.channel() == SCREENS_CHANNEL {
                    match serde_json::from_str::<ScreenNote>(n.payload()) {
                        Ok(note) if note.host != outbox.host() => {
                            let _ = screens.send(Arc::new(note.screen));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable push-to-screen from another host")
                        }
                    }
                    continue;
                }
                let Some((host, seqs)) = parse(n.payload()) else {
                    continue;
                };
                if host == outbox.host() || live.receiver_count() == 0 {
                    continue;
                }
                match outbox.events_by_seq(&seqs).await {
                    Ok(events) => {
                        for e in events {
                            let _ = live.send(Arc::new(e));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read other hosts' live events")
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_notify_limit_and_read_back() {
        let seqs: Vec<i64> = (1_000_000_000..1_000_003_000).collect();
        let ps = payloads("host_abc", &seqs);
        assert!(ps.len() > 1);
        let mut back = Vec::new();
        for p in &ps {
            assert!(p.len() < 8_000, "{} bytes", p.len());
            let (host, s) = parse(p).unwrap();
            assert_eq!(host, "host_abc");
            back.extend(s);
        }
        assert_eq!(back, seqs);
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("h:1,x"), None);
    }
}
