//! A local HTTP receiver that records every request and answers with a
//! scripted sequence of statuses (default 200).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: Uri,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    script: VecDeque<(u16, Vec<(String, String)>)>,
}

/// A running receiver on 127.0.0.1.
#[derive(Clone)]
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    /// Starts a receiver on a free port.
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = shared.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move {
                    let mut g = s.lock().unwrap();
                    g.received.push(Received {
                        method,
                        uri,
                        headers,
                        body,
                    });
                    let (status, headers) = g.script.pop_front().unwrap_or((200, vec![]));
                    let mut resp = (StatusCode::from_u16(status).unwrap(), "{}").into_response();
                    for (k, v) in headers {
                        resp.headers_mut().insert(
                            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                            v.parse().unwrap(),
                        );
                    }
                    resp
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, shared }
    }

    /// Base URL, e.g. `http://127.0.0.1:12345`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue the next responses: status and headers.
    pub fn script(&self, responses: &[(u16, &[(&str, &str)])]) {
        let mut g = self.shared.lock().unwrap();
        for (status, headers) in responses {
            g.script.push_back((
                *status,
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ));
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// The call events the webhook connector delivered so far (the
    /// `event` of each JSON body), in arrival order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.received()
            .iter()
            .filter_map(|x| serde_json::from_slice::<serde_json::Value>(&x.body).ok())
            .map(|v| v["event"].clone())
            .collect()
    }
}
