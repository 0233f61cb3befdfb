//! How the host reaches the PBX: one UDP socket, or one TCP connection that
//! carries everything (SUBSCRIBE and the NOTIFYs back, REGISTER, OPTIONS,
//! click-to-call).
//!
//! Over TCP the host has no listener: its Via and Contact name the local
//! end of the connection (`;transport=tcp`, Via `;alias`), so the PBX
//! sends its NOTIFYs back over that same connection, as it would to a
//! phone behind NAT. The connection is opened on first use and reopened
//! (on a new local port) after the PBX closed it; the keepalive notices the
//! new address and registers and subscribes anew, so the PBX never keeps a
//! Contact that leads nowhere.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use rsipstack::sip::{self as rsip};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Inner;

/// Transport to the PBX (`telephony.sip.transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SipTransport {
    /// One UDP socket (the default).
    #[default]
    Udp,
    /// One TCP connection to the PBX, reused in both directions.
    Tcp,
}

impl FromStr for SipTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            "tls" => Err(
                "'tls' is not supported yet (this build has no TLS for SIP): use \"udp\" or \"tcp\""
                    .into(),
            ),
            _ => Err(format!(
                "'{s}' is not a SIP transport: use \"udp\" (the default) or \"tcp\""
            )),
        }
    }
}

impl TryFrom<String> for SipTransport {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<SipTransport> for String {
    fn from(t: SipTransport) -> String {
        t.to_string()
    }
}

impl fmt::Display for SipTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        })
    }
}

impl SipTransport {
    /// The URI parameter naming this transport (none for UDP, the default).
    fn uri_param(self) -> &'static str {
        match self {
            Self::Udp => "",
            Self::Tcp => ";transport=tcp",
        }
    }

    /// The PBX at `server` (`host:port`) as a destination over this
    /// transport.
    pub(super) fn server(self, server: &str) -> anyhow::Result<SipAddr> {
        let uri =
            rsip::Uri::try_from(format!("sip:{server}{}", self.uri_param())).map_err(|e| {
                anyhow::anyhow!("telephony.sip.server '{server}' is not host:port: {e}")
            })?;
        SipAddr::try_from(&uri).map_err(|e| anyhow::anyhow!("telephony.sip.server '{server}': {e}"))
    }

    /// Sets up `layer`: binds the UDP socket on `bind`; over TCP nothing
    /// yet (the connection opens on the first request).
    pub(super) async fn prepare(
        self,
        layer: &TransportLayer,
        bind: SocketAddr,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        if self == Self::Udp {
            let conn = UdpConnection::create_connection(bind, None, Some(cancel.child_token()))
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind SIP on {bind}: {e}"))?;
            layer.add_transport(conn.into());
        }
        Ok(())
    }
}

impl Inner {
    /// Where the PBX reaches the host: the UDP socket, or the local end of
    /// the TCP connection to the PBX (opened now if there is none).
    pub(super) async fn local(&self) -> Result<SipAddr, String> {
        match self.cfg.transport {
            SipTransport::Udp => self
                .endpoint
                .transport_layer
                .get_listen_addrs()
                .into_iter()
                .next()
                .ok_or_else(|| "the SIP socket is closed".to_owned()),
            SipTransport::Tcp => self
                .endpoint
                .transport_layer
                .lookup(&self.server, None)
                .await
                .map(|(conn, _)| conn.get_addr().clone())
                .map_err(|e| {
                    format!(
                        "cannot open a TCP connection to the PBX at {}: {e}",
                        self.cfg.server
                    )
                }),
        }
    }

    /// A Via for a new request, naming [`Inner::local`].
    pub(super) async fn via(&self) -> Result<rsip::typed::Via, String> {
        let local = self.local().await?;
        self.endpoint
            .get_via(Some(local), None)
            .map_err(|e| e.to_string())
    }

    /// Our Contact: `sip:<username>@<local address>`, with
    /// `;transport=tcp` over TCP.
    pub(super) async fn contact(&self) -> Result<rsip::Uri, String> {
        let local = self.local().await?;
        if self.cfg.transport == SipTransport::Tcp {
            // What the keepalive compares the connection with.
            self.contact_addr
                .lock()
                .get_or_insert_with(|| local.clone());
        }
        let text = format!(
            "sip:{}@{}{}",
            self.cfg.username,
            local.addr,
            self.cfg.transport.uri_param()
        );
        rsip::Uri::try_from(text.as_str()).map_err(|e| format!("invalid Contact {text}: {e}"))
    }

    /// Adds our Contact to a request.
    pub(super) async fn push_contact(&self, request: &mut rsip::Request) -> Result<(), String> {
        let uri = self.contact().await?;
        request.headers.unique_push(
            rsip::typed::Contact {
                display_name: None,
                uri,
                params: vec![],
            }
            .into(),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_and_other_values_name_the_allowed_ones() {
        assert_eq!("udp".parse(), Ok(SipTransport::Udp));
        assert_eq!("TCP".parse(), Ok(SipTransport::Tcp));
        let err = "sctp".parse::<SipTransport>().unwrap_err();
        assert!(
            err.contains("'sctp'") && err.contains("\"udp\"") && err.contains("\"tcp\""),
            "{err}"
        );
        let err = "tls".parse::<SipTransport>().unwrap_err();
        assert!(err.contains("not supported yet"), "{err}");
    }

    #[test]
    fn the_server_address_carries_the_transport() {
        let tcp = SipTransport::Tcp.server("127.0.0.1:5070").unwrap();
        assert_eq!(tcp.r#type, Some(rsip::Transport::Tcp));
        assert_eq!(tcp.get_socketaddr().unwrap().port(), 5070);
        // UDP as before TCP existed: no transport parameter.
        let udp = SipTransport::Udp.server("127.0.0.1:5070").unwrap();
        assert_eq!(udp.r#type, None);
    }
}
