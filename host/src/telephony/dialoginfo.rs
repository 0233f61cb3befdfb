//! RFC 4235 `application/dialog-info+xml`: a tolerant parser and a tracker
//! that turns successive documents about one monitored number into call
//! transitions (ringing, answered, ended, missed).
//!
//! The parser accepts what real PBXs send, not only what the RFC allows:
//! empty bodies (Kamailio's first NOTIFY after SUBSCRIBE), state names in any
//! case (Kamailio sends `Trying`), any namespace prefix, missing tags and
//! attributes, unknown elements, entities without a port. Bodies captured
//! from Kamailio 5.6 (`tests/sip/`) are used verbatim in the tests.

use std::collections::HashMap;

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::reader::Reader;

/// Whether a document carries the full state of the entity or only changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoState {
    /// Every current dialog of the entity is listed; one that is missing has
    /// ended.
    Full,
    /// Only the listed dialogs changed.
    Partial,
}

/// Who sent the dialog's first INVITE, seen from the monitored entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogDirection {
    /// The entity placed the call (outgoing).
    Initiator,
    /// The entity receives the call (incoming).
    Recipient,
}

/// The dialog state machine of RFC 4235 section 3.7.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// INVITE sent or received, no provisional response yet.
    Trying,
    /// A provisional response without a To tag (e.g. 100, 180 without tag).
    Proceeding,
    /// A provisional response with a To tag: the phone rings.
    Early,
    /// 2xx: the call is up.
    Confirmed,
    /// The dialog is over (BYE, CANCEL, error response, timeout).
    Terminated,
}

impl DialogState {
    /// Parses a state name case-insensitively (`Trying`, `early`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        [
            ("trying", Self::Trying),
            ("proceeding", Self::Proceeding),
            ("early", Self::Early),
            ("confirmed", Self::Confirmed),
            ("terminated", Self::Terminated),
        ]
        .into_iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n))
        .map(|(_, s)| s)
    }

    /// Whether the call has not been answered yet and is still alive.
    pub fn is_ringing(self) -> bool {
        matches!(self, Self::Trying | Self::Proceeding | Self::Early)
    }
}

/// One side of a dialog (`<local>` or `<remote>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Participant {
    /// `<identity>` text: the party's address of record, e.g.
    /// `sip:+41791234567@pstn.example`.
    pub identity: Option<String>,
    /// `display` attribute of `<identity>` (often dropped by PBXs).
    pub display: Option<String>,
    /// `uri` attribute of `<target>`: the party's contact.
    pub target: Option<String>,
}

/// One `<dialog>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// `id` attribute; falls back to `call-id` when the id is missing.
    pub id: String,
    /// `call-id` attribute.
    pub call_id: Option<String>,
    /// `direction` attribute, if present and known.
    pub direction: Option<DialogDirection>,
    /// `<state>` text.
    pub state: DialogState,
    /// `event` attribute of `<state>` in lower case, e.g. `rejected`,
    /// `cancelled`, `replaced`, `local-bye`, `remote-bye`.
    pub event: Option<String>,
    /// `<duration>` in seconds, if sent.
    pub duration: Option<u64>,
    /// The monitored entity's side.
    pub local: Option<Participant>,
    /// The other party (the caller for an incoming call).
    pub remote: Option<Participant>,
}

/// A parsed `<dialog-info>` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogInfo {
    /// `version` attribute (increases per NOTIFY within one subscription).
    pub version: Option<u64>,
    /// `state` attribute; `Full` when missing or unknown.
    pub state: InfoState,
    /// `entity` attribute: the monitored address, e.g.
    /// `sip:41441234567@pbx.example` (often without a port).
    pub entity: String,
    /// The dialogs listed, in document order. Dialogs without a usable state
    /// or without any id are left out.
    pub dialogs: Vec<Dialog>,
}

/// Why a dialog-info body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not well-formed XML.
    #[error("malformed dialog-info XML at byte {position}: {message}")]
    Xml {
        /// Byte offset in the body where the reader stopped.
        position: u64,
        /// The XML reader's message.
        message: String,
    },
    /// The root element is not `dialog-info`.
    #[error("not a dialog-info document: root element is <{0}>")]
    WrongRoot(String),
    /// The body has content but no root element.
    #[error("dialog-info body has no root element")]
    NoRoot,
    /// The body ends before the root element is closed.
    #[error("dialog-info document is truncated")]
    Truncated,
    /// The root element is `dialog-info` in another namespace.
    #[error(
        "dialog-info root is in namespace '{0}', not '{DIALOG_INFO_NS}' (RFC 4235): not a dialog event document"
    )]
    WrongNamespace(String),
    /// The body is over [`MAX_BODY_BYTES`]; it is refused before parsing.
    #[error(
        "dialog-info body of {0} bytes is over the {MAX_BODY_BYTES}-byte limit: ignored (no PBX lists that many dialogs for one number)"
    )]
    TooLarge(usize),
    /// Elements nest deeper than [`MAX_DEPTH`].
    #[error("dialog-info elements nest deeper than {MAX_DEPTH} levels: ignored")]
    TooDeep,
}

/// The dialog-info namespace (RFC 4235).
pub const DIALOG_INFO_NS: &str = "urn:ietf:params:xml:ns:dialog-info";

/// Largest body parsed: a full-state document of [`Tracker::MAX_DIALOGS`]
/// dialogs at about 600 bytes each, with room to spare. Bigger bodies are
/// refused at once, before any XML is read.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Deepest element nesting accepted (a real document needs 4, extensions a
/// few more).
pub const MAX_DEPTH: usize = 32;

/// Parses an `application/dialog-info+xml` body.
///
/// Returns `Ok(None)` for an empty or whitespace-only body (Kamailio sends
/// one in the first NOTIFY after SUBSCRIBE when the entity has no dialogs).
/// Tolerates namespace prefixes, upper-case state names, missing optional
/// attributes and elements, and skips unknown elements. A `<dialog>` whose
/// state is missing or unknown, or which has neither `id` nor `call-id`, is
/// left out rather than failing the whole document. Content after the root
/// element is ignored.
///
/// A root without any namespace declaration is accepted (some PBXs omit
/// it); one declared in another namespace is not.
///
/// # Errors
///
/// [`ParseError`] when the body is over [`MAX_BODY_BYTES`], is not
/// well-formed XML, its root is not `dialog-info` in the RFC 4235
/// namespace, it has no root element, nests deeper than [`MAX_DEPTH`], or
/// ends inside the root.
pub fn parse(body: &str) -> Result<Option<DialogInfo>, ParseError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ParseError::TooLarge(body.len()));
    }
    let body = body.trim_start_matches('\u{feff}');
    if body.trim().is_empty() {
        return Ok(None);
    }
    let mut reader = Reader::from_str(body);
    reader.config_mut().check_end_names = false;

    let mut info: Option<DialogInfo> = None;
    let mut stack: Vec<Ctx> = Vec::new();
    let mut dialog: Option<DialogBuilder> = None;
    let mut participant: Option<Participant> = None;
    let mut text = String::new();

    loop {
        let event = reader.read_event().map_err(|e| ParseError::Xml {
            position: reader.error_position(),
            message: e.to_string(),
        })?;
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                match stack.pop() {
                    Some(Ctx::Root) => break,
                    Some(ctx) => close(ctx, &mut text, &mut dialog, &mut participant, &mut info),
                    None => {}
                }
                continue;
            }
            Event::Text(t) => {
                if captures_text(stack.last()) {
                    text.push_str(&t.decode().unwrap_or_default());
                }
                continue;
            }
            Event::CData(t) => {
                if captures_text(stack.last()) {
                    text.push_str(&String::from_utf8_lossy(&t));
                }
                continue;
            }
            Event::GeneralRef(r) => {
                if captures_text(stack.last()) {
                    push_reference(&mut text, &r);
                }
                continue;
            }
            Event::Eof if info.is_none() => return Err(ParseError::NoRoot),
            Event::Eof => return Err(ParseError::Truncated),
            _ => continue,
        };
        let name = local_name(&e);
        if info.is_none() {
            if !name.eq_ignore_ascii_case("dialog-info") {
                return Err(ParseError::WrongRoot(name));
            }
            if let Some(ns) = declared_namespace(&e)
                && ns != DIALOG_INFO_NS
            {
                return Err(ParseError::WrongNamespace(ns));
            }
            info = Some(root_info(&e));
            if empty {
                break;
            }
            stack.push(Ctx::Root);
            continue;
        }
        let parent = stack.last().copied().unwrap_or(Ctx::Other);
        let ctx = child_ctx(parent, &name);
        open(ctx, &e, &mut dialog, &mut participant);
        if captures_text(Some(&ctx)) {
            text.clear();
        }
        if empty {
            close(ctx, &mut text, &mut dialog, &mut participant, &mut info);
        } else if stack.len() >= MAX_DEPTH {
            return Err(ParseError::TooDeep);
        } else {
            stack.push(ctx);
        }
    }
    Ok(info)
}

/// The namespace the root element's own prefix (or the default namespace)
/// is bound to on that element, if it declares one.
fn declared_namespace(e: &BytesStart<'_>) -> Option<String> {
    let name = e.name();
    let wanted: Vec<u8> = match name.prefix() {
        Some(p) => [b"xmlns:".as_slice(), p.as_ref()].concat(),
        None => b"xmlns".to_vec(),
    };
    e.attributes()
        .with_checks(false)
        .filter_map(Result::ok)
        .find(|a| a.key.as_ref() == wanted.as_slice())
        .map(|a| String::from_utf8_lossy(&a.value).trim().to_string())
}

/// Where the parser is in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Root,
    Dialog,
    State,
    Duration,
    Local,
    Remote,
    Identity,
    Target,
    Other,
}

fn child_ctx(parent: Ctx, name: &str) -> Ctx {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    match parent {
        Ctx::Root if is("dialog") => Ctx::Dialog,
        Ctx::Dialog if is("state") => Ctx::State,
        Ctx::Dialog if is("duration") => Ctx::Duration,
        Ctx::Dialog if is("local") => Ctx::Local,
        Ctx::Dialog if is("remote") => Ctx::Remote,
        Ctx::Local | Ctx::Remote if is("identity") => Ctx::Identity,
        Ctx::Local | Ctx::Remote if is("target") => Ctx::Target,
        _ => Ctx::Other,
    }
}

fn captures_text(ctx: Option<&Ctx>) -> bool {
    matches!(ctx, Some(Ctx::State | Ctx::Duration | Ctx::Identity))
}

/// A `<dialog>` being read.
#[derive(Debug, Default)]
struct DialogBuilder {
    id: Option<String>,
    call_id: Option<String>,
    direction: Option<DialogDirection>,
    state: Option<DialogState>,
    event: Option<String>,
    duration: Option<u64>,
    local: Option<Participant>,
    remote: Option<Participant>,
}

impl DialogBuilder {
    fn build(self) -> Option<Dialog> {
        let id = self.id.or_else(|| self.call_id.clone())?;
        Some(Dialog {
            id,
            call_id: self.call_id,
            direction: self.direction,
            state: self.state?,
            event: self.event,
            duration: self.duration,
            local: self.local,
            remote: self.remote,
        })
    }
}

fn open(
    ctx: Ctx,
    e: &BytesStart<'_>,
    dialog: &mut Option<DialogBuilder>,
    participant: &mut Option<Participant>,
) {
    match ctx {
        Ctx::Dialog => {
            let mut d = DialogBuilder::default();
            for (k, v) in attributes(e) {
                match k.to_ascii_lowercase().as_str() {
                    "id" => d.id = non_empty(v),
                    "call-id" => d.call_id = non_empty(v),
                    "direction" => {
                        d.direction = match v.trim().to_ascii_lowercase().as_str() {
                            "initiator" => Some(DialogDirection::Initiator),
                            "recipient" => Some(DialogDirection::Recipient),
                            _ => None,
                        }
                    }
                    _ => {}
                }
            }
            *dialog = Some(d);
        }
        Ctx::State => {
            if let Some(d) = dialog.as_mut() {
                d.event = attributes(e)
                    .find(|(k, _)| k.eq_ignore_ascii_case("event"))
                    .and_then(|(_, v)| non_empty(v.to_ascii_lowercase()));
            }
        }
        Ctx::Local | Ctx::Remote => *participant = Some(Participant::default()),
        Ctx::Identity => {
            if let Some(p) = participant.as_mut() {
                p.display = attributes(e)
                    .find(|(k, _)| k.eq_ignore_ascii_case("display"))
                    .and_then(|(_, v)| non_empty(v));
            }
        }
        Ctx::Target => {
            if let Some(p) = participant.as_mut() {
                p.target = attributes(e)
                    .find(|(k, _)| k.eq_ignore_ascii_case("uri"))
                    .and_then(|(_, v)| non_empty(v));
            }
        }
        Ctx::Root | Ctx::Duration | Ctx::Other => {}
    }
}

fn close(
    ctx: Ctx,
    text: &mut String,
    dialog: &mut Option<DialogBuilder>,
    participant: &mut Option<Participant>,
    info: &mut Option<DialogInfo>,
) {
    let content = if captures_text(Some(&ctx)) {
        std::mem::take(text)
    } else {
        String::new()
    };
    match ctx {
        Ctx::Dialog => {
            if let (Some(d), Some(info)) =
                (dialog.take().and_then(DialogBuilder::build), info.as_mut())
            {
                info.dialogs.push(d);
            }
        }
        Ctx::State => {
            if let Some(d) = dialog.as_mut() {
                d.state = DialogState::from_name(&content);
            }
        }
        Ctx::Duration => {
            if let Some(d) = dialog.as_mut() {
                d.duration = content.trim().parse().ok();
            }
        }
        Ctx::Identity => {
            if let Some(p) = participant.as_mut() {
                p.identity = non_empty(content);
            }
        }
        Ctx::Local | Ctx::Remote => {
            if let (Some(p), Some(d)) = (participant.take(), dialog.as_mut()) {
                if ctx == Ctx::Local {
                    d.local = Some(p);
                } else {
                    d.remote = Some(p);
                }
            }
        }
        Ctx::Root | Ctx::Target | Ctx::Other => {}
    }
}

fn root_info(e: &BytesStart<'_>) -> DialogInfo {
    let mut info = DialogInfo {
        version: None,
        state: InfoState::Full,
        entity: String::new(),
        dialogs: Vec::new(),
    };
    for (k, v) in attributes(e) {
        match k.to_ascii_lowercase().as_str() {
            "version" => info.version = v.trim().parse().ok(),
            "state" if v.trim().eq_ignore_ascii_case("partial") => {
                info.state = InfoState::Partial;
            }
            "entity" => info.entity = v.trim().to_string(),
            _ => {}
        }
    }
    info
}

/// Local (prefix-free) element name.
fn local_name(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

/// Attributes as (local name, unescaped value); malformed ones are skipped,
/// a value with an unknown entity is kept raw.
fn attributes(e: &BytesStart<'_>) -> impl Iterator<Item = (String, String)> {
    e.attributes()
        .with_checks(false)
        .filter_map(|a| {
            let a = a.ok()?;
            let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
            let value = match a.normalized_value(XmlVersion::Implicit1_0) {
                Ok(v) => v.into_owned(),
                Err(_) => String::from_utf8_lossy(&a.value).into_owned(),
            };
            Some((key, value))
        })
        .collect::<Vec<_>>()
        .into_iter()
}

fn push_reference(text: &mut String, r: &BytesRef<'_>) {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        text.push(c);
        return;
    }
    let name = r.decode().unwrap_or_default();
    match resolve_predefined_entity(&name) {
        Some(s) => text.push_str(s),
        None => {
            text.push('&');
            text.push_str(&name);
            text.push(';');
        }
    }
}

fn non_empty(s: impl AsRef<str>) -> Option<String> {
    let s = s.as_ref().trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// User parts that mean "caller withheld" rather than a real party.
const ANONYMOUS_USERS: &[&str] = &[
    "anonymous",
    "restricted",
    "private",
    "withheld",
    "unavailable",
    "unknown",
];

/// Extracts the user part of a SIP, SIPS or TEL URI, e.g. `+41441234567`
/// from `sip:+41441234567@host;user=phone`, `0441234567` from
/// `"Bob" <sip:0441234567@1.2.3.4:5060>`, `+41441234567` from
/// `tel:+41-44-123-45-67`. Percent escapes are decoded and, for phone
/// numbers, visual separators (`-`, `.`, `(`, `)`, spaces) removed.
///
/// Returns `None` for anonymous callers (`anonymous`, `restricted`, ...,
/// or any user at `anonymous.invalid`), for URIs without a user part
/// (`sip:pbx.example`) and for empty input. A string without a scheme is
/// taken as `user@host` or as a bare user.
#[must_use]
pub fn user_of(uri: &str) -> Option<String> {
    let uri = bare_uri(uri);
    let (scheme, rest) = match uri.split_once(':') {
        Some((s, r))
            if ["sip", "sips", "tel"]
                .iter()
                .any(|k| s.trim().eq_ignore_ascii_case(k)) =>
        {
            (s.trim().to_ascii_lowercase(), r)
        }
        _ => (String::new(), uri),
    };
    let (user, host) = if scheme == "tel" {
        (rest.split(';').next().unwrap_or(""), "")
    } else if let Some((userinfo, hostport)) = rest.rsplit_once('@') {
        // user[:password][;user-params]
        let user = userinfo.split(':').next().unwrap_or("");
        (user.split(';').next().unwrap_or(""), hostport)
    } else if scheme.is_empty() {
        (rest.split(';').next().unwrap_or(""), "")
    } else {
        return None; // sip:host, no user
    };
    let host = host.split([';', ':', '?']).next().unwrap_or("");
    if host.eq_ignore_ascii_case("anonymous.invalid") {
        return None;
    }
    let user = percent_decode(user.trim());
    let looks_like_number = !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_digit() || "+*#-.() ".contains(c))
        && user.chars().any(|c| c.is_ascii_digit());
    let user = if looks_like_number {
        user.chars()
            .filter(|c| !"-.() ".contains(*c))
            .collect::<String>()
    } else {
        user
    };
    if user.is_empty() || ANONYMOUS_USERS.iter().any(|a| user.eq_ignore_ascii_case(a)) {
        return None;
    }
    Some(user)
}

/// The URI alone: without display name, angle brackets and surrounding
/// space (`"Bob" <sip:b@h>;tag=1` -> `sip:b@h`).
fn bare_uri(s: &str) -> &str {
    let s = s.trim();
    match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].trim(),
        _ => s,
    }
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (hex_value(bytes.get(i + 1)), hex_value(bytes.get(i + 2)))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: Option<&u8>) -> Option<u8> {
    char::from(*b?)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A normalised change of one call on the monitored number, derived by
/// [`Tracker::observe`]. Each kind is emitted at most once per dialog, in
/// the order `Ringing`, `Answered`, then `Ended` or `Missed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// An incoming call started ringing (first trying/proceeding/early, or a
    /// dialog first seen already confirmed).
    Ringing {
        /// The dialog's `id`.
        dialog_id: String,
        /// The dialog's `call-id`, for correlating with calls the host
        /// placed itself.
        call_id: Option<String>,
        /// The caller: the bare remote identity URI (falling back to the
        /// remote target), `None` for anonymous or unknown callers.
        remote: Option<String>,
        /// The dialog's direction as sent (`Recipient`, or `None` when the
        /// PBX omits it).
        direction: Option<DialogDirection>,
    },
    /// The call was answered (confirmed).
    Answered {
        /// The dialog's `id`.
        dialog_id: String,
        /// The dialog's `call-id`.
        call_id: Option<String>,
        /// The device that picked up: the last local `<target>` the PBX
        /// reported for this dialog that is not just the monitored address
        /// (Kamailio sends the answering phone's contact while it rings,
        /// then the address of record again), without URI parameters.
        device: Option<String>,
    },
    /// An answered call ended.
    Ended {
        /// The dialog's `id`.
        dialog_id: String,
        /// The dialog's `call-id`.
        call_id: Option<String>,
        /// Talk time: from answer to end, in milliseconds.
        duration_ms: u64,
        /// `event` of the terminated `<state>`, if sent.
        event: Option<String>,
    },
    /// A call ended without being answered.
    Missed {
        /// The dialog's `id`.
        dialog_id: String,
        /// The dialog's `call-id`.
        call_id: Option<String>,
        /// `event` of the terminated `<state>` (`cancelled`, `rejected`,
        /// `replaced`, ...), if sent.
        event: Option<String>,
    },
}

/// Where a tracked dialog stands.
#[derive(Debug, Clone)]
struct Tracked {
    call_id: Option<String>,
    /// When it was answered (ms, the caller's clock); `None` while ringing.
    answered_at: Option<u64>,
    /// When it finished or was first seen finished; `None` while alive.
    finished_at: Option<u64>,
    /// Last time a document mentioned it.
    last_seen: u64,
    /// The last device contact seen on the local side.
    device: Option<String>,
}

/// Turns successive [`DialogInfo`] documents about one monitored number into
/// [`Transition`]s.
///
/// Only incoming calls are tracked: dialogs whose direction is `Recipient`
/// or not given. Each transition is emitted once per dialog even when later
/// NOTIFYs repeat the state; a dialog first seen already terminated (a
/// finished call in a new subscription's first report) emits nothing. For a
/// `Full` document, a live dialog that is no longer listed is taken as
/// terminated (unless the document's version is older than the last one
/// seen, i.e. delivered out of order). Finished dialogs are remembered for
/// [`Tracker::FINISHED_TTL_MS`] to suppress repeats, and at most
/// [`Tracker::MAX_DIALOGS`] dialogs are kept.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    dialogs: HashMap<String, Tracked>,
    last_version: Option<u64>,
}

impl Tracker {
    /// How long a finished dialog is remembered (10 minutes).
    pub const FINISHED_TTL_MS: u64 = 10 * 60 * 1000;
    /// How long a live dialog that no document mentions any more is kept
    /// (12 hours) before it is forgotten without a transition.
    pub const SILENT_TTL_MS: u64 = 12 * 60 * 60 * 1000;
    /// Most dialogs remembered at once; the least recently seen go first.
    pub const MAX_DIALOGS: usize = 1000;

    /// A tracker with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Call after (re-)subscribing: versions restart with a new
    /// subscription, so the out-of-order check starts afresh. Dialogs stay
    /// remembered, so repeats in the new subscription's first report are
    /// still suppressed.
    pub fn new_subscription(&mut self) {
        self.last_version = None;
    }

    /// Number of dialogs currently remembered (live and recently finished).
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    /// Whether no dialog is remembered.
    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// Dialog ids of calls currently ringing or answered.
    pub fn live(&self) -> impl Iterator<Item = &str> {
        self.dialogs
            .iter()
            .filter(|(_, t)| t.finished_at.is_none())
            .map(|(id, _)| id.as_str())
    }

    /// Feeds one document; `now_ms` is any monotonic millisecond clock
    /// (used for durations and expiry). Returns the transitions it causes,
    /// in document order.
    #[must_use = "the transitions are the tracker's output"]
    pub fn observe(&mut self, info: &DialogInfo, now_ms: u64) -> Vec<Transition> {
        let mut out = Vec::new();
        let in_order = match (info.version, self.last_version) {
            (Some(v), Some(last)) => v >= last,
            _ => true,
        };
        if in_order && info.version.is_some() {
            self.last_version = info.version;
        }

        for d in &info.dialogs {
            if d.direction == Some(DialogDirection::Initiator) {
                continue;
            }
            self.observe_dialog(d, now_ms, &mut out);
        }

        if info.state == InfoState::Full && in_order {
            let listed: std::collections::HashSet<&str> =
                info.dialogs.iter().map(|d| d.id.as_str()).collect();
            let mut gone: Vec<String> = self
                .dialogs
                .iter()
                .filter(|(id, t)| t.finished_at.is_none() && !listed.contains(id.as_str()))
                .map(|(id, _)| id.clone())
                .collect();
            gone.sort();
            for id in gone {
                if let Some(t) = self.dialogs.get_mut(&id) {
                    out.push(finish(&id, t, None, now_ms));
                }
            }
        }

        self.prune(now_ms);
        out
    }

    fn observe_dialog(&mut self, d: &Dialog, now_ms: u64, out: &mut Vec<Transition>) {
        if let Some(t) = self.dialogs.get_mut(&d.id) {
            t.last_seen = now_ms;
            if t.finished_at.is_some() {
                return; // already reported (or stale): nothing more
            }
            if let Some(dev) = device_of(d) {
                t.device = Some(dev);
            }
            match d.state {
                s if s.is_ringing() => {}
                DialogState::Confirmed => {
                    if t.answered_at.is_none() {
                        t.answered_at = Some(answered_at(d, now_ms));
                        out.push(Transition::Answered {
                            dialog_id: d.id.clone(),
                            call_id: t.call_id.clone(),
                            device: t.device.clone(),
                        });
                    }
                }
                _ => out.push(finish(&d.id, t, d.event.clone(), now_ms)),
            }
            return;
        }

        // first sight of this dialog
        let mut t = Tracked {
            call_id: d.call_id.clone(),
            answered_at: None,
            finished_at: None,
            last_seen: now_ms,
            device: device_of(d),
        };
        if d.state == DialogState::Terminated {
            // a call that ended before we watched: remember, report nothing
            t.finished_at = Some(now_ms);
            self.dialogs.insert(d.id.clone(), t);
            return;
        }
        out.push(Transition::Ringing {
            dialog_id: d.id.clone(),
            call_id: d.call_id.clone(),
            remote: remote_of(d),
            direction: d.direction,
        });
        if d.state == DialogState::Confirmed {
            t.answered_at = Some(answered_at(d, now_ms));
            out.push(Transition::Answered {
                dialog_id: d.id.clone(),
                call_id: d.call_id.clone(),
                device: t.device.clone(),
            });
        }
        self.dialogs.insert(d.id.clone(), t);
    }

    fn prune(&mut self, now_ms: u64) {
        self.dialogs.retain(|_, t| match t.finished_at {
            Some(at) => now_ms.saturating_sub(at) < Self::FINISHED_TTL_MS,
            None => now_ms.saturating_sub(t.last_seen) < Self::SILENT_TTL_MS,
        });
        if self.dialogs.len() > Self::MAX_DIALOGS {
            let mut by_age: Vec<(bool, u64, String)> = self
                .dialogs
                .iter()
                .map(|(id, t)| (t.finished_at.is_none(), t.last_seen, id.clone()))
                .collect();
            // finished before live, then least recently seen first
            by_age.sort();
            let excess = self.dialogs.len() - Self::MAX_DIALOGS;
            for (_, _, id) in by_age.into_iter().take(excess) {
                self.dialogs.remove(&id);
            }
        }
    }
}

fn answered_at(d: &Dialog, now_ms: u64) -> u64 {
    d.duration
        .map_or(now_ms, |s| now_ms.saturating_sub(s.saturating_mul(1000)))
}

fn finish(id: &str, t: &mut Tracked, event: Option<String>, now_ms: u64) -> Transition {
    t.finished_at = Some(now_ms);
    t.last_seen = now_ms;
    match t.answered_at {
        Some(at) => Transition::Ended {
            dialog_id: id.to_string(),
            call_id: t.call_id.clone(),
            duration_ms: now_ms.saturating_sub(at),
            event,
        },
        None => Transition::Missed {
            dialog_id: id.to_string(),
            call_id: t.call_id.clone(),
            event,
        },
    }
}

/// The local side's device contact, when the PBX names one beyond the
/// monitored address itself (URI parameters dropped).
fn device_of(d: &Dialog) -> Option<String> {
    let p = d.local.as_ref()?;
    let target = bare_uri(p.target.as_deref()?);
    let target = target.split(';').next().unwrap_or(target).trim();
    let identity = p.identity.as_deref().map(bare_uri).unwrap_or_default();
    let identity = identity.split(';').next().unwrap_or(identity).trim();
    (!target.is_empty() && !target.eq_ignore_ascii_case(identity)).then(|| target.to_string())
}

/// The caller as a bare URI, `None` when anonymous or unknown.
fn remote_of(d: &Dialog) -> Option<String> {
    let p = d.remote.as_ref()?;
    let uri = p.identity.as_deref().or(p.target.as_deref())?;
    user_of(uri)?;
    Some(bare_uri(uri).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bodies captured from Kamailio 5.6.3 on the tests/sip bench (SIPp
    // subscribe.xml logs), verbatim apart from trailing whitespace.

    /// Answered call from +41791234567 to 41441234567 (SIPp uac_call -> uas_answer), watched by a fresh subscription.
    const ANSWERED: [&str; 5] = [
        r#""#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="2" state="full" entity="sip:41441234567@127.0.0.1">
  <dialog id="padi-6b073eab-18af-1" call-id="1-6350@127.0.0.1" direction="recipient">
    <state>Trying</state>
    <remote>
      <identity>sip:+41791234567@pstn.invalid</identity>
      <target uri="sip:+41791234567@pstn.invalid"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </local>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full" entity="sip:41441234567@127.0.0.1">
  <dialog id="padi-6b073eab-18af-1" call-id="1-6350@127.0.0.1" local-tag="6347A1" remote-tag="6350C1" direction="recipient">
    <state>early</state>
    <remote>
      <identity>sip:+41791234567@pstn.invalid</identity>
      <target uri="sip:+41791234567@127.0.0.1:5080;transport=UDP"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:service@127.0.0.1:5071;transport=UDP"/>
    </local>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="4" state="full" entity="sip:41441234567@127.0.0.1">
  <dialog id="padi-6b073eab-18af-1" call-id="1-6350@127.0.0.1" direction="recipient">
    <state>confirmed</state>
    <remote>
      <identity>sip:+41791234567@pstn.invalid</identity>
      <target uri="sip:+41791234567@127.0.0.1:5080;transport=UDP"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </local>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="5" state="full" entity="sip:41441234567@127.0.0.1">
  <dialog id="padi-6b073eab-18af-1" call-id="1-6350@127.0.0.1" direction="recipient">
    <state>terminated</state>
    <remote>
      <identity>sip:+41791234567@pstn.invalid</identity>
      <target uri="sip:+41791234567@127.0.0.1:5080;transport=UDP"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </local>
  </dialog>
</dialog-info>"#,
    ];

    /// Anonymous call to 41441234567 cancelled while ringing (uac_cancel -> uas_noanswer); a new subscription right after the ANSWERED call, so the first report lists that call as terminated (stale) and keeps repeating it.
    const MISSED: [&str; 4] = [
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" entity="sip:41441234567@127.0.0.1">
  <dialog id="padi-6b073eab-18af-1" call-id="1-6350@127.0.0.1" direction="recipient">
    <state>terminated</state>
    <remote>
      <identity>sip:+41791234567@pstn.invalid</identity>
      <target uri="sip:+41791234567@127.0.0.1:5080;transport=UDP"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </local>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="2" state="full" entity="sip:41441234567@127.0.0.1">
  <dialog id="padi-6b073eab-18ae-1" call-id="1-6442@127.0.0.1" direction="recipient">
    <state>Trying</state>
    <remote>
      <identity>sip:anonymous@anonymous.invalid</identity>
      <target uri="sip:anonymous@anonymous.invalid"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </local>
  </dialog>
  <dialog id="padi-6b073eab-18af-1" call-id="1-6350@127.0.0.1" direction="recipient">
    <state>terminated</state>
    <remote>
      <identity>sip:+41791234567@pstn.invalid</identity>
      <target uri="sip:+41791234567@127.0.0.1:5080;transport=UDP"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </local>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full" entity="sip:41441234567@127.0.0.1">
  <dialog id="padi-6b073eab-18ae-1" call-id="1-6442@127.0.0.1" local-tag="6437N1" remote-tag="6442X1" direction="recipient">
    <state>early</state>
    <remote>
      <identity>sip:anonymous@anonymous.invalid</identity>
      <target uri="sip:anonymous@127.0.0.1:5080;transport=UDP"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:service@127.0.0.1:5071;transport=UDP"/>
    </local>
  </dialog>
  <dialog id="padi-6b073eab-18af-1" call-id="1-6350@127.0.0.1" direction="recipient">
    <state>terminated</state>
    <remote>
      <identity>sip:+41791234567@pstn.invalid</identity>
      <target uri="sip:+41791234567@127.0.0.1:5080;transport=UDP"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </local>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="4" state="full" entity="sip:41441234567@127.0.0.1">
  <dialog id="padi-6b073eab-18ae-1" call-id="1-6442@127.0.0.1" direction="recipient">
    <state>terminated</state>
    <remote>
      <identity>sip:anonymous@anonymous.invalid</identity>
      <target uri="sip:anonymous@127.0.0.1:5080;transport=UDP"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </local>
  </dialog>
  <dialog id="padi-6b073eab-18af-1" call-id="1-6350@127.0.0.1" direction="recipient">
    <state>terminated</state>
    <remote>
      <identity>sip:+41791234567@pstn.invalid</identity>
      <target uri="sip:+41791234567@127.0.0.1:5080;transport=UDP"/>
    </remote>
    <local>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </local>
  </dialog>
</dialog-info>"#,
    ];

    /// Subscriber alice (watched) calls 41441234567, answered.
    const OUTGOING: [&str; 5] = [
        r#""#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="2" state="full" entity="sip:alice@127.0.0.1">
  <dialog id="padi-6b073eab-18af-2" call-id="1-6481@127.0.0.1" direction="initiator">
    <state>Trying</state>
    <remote>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </remote>
    <local>
      <identity>sip:alice@127.0.0.1</identity>
      <target uri="sip:alice@127.0.0.1"/>
    </local>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full" entity="sip:alice@127.0.0.1">
  <dialog id="padi-6b073eab-18af-2" call-id="1-6481@127.0.0.1" local-tag="6481C1" remote-tag="6477A1" direction="initiator">
    <state>early</state>
    <remote>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1:5071;transport=UDP"/>
    </remote>
    <local>
      <identity>sip:alice@127.0.0.1</identity>
      <target uri="sip:alice@127.0.0.1:5080;transport=UDP"/>
    </local>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="4" state="full" entity="sip:alice@127.0.0.1">
  <dialog id="padi-6b073eab-18af-2" call-id="1-6481@127.0.0.1" direction="initiator">
    <state>confirmed</state>
    <remote>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </remote>
    <local>
      <identity>sip:alice@127.0.0.1</identity>
      <target uri="sip:alice@127.0.0.1:5080;transport=UDP"/>
    </local>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="5" state="full" entity="sip:alice@127.0.0.1">
  <dialog id="padi-6b073eab-18af-2" call-id="1-6481@127.0.0.1" direction="initiator">
    <state>terminated</state>
    <remote>
      <identity>sip:41441234567@127.0.0.1</identity>
      <target uri="sip:41441234567@127.0.0.1"/>
    </remote>
    <local>
      <identity>sip:alice@127.0.0.1</identity>
      <target uri="sip:alice@127.0.0.1:5080;transport=UDP"/>
    </local>
  </dialog>
</dialog-info>"#,
    ];

    /// RFC 4235 section 6 style body: display names, event/code, duration,
    /// session-description and target params.
    const RFC_STYLE: &str = r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"
             version="7" state="partial"
             entity="sip:bob@example.com">
  <dialog id="zxcvbnm3" call-id="a84b4c76e66710"
          local-tag="1928301774" remote-tag="8348"
          direction="recipient">
    <state event="Rejected" code="486">terminated</state>
    <duration>12</duration>
    <local>
      <identity display="Bob &amp; Co">sip:bob@example.com</identity>
      <target uri="sip:bob@pc33.example.com">
        <param pname="+sip.rendering" pval="yes"/>
      </target>
      <session-description type="application/sdp">v=0 o=bob</session-description>
    </local>
    <remote>
      <identity display="Alice">sip:alice@example.com</identity>
      <target uri="sip:alice@pc33.atlanta.example.com"/>
    </remote>
    <route-set><hop>sip:proxy.example.com;lr</hop></route-set>
  </dialog>
</dialog-info>"#;

    fn doc(version: u64, state: &str, dialogs: &[(&str, &str, &str)]) -> DialogInfo {
        // (id, direction, state)
        let mut xml = format!(
            r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="{state}" entity="sip:41441234567@pbx">"#
        );
        for (id, dir, st) in dialogs {
            xml.push_str(&format!(
                r#"<dialog id="{id}" call-id="c-{id}" direction="{dir}"><state>{st}</state><remote><identity>sip:+41790000000@pstn</identity></remote></dialog>"#
            ));
        }
        xml.push_str("</dialog-info>");
        parse(&xml).unwrap().unwrap()
    }

    fn feed(
        tracker: &mut Tracker,
        bodies: &[&str],
        start_ms: u64,
        step_ms: u64,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            if let Some(info) = parse(body).unwrap() {
                out.extend(tracker.observe(&info, start_ms + step_ms * i as u64));
            }
        }
        out
    }

    #[test]
    fn empty_bodies_are_none() {
        assert_eq!(parse(ANSWERED[0]).unwrap(), None);
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("  \r\n\t ").unwrap(), None);
        assert_eq!(parse("\u{feff}").unwrap(), None);
    }

    #[test]
    fn kamailio_trying_capital_t() {
        let info = parse(ANSWERED[1]).unwrap().unwrap();
        assert_eq!(info.version, Some(2));
        assert_eq!(info.state, InfoState::Full);
        assert_eq!(info.entity, "sip:41441234567@127.0.0.1");
        assert_eq!(user_of(&info.entity).as_deref(), Some("41441234567"));
        let [d] = info.dialogs.as_slice() else {
            panic!("one dialog expected: {info:?}")
        };
        assert_eq!(d.id, "padi-6b073eab-18af-1");
        assert_eq!(d.call_id.as_deref(), Some("1-6350@127.0.0.1"));
        assert_eq!(d.direction, Some(DialogDirection::Recipient));
        assert_eq!(d.state, DialogState::Trying);
        assert_eq!(d.event, None);
        assert_eq!(d.duration, None);
        assert_eq!(
            d.remote,
            Some(Participant {
                identity: Some("sip:+41791234567@pstn.invalid".into()),
                display: None,
                target: Some("sip:+41791234567@pstn.invalid".into()),
            })
        );
        assert_eq!(
            d.local.as_ref().and_then(|p| p.identity.as_deref()),
            Some("sip:41441234567@127.0.0.1")
        );
    }

    #[test]
    fn kamailio_states_in_order() {
        let states: Vec<DialogState> = ANSWERED[1..]
            .iter()
            .map(|b| parse(b).unwrap().unwrap().dialogs[0].state)
            .collect();
        assert_eq!(
            states,
            [
                DialogState::Trying,
                DialogState::Early,
                DialogState::Confirmed,
                DialogState::Terminated
            ]
        );
        // early carries the phone's contact as local target
        let early = parse(ANSWERED[2]).unwrap().unwrap();
        assert_eq!(
            early.dialogs[0].local.as_ref().unwrap().target.as_deref(),
            Some("sip:service@127.0.0.1:5071;transport=UDP")
        );
        // confirmed and terminated lost their tags: still parsed the same
        for body in &ANSWERED[3..] {
            assert!(!body.contains("local-tag"));
            let info = parse(body).unwrap().unwrap();
            assert_eq!(info.dialogs[0].id, "padi-6b073eab-18af-1");
        }
    }

    #[test]
    fn answered_call_transitions() {
        let mut t = Tracker::new();
        let out = feed(&mut t, &ANSWERED, 1_000, 1_000);
        assert_eq!(
            out,
            [
                Transition::Ringing {
                    dialog_id: "padi-6b073eab-18af-1".into(),
                    call_id: Some("1-6350@127.0.0.1".into()),
                    remote: Some("sip:+41791234567@pstn.invalid".into()),
                    direction: Some(DialogDirection::Recipient),
                },
                Transition::Answered {
                    dialog_id: "padi-6b073eab-18af-1".into(),
                    call_id: Some("1-6350@127.0.0.1".into()),
                    // The answering phone (SIPp's uas on 5071), from the early report.
                    device: Some("sip:service@127.0.0.1:5071".into()),
                },
                Transition::Ended {
                    dialog_id: "padi-6b073eab-18af-1".into(),
                    call_id: Some("1-6350@127.0.0.1".into()),
                    duration_ms: 1_000,
                    event: None,
                },
            ]
        );
        assert_eq!(t.live().count(), 0);
    }

    #[test]
    fn repeated_notifies_emit_once() {
        let mut t = Tracker::new();
        let mut doubled = Vec::new();
        for b in ANSWERED {
            doubled.push(b);
            doubled.push(b);
        }
        let out = feed(&mut t, &doubled, 0, 500);
        let kinds: Vec<&str> = out
            .iter()
            .map(|tr| match tr {
                Transition::Ringing { .. } => "ringing",
                Transition::Answered { .. } => "answered",
                Transition::Ended { .. } => "ended",
                Transition::Missed { .. } => "missed",
            })
            .collect();
        assert_eq!(kinds, ["ringing", "answered", "ended"]);
        // the finished call keeps being reported: still nothing
        assert!(feed(&mut t, &ANSWERED[1..], 60_000, 10).is_empty());
    }

    #[test]
    fn missed_anonymous_call_with_stale_dialog() {
        let first = parse(MISSED[0]).unwrap().unwrap();
        assert_eq!(first.dialogs.len(), 1);
        assert_eq!(first.dialogs[0].state, DialogState::Terminated);
        assert_eq!(parse(MISSED[1]).unwrap().unwrap().dialogs.len(), 2);

        let mut t = Tracker::new();
        // the stale finished call in the first report emits nothing
        assert!(t.observe(&first, 0).is_empty());
        let out = feed(&mut t, &MISSED[1..], 100, 1_500);
        assert_eq!(
            out,
            [
                Transition::Ringing {
                    dialog_id: "padi-6b073eab-18ae-1".into(),
                    call_id: Some("1-6442@127.0.0.1".into()),
                    remote: None,
                    direction: Some(DialogDirection::Recipient),
                },
                Transition::Missed {
                    dialog_id: "padi-6b073eab-18ae-1".into(),
                    call_id: Some("1-6442@127.0.0.1".into()),
                    event: None,
                },
            ]
        );
    }

    #[test]
    fn anonymous_identity_parsed_but_not_reported() {
        let info = parse(MISSED[1]).unwrap().unwrap();
        let d = &info.dialogs[0];
        assert_eq!(d.state, DialogState::Trying);
        let remote = d.remote.as_ref().unwrap();
        assert_eq!(
            remote.identity.as_deref(),
            Some("sip:anonymous@anonymous.invalid")
        );
        assert_eq!(user_of(remote.identity.as_deref().unwrap()), None);
        assert_eq!(user_of(remote.target.as_deref().unwrap()), None);
    }

    #[test]
    fn same_tracker_across_subscriptions() {
        // one tracker sees the ANSWERED call, then a re-subscription whose
        // reports repeat that call as terminated next to a new missed call
        let mut t = Tracker::new();
        assert_eq!(feed(&mut t, &ANSWERED, 0, 1_000).len(), 3);
        t.new_subscription();
        let out = feed(&mut t, &MISSED, 10_000, 1_000);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(&out[0], Transition::Ringing { dialog_id, .. } if dialog_id == "padi-6b073eab-18ae-1")
        );
        assert!(
            matches!(&out[1], Transition::Missed { dialog_id, .. } if dialog_id == "padi-6b073eab-18ae-1")
        );
    }

    #[test]
    fn outgoing_calls_are_not_tracked() {
        let info = parse(OUTGOING[1]).unwrap().unwrap();
        assert_eq!(info.entity, "sip:alice@127.0.0.1");
        assert_eq!(info.dialogs[0].direction, Some(DialogDirection::Initiator));
        assert_eq!(
            info.dialogs[0].remote.as_ref().unwrap().identity.as_deref(),
            Some("sip:41441234567@127.0.0.1")
        );
        // the display name "Alice Example" was sent in From but is dropped
        assert_eq!(info.dialogs[0].local.as_ref().unwrap().display, None);
        let mut t = Tracker::new();
        assert!(feed(&mut t, &OUTGOING, 0, 1_000).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn rfc_style_document() {
        let info = parse(RFC_STYLE).unwrap().unwrap();
        assert_eq!(info.version, Some(7));
        assert_eq!(info.state, InfoState::Partial);
        let d = &info.dialogs[0];
        assert_eq!(d.id, "zxcvbnm3");
        assert_eq!(d.state, DialogState::Terminated);
        assert_eq!(d.event.as_deref(), Some("rejected"));
        assert_eq!(d.duration, Some(12));
        let local = d.local.as_ref().unwrap();
        assert_eq!(local.display.as_deref(), Some("Bob & Co"));
        assert_eq!(local.target.as_deref(), Some("sip:bob@pc33.example.com"));
        let remote = d.remote.as_ref().unwrap();
        assert_eq!(remote.display.as_deref(), Some("Alice"));
        assert_eq!(remote.identity.as_deref(), Some("sip:alice@example.com"));
    }

    #[test]
    fn namespace_prefixes_and_case() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<di:dialog-info xmlns:di="urn:ietf:params:xml:ns:dialog-info" version="3" state="FULL" entity="sip:100@pbx">
  <di:dialog id="d1" call-id="c1" direction="Recipient">
    <di:state>CONFIRMED</di:state>
    <di:remote><di:identity display="X">&lt;sip:0441234567@10.0.0.1:5060&gt;</di:identity></di:remote>
  </di:dialog>
</di:dialog-info>"#;
        let info = parse(body).unwrap().unwrap();
        assert_eq!(info.state, InfoState::Full);
        let d = &info.dialogs[0];
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.direction, Some(DialogDirection::Recipient));
        let id = d.remote.as_ref().unwrap().identity.as_deref().unwrap();
        assert_eq!(id, "<sip:0441234567@10.0.0.1:5060>");
        assert_eq!(user_of(id).as_deref(), Some("0441234567"));

        // no namespace at all, partial in upper case
        let info = parse(r#"<dialog-info version="1" state="PARTIAL" entity="sip:1@h"/>"#)
            .unwrap()
            .unwrap();
        assert_eq!(info.state, InfoState::Partial);
        assert!(info.dialogs.is_empty());
    }

    #[test]
    fn missing_attributes_and_unknown_elements() {
        let body = r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info">
  <extension><dialog id="ignored"><state>early</state></dialog></extension>
  <dialog call-id="only-call-id">
    <vendor:stuff xmlns:vendor="urn:x"><state>confirmed</state></vendor:stuff>
    <state>early</state>
    <remote><target uri="sip:+41441234567@gw;user=phone"/></remote>
  </dialog>
  <dialog><state>early</state></dialog>
  <dialog id="bad-state"><state>ringing-ish</state></dialog>
  <dialog id="no-state"/>
  <dialog id="d2" direction="sideways"><state><![CDATA[proceeding]]></state><duration>x</duration></dialog>
</dialog-info>"#;
        let info = parse(body).unwrap().unwrap();
        assert_eq!(info.version, None);
        assert_eq!(info.state, InfoState::Full);
        assert_eq!(info.entity, "");
        let ids: Vec<&str> = info.dialogs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["only-call-id", "d2"]);
        let d = &info.dialogs[0];
        assert_eq!(
            d.state,
            DialogState::Early,
            "nested unknown <state> ignored"
        );
        assert_eq!(d.direction, None);
        let d2 = &info.dialogs[1];
        assert_eq!(d2.state, DialogState::Proceeding);
        assert_eq!(d2.direction, None);
        assert_eq!(d2.duration, None);

        // unknown direction is tracked as incoming; remote falls back to target
        let mut t = Tracker::new();
        let out = t.observe(&info, 0);
        assert_eq!(
            out[0],
            Transition::Ringing {
                dialog_id: "only-call-id".into(),
                call_id: Some("only-call-id".into()),
                remote: Some("sip:+41441234567@gw;user=phone".into()),
                direction: None,
            }
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn unknown_markup_inside_text_elements() {
        let body = r#"<dialog-info version="1" entity="sip:1@h">
  <dialog id="n"><state>con<x:ext xmlns:x="urn:x">junk</x:ext>firmed<!-- c --></state>
  <remote><identity>sip:2@h<y/></identity></remote></dialog></dialog-info>"#;
        let info = parse(body).unwrap().unwrap();
        assert_eq!(info.dialogs[0].state, DialogState::Confirmed);
        assert_eq!(
            info.dialogs[0].remote.as_ref().unwrap().identity.as_deref(),
            Some("sip:2@h")
        );
    }

    #[test]
    fn references_in_text_and_attributes() {
        let body = r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" entity="sip:a@h">
<dialog id="a&amp;b" call-id="x&#64;y"><state>&#101;arly</state>
<remote><identity display="&quot;Q&quot; &#x4F;">sip:%2B41441234567@h?x=1&amp;y=2</identity></remote></dialog></dialog-info>"#;
        let info = parse(body).unwrap().unwrap();
        let d = &info.dialogs[0];
        assert_eq!(d.id, "a&b");
        assert_eq!(d.call_id.as_deref(), Some("x@y"));
        assert_eq!(d.state, DialogState::Early);
        let r = d.remote.as_ref().unwrap();
        assert_eq!(r.display.as_deref(), Some("\"Q\" O"));
        assert_eq!(r.identity.as_deref(), Some("sip:%2B41441234567@h?x=1&y=2"));
        assert_eq!(
            user_of(r.identity.as_deref().unwrap()).as_deref(),
            Some("+41441234567")
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse("<dialog-info><dialog></dialog-info"),
            Err(ParseError::Xml { .. }) | Err(ParseError::Truncated)
        ));
        assert!(matches!(parse("<<<"), Err(ParseError::Xml { .. })));
        assert_eq!(
            parse("<presence xmlns='urn:ietf:params:xml:ns:pidf'/>"),
            Err(ParseError::WrongRoot("presence".into()))
        );
        assert_eq!(parse(r#"<?xml version="1.0"?>"#), Err(ParseError::NoRoot));
        assert_eq!(
            parse(r#"<dialog-info version="1"><dialog id="a"><state>early</state></dialog>"#),
            Err(ParseError::Truncated)
        );
        assert!(parse("not xml at all").is_err());
    }

    #[test]
    fn truncated_documents_are_errors_at_every_cut() {
        for body in ANSWERED
            .iter()
            .chain(&MISSED)
            .chain(&OUTGOING)
            .chain([&RFC_STYLE])
        {
            let body = body.trim_end();
            for cut in (1..body.len()).filter(|&i| body.is_char_boundary(i)) {
                let prefix = &body[..cut];
                match parse(prefix) {
                    Ok(None) if prefix.trim().is_empty() => {}
                    Ok(other) => panic!("a cut at byte {cut} parsed as {other:?}: {prefix}"),
                    Err(e) => assert!(
                        matches!(
                            e,
                            ParseError::Truncated | ParseError::Xml { .. } | ParseError::NoRoot
                        ),
                        "cut at {cut}: {e}"
                    ),
                }
            }
        }
        assert_eq!(
            parse(&ANSWERED[2][..ANSWERED[2].len() / 2])
                .unwrap_err()
                .to_string(),
            "dialog-info document is truncated"
        );
    }

    #[test]
    fn wrong_namespace_is_refused_with_the_expected_one_named() {
        let err = parse(
            r#"<dialog-info xmlns="urn:ietf:params:xml:ns:pidf" version="1" entity="sip:1@h"/>"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ParseError::WrongNamespace("urn:ietf:params:xml:ns:pidf".into())
        );
        assert!(err.to_string().contains(DIALOG_INFO_NS), "{err}");
        // the root's own prefix decides, not another declaration on it
        assert_eq!(
            parse(
                r#"<di:dialog-info xmlns:di="urn:example:other" xmlns="urn:ietf:params:xml:ns:dialog-info"/>"#
            ),
            Err(ParseError::WrongNamespace("urn:example:other".into()))
        );
        assert!(
            parse(r#"<di:dialog-info xmlns:di="urn:ietf:params:xml:ns:dialog-info" xmlns="urn:example:other"/>"#)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn huge_bodies_are_refused_before_parsing() {
        let dialog =
            r#"<dialog id="d" call-id="c" direction="recipient"><state>early</state></dialog>"#;
        let mut body = format!(r#"<dialog-info xmlns="{DIALOG_INFO_NS}" version="1">"#);
        while body.len() < 10 * 1024 * 1024 {
            body.push_str(dialog);
        }
        let err = parse(&body).unwrap_err();
        assert_eq!(err, ParseError::TooLarge(body.len()));
        assert!(err.to_string().contains("1048576-byte limit"), "{err}");
        // unclosed and unparseable: refused all the same, by size
        assert!(matches!(
            parse(&"<a>".repeat(4_000_000)),
            Err(ParseError::TooLarge(_))
        ));

        // a large but plausible document (1200 dialogs, ~110 KB) is read whole
        let mut body = format!(r#"<dialog-info xmlns="{DIALOG_INFO_NS}" version="1">"#);
        for i in 0..1200 {
            body.push_str(&format!(
                r#"<dialog id="d{i}" direction="recipient"><state>early</state></dialog>"#
            ));
        }
        body.push_str("</dialog-info>");
        assert_eq!(parse(&body).unwrap().unwrap().dialogs.len(), 1200);
        // so is one long value, up to the limit
        let long = format!(
            r#"<dialog-info version="1"><dialog id="{}"><state>early</state></dialog></dialog-info>"#,
            "x".repeat(MAX_BODY_BYTES - 200)
        );
        assert_eq!(
            parse(&long).unwrap().unwrap().dialogs[0].id.len(),
            MAX_BODY_BYTES - 200
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let body = format!(
            r#"<dialog-info xmlns="{DIALOG_INFO_NS}">{}"#,
            "<x>".repeat(100_000)
        );
        assert_eq!(parse(&body), Err(ParseError::TooDeep));
        // a closed deep document too, and inside a dialog
        let body = format!(
            r#"<dialog-info><dialog id="a"><state>early</state>{}{}</dialog></dialog-info>"#,
            "<ext>".repeat(MAX_DEPTH),
            "</ext>".repeat(MAX_DEPTH)
        );
        assert_eq!(parse(&body), Err(ParseError::TooDeep));
        // extensions a few levels deep are fine
        let body = format!(
            r#"<dialog-info><dialog id="a"><state>early</state>{}{}</dialog></dialog-info>"#,
            "<ext>".repeat(10),
            "</ext>".repeat(10)
        );
        assert_eq!(parse(&body).unwrap().unwrap().dialogs.len(), 1);
    }

    /// Per dialog: the transitions come Ringing, then at most one Answered,
    /// then Ended (only if answered) or Missed (only if not), nothing after.
    fn check_order(seen: &mut HashMap<String, Vec<&'static str>>, t: &Transition) {
        let (id, kind) = match t {
            Transition::Ringing { dialog_id, .. } => (dialog_id, "ringing"),
            Transition::Answered { dialog_id, .. } => (dialog_id, "answered"),
            Transition::Ended { dialog_id, .. } => (dialog_id, "ended"),
            Transition::Missed { dialog_id, .. } => (dialog_id, "missed"),
        };
        let history = seen.entry(id.clone()).or_default();
        let ok = matches!(
            (history.as_slice(), kind),
            ([], "ringing")
                | (["ringing"], "answered" | "missed")
                | (["ringing", "answered"], "ended")
        );
        assert!(ok, "dialog {id}: {kind} after {history:?}");
        history.push(kind);
    }

    /// A quick always-run relative of the fuzz target (host/fuzz): the
    /// captured bodies mutated by a fixed-seed generator (truncations, byte
    /// flips, spliced markup, repeated and removed spans). The parser never
    /// panics, and whatever it accepts keeps the tracker's order per dialog.
    #[test]
    fn mutated_bodies_never_panic_and_keep_the_transition_order() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        const FRAGMENTS: &[&str] = &[
            r#"<dialog id="x" direction="recipient">"#,
            "</dialog>",
            "<state>early</state>",
            "<state>confirmed</state>",
            "<state>terminated</state>",
            r#"<state event="rejected">terminated</state>"#,
            "<duration>99999999999999999999999</duration>",
            "<remote><identity>sip:+41790000000@x</identity></remote>",
            "&amp;",
            "&#x0;",
            "&#1114112;",
            "&bogus;",
            "<![CDATA[",
            "]]>",
            "<!--",
            "-->",
            "<?pi x?>",
            r#"<!DOCTYPE d [<!ENTITY e "boom">]>"#,
            "\u{0}",
            "\u{feff}",
            "é",
            r#" version="18446744073709551616""#,
            r#" state="partial""#,
            r#" xmlns="urn:example:other""#,
            "</dialog-info>",
        ];
        let corpus: Vec<&str> = ANSWERED
            .iter()
            .chain(&MISSED)
            .chain(&OUTGOING)
            .copied()
            .chain([RFC_STYLE])
            .collect();
        let mut rng = StdRng::seed_from_u64(4235);
        let mut tracker = Tracker::new();
        let mut seen = HashMap::new();
        let (mut parsed, mut refused) = (0, 0);
        for round in 0..5000u64 {
            let mut body = corpus[rng.random_range(0..corpus.len())]
                .as_bytes()
                .to_vec();
            for _ in 0..rng.random_range(1..=4) {
                let at = rng.random_range(0..=body.len());
                match rng.random_range(0..5) {
                    0 => body.truncate(at),
                    1 if !body.is_empty() => {
                        let i = rng.random_range(0..body.len());
                        body[i] = rng.random();
                    }
                    2 => {
                        let f = FRAGMENTS[rng.random_range(0..FRAGMENTS.len())];
                        body.splice(at..at, f.bytes());
                    }
                    3 => {
                        let end = rng.random_range(at..=body.len());
                        let span = body[at..end].to_vec();
                        body.splice(at..at, span);
                    }
                    _ => {
                        let end = rng.random_range(at..=body.len());
                        body.drain(at..end);
                    }
                }
            }
            match parse(&String::from_utf8_lossy(&body)) {
                Ok(Some(info)) => {
                    parsed += 1;
                    for t in tracker.observe(&info, round) {
                        check_order(&mut seen, &t);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    refused += 1;
                    let message = e.to_string();
                    assert!(message.contains("dialog-info"), "unclear error: {message}");
                }
            }
            if round % 100 == 0 {
                tracker.new_subscription();
            }
        }
        assert!(
            parsed > 500 && refused > 500,
            "mutations too tame or too wild: {parsed} parsed, {refused} refused"
        );
        assert!(seen.values().any(|h| h.len() == 3), "no full call survived");
        assert!(tracker.len() <= Tracker::MAX_DIALOGS);
    }

    #[test]
    fn partial_documents_do_not_end_unlisted_dialogs() {
        let mut t = Tracker::new();
        let out = t.observe(
            &doc(
                1,
                "full",
                &[("a", "recipient", "early"), ("b", "recipient", "early")],
            ),
            0,
        );
        assert_eq!(out.len(), 2);
        let out = t.observe(
            &doc(2, "partial", &[("a", "recipient", "confirmed")]),
            1_000,
        );
        assert_eq!(
            out,
            [Transition::Answered {
                dialog_id: "a".into(),
                call_id: Some("c-a".into()),
                device: None,
            }]
        );
        assert_eq!(t.live().count(), 2);
        let out = t.observe(
            &doc(3, "partial", &[("b", "recipient", "terminated")]),
            2_000,
        );
        assert_eq!(
            out,
            [Transition::Missed {
                dialog_id: "b".into(),
                call_id: Some("c-b".into()),
                event: None
            }]
        );
        let out = t.observe(
            &doc(4, "partial", &[("a", "recipient", "terminated")]),
            4_000,
        );
        assert_eq!(
            out,
            [Transition::Ended {
                dialog_id: "a".into(),
                call_id: Some("c-a".into()),
                duration_ms: 3_000,
                event: None
            }]
        );
    }

    #[test]
    fn full_documents_end_dialogs_that_vanish() {
        let mut t = Tracker::new();
        let _ = t.observe(
            &doc(
                1,
                "full",
                &[("a", "recipient", "confirmed"), ("b", "recipient", "early")],
            ),
            0,
        );
        // out-of-order older full document: no implicit ending
        let empty_old = parse(r#"<dialog-info version="0" state="full" entity="x"/>"#)
            .unwrap()
            .unwrap();
        assert!(t.observe(&empty_old, 500).is_empty());
        let out = t.observe(&doc(2, "full", &[]), 2_000);
        assert_eq!(
            out,
            [
                Transition::Ended {
                    dialog_id: "a".into(),
                    call_id: Some("c-a".into()),
                    duration_ms: 2_000,
                    event: None
                },
                Transition::Missed {
                    dialog_id: "b".into(),
                    call_id: Some("c-b".into()),
                    event: None
                },
            ]
        );
    }

    #[test]
    fn new_subscription_restarts_versions() {
        let mut t = Tracker::new();
        let _ = t.observe(&doc(9, "full", &[("a", "recipient", "early")]), 0);
        t.new_subscription();
        let out = t.observe(&doc(1, "full", &[]), 1_000);
        assert_eq!(
            out,
            [Transition::Missed {
                dialog_id: "a".into(),
                call_id: Some("c-a".into()),
                event: None
            }]
        );
    }

    #[test]
    fn first_seen_confirmed_rings_then_answers() {
        let body = r#"<dialog-info version="1" state="full" entity="sip:1@h">
  <dialog id="z" direction="recipient"><state>confirmed</state><duration>30</duration>
  <remote><identity>tel:+41-44-123-45-67</identity></remote></dialog></dialog-info>"#;
        let mut t = Tracker::new();
        let out = t.observe(&parse(body).unwrap().unwrap(), 100_000);
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[0], Transition::Ringing { remote: Some(r), .. } if r == "tel:+41-44-123-45-67")
        );
        assert!(matches!(&out[1], Transition::Answered { .. }));
        let out = t.observe(
            &doc(2, "partial", &[("z", "recipient", "terminated")]),
            110_000,
        );
        // answered 30 s before first sight
        assert!(matches!(
            &out[0],
            Transition::Ended {
                duration_ms: 40_000,
                ..
            }
        ));
    }

    #[test]
    fn rejected_call_is_missed_with_event() {
        let mut t = Tracker::new();
        let _ = t.observe(&doc(1, "full", &[("r", "recipient", "trying")]), 0);
        let info = parse(RFC_STYLE.replace("zxcvbnm3", "r").as_str())
            .unwrap()
            .unwrap();
        let out = t.observe(&info, 1_000);
        assert_eq!(
            out,
            [Transition::Missed {
                dialog_id: "r".into(),
                call_id: Some("c-r".into()),
                event: Some("rejected".into())
            }]
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Tracker::new();
        for i in 0..(Tracker::MAX_DIALOGS + 200) as u64 {
            let id = format!("d{i}");
            let _ = t.observe(&doc(2 * i, "partial", &[(&id, "recipient", "early")]), i);
            let _ = t.observe(
                &doc(2 * i + 1, "partial", &[(&id, "recipient", "terminated")]),
                i,
            );
        }
        assert!(t.len() <= Tracker::MAX_DIALOGS);
        // finished dialogs are forgotten after the TTL
        let later = Tracker::FINISHED_TTL_MS + 10_000;
        let _ = t.observe(&doc(1_000_000, "partial", &[]), later);
        assert!(t.is_empty());
        // live dialogs without news are dropped after SILENT_TTL_MS
        let _ = t.observe(
            &doc(1_000_001, "partial", &[("live", "recipient", "confirmed")]),
            later,
        );
        let _ = t.observe(
            &doc(1_000_002, "partial", &[]),
            later + Tracker::SILENT_TTL_MS,
        );
        assert!(t.is_empty());
    }

    #[test]
    fn user_of_forms() {
        let cases = [
            ("sip:+41441234567@host;user=phone", Some("+41441234567")),
            ("<sip:0441234567@1.2.3.4:5060>", Some("0441234567")),
            (
                "\"Bob\" <sip:0441234567@1.2.3.4:5060;transport=udp>;tag=x",
                Some("0441234567"),
            ),
            ("tel:+41441234567", Some("+41441234567")),
            (
                "tel:+41-44-123.45.67;phone-context=+41",
                Some("+41441234567"),
            ),
            ("TEL:+41441234567", Some("+41441234567")),
            ("sips:alice:secret@example.com", Some("alice")),
            ("sip:%2B41441234567@h", Some("+41441234567")),
            ("sip:41441234567;npdi@h", Some("41441234567")),
            ("sip:*97@pbx", Some("*97")),
            ("sip:%2b41%3x1@h", Some("+41%3x1")),
            ("sip:100%@h", Some("100%")),
            ("  sip:bob@example.com  ", Some("bob")),
            ("0441234567", Some("0441234567")),
            ("bob@example.com", Some("bob")),
            ("anonymous", None),
            ("sip:anonymous@anonymous.invalid", None),
            ("sip:Anonymous@pbx.example", None),
            ("sip:restricted@pbx", None),
            ("sip:+41441234567@anonymous.invalid", None),
            ("sip:pbx.example.com", None),
            ("sip:@h", None),
            ("", None),
            ("<>", None),
        ];
        for (uri, want) in cases {
            assert_eq!(user_of(uri).as_deref(), want, "{uri}");
        }
    }
}
