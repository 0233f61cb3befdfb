//! Outbound HTTP over the standard `wasi:http/outgoing-handler`. The host
//! only lets requests through to hosts the manifest asks for and the admin
//! granted; a denied request returns an error naming the host. In a native
//! `cargo test`, [`crate::testing::TestHost`] answers instead.

#[cfg(target_family = "wasm")]
use wasi::http::outgoing_handler;
#[cfg(target_family = "wasm")]
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
#[cfg(target_family = "wasm")]
use wasi::io::streams::StreamError;

use crate::{ConnectorError, permanent, retryable};

/// An HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header name/value pairs.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header name/value pairs (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Request {
    /// A `GET` request.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// A request with any method.
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `Authorization: Basic` with `user` and `password`.
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("authorization", &format!("Basic {token}"))
    }

    /// Adds `Authorization: Bearer`.
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Sets a JSON body and content type.
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.body = value.to_string().into_bytes();
        self.header("content-type", "application/json")
    }

    /// Sets a raw body.
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(&self) -> Result<Response, String> {
        send(self)
    }
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("response is not the expected JSON: {e}"))
    }

    /// `Ok(self)` for 2xx; otherwise the connector error the status calls
    /// for: 429/503 (with `Retry-After` seconds), 408 and other 5xx are
    /// retryable, other 4xx permanent.
    pub fn error_for_status(self) -> Result<Self, ConnectorError> {
        let status = self.status;
        if (200..300).contains(&status) {
            return Ok(self);
        }
        let snippet: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(200)
            .collect();
        let message = format!("HTTP {status}: {snippet}");
        match status {
            429 | 503 => {
                let after = self
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| s * 1000);
                Err(retryable(message, after))
            }
            408 | 500..=599 => Err(retryable(message, None)),
            _ => Err(permanent(message)),
        }
    }
}

/// Turns a transport error into a retryable connector error.
pub fn transport_error(e: String) -> ConnectorError {
    if e.contains("denied") {
        // A capability problem does not heal by retrying.
        permanent(e)
    } else {
        retryable(e, None)
    }
}

#[cfg(not(target_family = "wasm"))]
fn send(req: &Request) -> Result<Response, String> {
    crate::testing::send(req)
}

#[cfg(target_family = "wasm")]
fn send(req: &Request) -> Result<Response, String> {
    let (scheme, rest) = if let Some(r) = req.url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else if let Some(r) = req.url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else {
        return Err(format!(
            "URL '{}' must start with http:// or https://",
            req.url
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (authority, path) = match authority.find('?') {
        Some(i) => (&authority[..i], format!("/{}", &authority[i..])),
        None => (authority, path.to_string()),
    };
    let mut entries: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    // Without a length the body goes out chunked, which many servers
    // (Python WSGI servers such as Tryton's and Radicale's among them)
    // answer with 411 or read as empty.
    if !req.body.is_empty() && !entries.iter().any(|(k, _)| k == "content-length") {
        entries.push((
            "content-length".into(),
            req.body.len().to_string().into_bytes(),
        ));
    }
    let headers = Fields::from_list(&entries).map_err(|e| format!("invalid header: {e:?}"))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match req.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    outgoing
        .set_method(&method)
        .map_err(|_| "invalid method".to_string())?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|_| "invalid scheme".to_string())?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|_| format!("invalid host '{authority}'"))?;
    outgoing
        .set_path_with_query(Some(&path))
        .map_err(|_| format!("invalid path '{path}'"))?;
    let body = outgoing
        .body()
        .map_err(|_| "request body unavailable".to_string())?;
    {
        let stream = body
            .write()
            .map_err(|_| "request body stream unavailable".to_string())?;
        for chunk in req.body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("writing the request body failed: {e:?}"))?;
        }
    }
    let future = outgoing_handler::handle(outgoing, None).map_err(describe)?;
    OutgoingBody::finish(body, None).map_err(describe)?;
    future.subscribe().block();
    let incoming = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(describe(e)),
        Some(Err(())) | None => return Err("the response was already taken".into()),
    };
    let status = incoming.status();
    let headers = incoming
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let mut bytes = Vec::new();
    let body = incoming
        .consume()
        .map_err(|_| "response body unavailable".to_string())?;
    {
        let stream = body
            .stream()
            .map_err(|_| "response body stream unavailable".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(format!("reading the response body failed: {e:?}")),
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}

#[cfg(target_family = "wasm")]
fn describe(e: ErrorCode) -> String {
    match e {
        ErrorCode::InternalError(Some(m)) => m,
        other => format!("{other:?}"),
    }
}
