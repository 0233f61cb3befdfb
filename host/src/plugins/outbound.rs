//! Outbound HTTP for plugins: one client shared by every call, so that
//! connections to an app's servers stay open between events (keep-alive)
//! instead of a TCP connect — and for HTTPS a TLS handshake — per request.
//!
//! The policy hook ([`super::sandbox`]) has already checked the host against
//! the grants before a request gets here; the connector checks the addresses
//! it connects to against the operator's egress rules ([`super::egress`]).
//! One client per runtime, as the egress rules are the runtime's.
//!
//! Timeouts: the guest's connect timeout is capped at [`CONNECT_TIMEOUT`]
//! (the pool's connector is shared), its first-byte timeout applies as
//! asked; the plugin call's own deadline bounds the rest.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::egress::{Connector, Egress};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection is kept for the next event.
const IDLE: Duration = Duration::from_secs(60);

type Https = hyper_rustls::HttpsConnector<Connector>;

/// The plugins' HTTP client (cheap to clone: connections are shared).
#[derive(Clone)]
pub struct Outbound {
    client: Client<Https, WasiBody>,
}

impl Outbound {
    /// A client that connects only where `egress` permits.
    pub fn new(egress: &Egress) -> Self {
        let mut http = HttpConnector::new_with_resolver(egress.resolver());
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(Connector::new(http, egress.clone()));
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(IDLE)
                .pool_max_idle_per_host(64)
                .build(https),
        }
    }
}

/// Sends `request` (absolute URI) on a pooled connection of `out`.
pub async fn send(
    out: &Outbound,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<http::Response<WasiBody>, Error> {
    let first_byte = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(Duration::from_secs(600));
    let target = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    match tokio::time::timeout(first_byte, out.client.request(request)).await {
        Err(_) => Err(Error::ConnectionReadTimeout),
        Ok(Err(e)) => Err(classify(&target, e)),
        Ok(Ok(res)) => Ok(res.map(|b| b.map_err(Error::from).boxed_unsync())),
    }
}

/// Maps a client error to the wasi:http error a guest can act on, keeping
/// the cause readable.
fn classify(target: &str, e: hyper_util::client::legacy::Error) -> Error {
    use std::error::Error as _;
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Error::ConnectionRefused,
                std::io::ErrorKind::TimedOut => return Error::ConnectionTimeout,
                // Refused by the egress rules: the text names the address and the fix.
                std::io::ErrorKind::PermissionDenied => {
                    return Error::InternalError(Some(io.to_string()));
                }
                _ => {}
            }
        }
        cause = c.source();
    }
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    Error::InternalError(Some(format!("request to {target} failed: {text}")))
}
