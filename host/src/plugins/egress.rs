//! Where plugins may connect, checked below the guest on the addresses a
//! request really goes to: after DNS resolution (the resolver hands the
//! connector only permitted addresses, so a name cannot be re-pointed
//! between the check and the connect) and for IP literals before any
//! connect. Loopback, private, link-local (cloud metadata), carrier-grade
//! NAT, multicast and reserved ranges are refused unless the operator
//! allows a range (`plugins.allow_networks`); the host's own HTTP listener
//! is refused even then. A customer's grant of `*` therefore means "any
//! public host", never the operator's network.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;
use parking_lot::RwLock;

use crate::egress::{networks, non_public, refused};

/// The operator's egress rules (cheap to clone).
#[derive(Clone, Default)]
pub struct Egress {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    allowed: Vec<IpNet>,
    own: Arc<RwLock<Vec<SocketAddr>>>,
}

impl Egress {
    /// Rules with the operator's allowed ranges (`10.0.0.0/8`, `127.0.0.1`);
    /// the error names the bad entry and the form expected.
    pub fn new(allow_networks: &[String]) -> Result<Self, String> {
        let allowed = networks("plugins.allow_networks", allow_networks)?;
        Ok(Self {
            inner: Arc::new(Inner {
                allowed,
                own: Arc::default(),
            }),
        })
    }

    /// These rules plus `extra` ranges an operator allowed for one
    /// installation; the host's own listener stays refused.
    pub fn widened(&self, extra: &[IpNet]) -> Egress {
        let mut allowed = self.inner.allowed.clone();
        allowed.extend(extra.iter().copied());
        Egress {
            inner: Arc::new(Inner {
                allowed,
                own: self.inner.own.clone(),
            }),
        }
    }

    /// Refuses the host's own listener `addr` even where its network is
    /// allowed (plugins must never reach the admin API or the portal).
    pub fn deny_own_listener(&self, addr: SocketAddr) {
        self.inner.own.write().push(addr);
    }

    /// Why `ip` may not be reached, naming the fix; `None` if it may.
    pub fn refusal(&self, host: &str, ip: IpAddr) -> Option<String> {
        let kind = refused(ip, &self.inner.allowed)?;
        Some(format!(
            "outbound HTTP to {host} denied: it is {ip}, a {kind} address (destination IP prohibited); plugins may reach only public addresses unless the operator allows the range (plugins.allow_networks, or for one installation PUT /api/v1/installations/{{id}}/allow-networks)"
        ))
    }

    /// Why a connection to `peer` may not stand: it is the host's own
    /// listener.
    pub fn own_listener(&self, peer: SocketAddr) -> Option<String> {
        let own = self.inner.own.read();
        let hit = own.iter().any(|l| {
            l.port() == peer.port()
                && (l.ip() == peer.ip()
                    || (l.ip().is_unspecified() && non_public(peer.ip()).is_some())
                    || (l.ip().is_loopback() && peer.ip().is_loopback()))
        });
        hit.then(|| {
            format!(
                "outbound HTTP to {peer} denied: it is this host's own HTTP listener, which plugins may never reach (destination IP prohibited)"
            )
        })
    }

    /// The resolver the outbound client connects through.
    pub(super) fn resolver(&self) -> Resolver {
        Resolver {
            egress: self.clone(),
        }
    }
}

/// Resolves a name and keeps only the addresses plugins may reach; when
/// none is left, the error says which address was refused and why.
#[derive(Clone)]
pub(super) struct Resolver {
    egress: Egress,
}

type Resolving = Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let egress = self.egress.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let ok: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match egress.refusal(&host, a.ip()) {
                    None => true,
                    Some(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            match (ok.is_empty(), refused) {
                (true, Some(why)) => Err(io::Error::new(io::ErrorKind::PermissionDenied, why)),
                _ => Ok(ok.into_iter()),
            }
        })
    }
}

/// The outbound client's connector: refuses IP literals in refused ranges
/// before connecting, resolves names through [`Resolver`], and drops a
/// connection that reached the host's own listener.
#[derive(Clone)]
pub(super) struct Connector {
    http: hyper_util::client::legacy::connect::HttpConnector<Resolver>,
    egress: Egress,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connecting = Pin<
    Box<
        dyn Future<Output = Result<hyper_util::rt::TokioIo<tokio::net::TcpStream>, BoxError>>
            + Send,
    >,
>;

impl Connector {
    /// Wraps `http` (its resolver must be this egress's [`Resolver`]).
    pub(super) fn new(
        http: hyper_util::client::legacy::connect::HttpConnector<Resolver>,
        egress: Egress,
    ) -> Self {
        Self { http, egress }
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let egress = self.egress.clone();
        let host = uri.host().unwrap_or_default().to_owned();
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        if let Some(why) = literal.and_then(|ip| egress.refusal(&host, ip)) {
            return Box::pin(async move {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, why).into())
            });
        }
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            if let Ok(peer) = io.inner().peer_addr()
                && let Some(why) = egress.own_listener(peer)
            {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, why).into());
            }
            Ok(io)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_operators_networks_and_the_metadata_address_are_refused_by_default() {
        let e = Egress::default();
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("64:ff9b::7f00:1", "NAT64"),
        ] {
            let why = e.refusal("app.example", ip(addr)).expect(addr);
            assert!(why.contains(kind), "{addr}: {why}");
            assert!(why.contains("plugins.allow_networks"), "{why}");
        }
        for public in ["8.8.8.8", "185.12.64.1", "2a00:1450:4001::1"] {
            assert_eq!(e.refusal("app.example", ip(public)), None, "{public}");
        }
    }

    #[test]
    fn an_allowed_range_opens_that_range_only_and_never_the_own_listener() {
        let e = Egress::new(&["127.0.0.0/8".into(), "10.1.0.0/16".into()]).unwrap();
        assert_eq!(e.refusal("x", ip("127.0.0.1")), None);
        assert_eq!(e.refusal("x", ip("10.1.9.9")), None);
        assert!(e.refusal("x", ip("10.2.0.1")).is_some());
        assert!(e.refusal("x", ip("169.254.169.254")).is_some());
        e.deny_own_listener("127.0.0.1:8080".parse().unwrap());
        assert!(e.own_listener("127.0.0.1:8080".parse().unwrap()).is_some());
        assert!(e.own_listener("127.0.0.2:8080".parse().unwrap()).is_some());
        assert!(e.own_listener("127.0.0.1:8081".parse().unwrap()).is_none());
    }

    #[test]
    fn a_bad_range_is_named_with_the_form_expected() {
        let err = Egress::new(&["10.0.0.0/33".into()]).err().unwrap();
        assert!(
            err.contains("'10.0.0.0/33'") && err.contains("10.1.0.0/16"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn names_that_resolve_to_refused_addresses_are_not_connected() {
        use tower_service::Service;
        let mut r = Egress::default().resolver();
        let err = r
            .call("localhost".parse().unwrap())
            .await
            .expect_err("localhost must be refused");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("loopback"), "{err}");
        let mut open = Egress::new(&["127.0.0.0/8".into(), "::1/128".into()])
            .unwrap()
            .resolver();
        assert!(open.call("localhost".parse().unwrap()).await.is_ok());
    }
}
