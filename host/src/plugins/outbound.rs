//! Outbound HTTP for plugins: one client shared by every call, so that
//! connections to an app's servers stay open between events (keep-alive)
//! instead of a TCP connect — and for HTTPS a TLS handshake — per request.
//!
//! The policy hook ([`super::sandbox`]) has already checked the host before a
//! request gets here. Timeouts: the guest's connect timeout is capped at
//! [`CONNECT_TIMEOUT`] (the pool's connector is shared), its first-byte
//! timeout applies as asked; the plugin call's own deadline bounds the rest.

use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection is kept for the next event.
const IDLE: Duration = Duration::from_secs(60);

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

fn client() -> &'static Client<Https, WasiBody> {
    static CLIENT: OnceLock<Client<Https, WasiBody>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(64)
            .build(https)
    })
}

/// Sends `request` (absolute URI) on a pooled connection.
pub async fn send(
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
    match tokio::time::timeout(first_byte, client().request(request)).await {
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
