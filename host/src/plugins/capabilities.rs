//! Outbound-host patterns and the grant check (manifest asks AND admin grants).

use std::fmt;

/// A host pattern from a manifest or an admin grant: `api.example.com`,
/// `*.example.com`, `127.0.0.1:8080`, `127.0.0.1:*`, or `*` for any host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub struct HostPattern {
    host: String,
    /// `None` matches any port.
    port: Option<u16>,
}

impl HostPattern {
    /// Parses a pattern; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() {
            return Err("it is empty; write a host like \"api.example.com\"".into());
        }
        if s.contains("://") || s.contains('/') {
            return Err("write only the host (and optional :port), without scheme or path".into());
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, "*")) => (h.to_string(), None),
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("port `{p}` is not a number or *"))?;
                (h.to_string(), Some(port))
            }
            None => (s.clone(), None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        let body = host.strip_prefix("*.").unwrap_or(&host);
        if host != "*" && !body.split('.').all(label_ok) {
            return Err(format!("`{host}` is not a host name or IP address"));
        }
        Ok(Self { host, port })
    }

    /// Whether `host:port` is covered by this pattern.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let host_ok = if self.host == "*" {
            true
        } else if let Some(suffix) = self.host.strip_prefix("*.") {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        } else {
            self.host == host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl From<HostPattern> for String {
    fn from(p: HostPattern) -> String {
        p.to_string()
    }
}

/// The outbound hosts one installation may reach: what the manifest asks for
/// intersected with what the admin granted.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// Plugin name, for messages.
    pub plugin: String,
    /// From the manifest.
    pub requested: Vec<HostPattern>,
    /// From the installation's grant.
    pub granted: Vec<HostPattern>,
}

impl OutboundPolicy {
    /// `Ok` if allowed, else a message naming the host and the change that
    /// would allow it.
    pub fn check(&self, host: &str, port: u16) -> Result<(), String> {
        let requested = self.requested.iter().any(|p| p.matches(host, port));
        let granted = self.granted.iter().any(|p| p.matches(host, port));
        match (requested, granted) {
            (true, true) => Ok(()),
            (false, _) => Err(format!(
                "outbound HTTP to {host}:{port} denied: plugin '{}' does not ask for it; add \"{host}\" (or \"{host}:{port}\") to `capabilities.outbound-hosts` in its plugin.toml, then have an admin grant it",
                self.plugin
            )),
            (true, false) => Err(format!(
                "outbound HTTP to {host}:{port} denied: the admin has not granted this host to the installation of plugin '{}'; grant \"{host}\" in the installation's capabilities",
                self.plugin
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn patterns_match() {
        assert!(p("api.example.com").matches("API.example.com", 443));
        assert!(!p("api.example.com").matches("example.com", 443));
        assert!(p("*.zendesk.com").matches("acme.zendesk.com", 443));
        assert!(!p("*.zendesk.com").matches("zendesk.com", 443));
        assert!(!p("*.zendesk.com").matches("evilzendesk.com", 443));
        assert!(p("127.0.0.1:8080").matches("127.0.0.1", 8080));
        assert!(!p("127.0.0.1:8080").matches("127.0.0.1", 8081));
        assert!(p("127.0.0.1:*").matches("127.0.0.1", 1));
        assert!(p("*").matches("anything.org", 80));
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert!(
            HostPattern::parse("https://x.com")
                .unwrap_err()
                .contains("without scheme")
        );
        assert!(
            HostPattern::parse("x.com:http")
                .unwrap_err()
                .contains("port `http`")
        );
        assert!(HostPattern::parse("").is_err());
    }

    #[test]
    fn both_ask_and_grant_are_needed() {
        let policy = OutboundPolicy {
            plugin: "crm".into(),
            requested: vec![p("api.crm.com")],
            granted: vec![p("*")],
        };
        assert!(policy.check("api.crm.com", 443).is_ok());
        let e = policy.check("evil.com", 443).unwrap_err();
        assert!(
            e.contains("evil.com:443") && e.contains("capabilities.outbound-hosts"),
            "{e}"
        );
        let policy = OutboundPolicy {
            granted: vec![],
            ..policy
        };
        let e = policy.check("api.crm.com", 443).unwrap_err();
        assert!(e.contains("has not granted"), "{e}");
    }
}
