//! WebSocket URLs, parsed the WHATWG way (the `url` crate) and checked as the
//! browser's `new WebSocket(url, protocols)` checks them: `http`/`https` become
//! `ws`/`wss`, any other scheme or a fragment is a syntax error, and subprotocols must
//! be distinct tokens.

use std::net::SocketAddr;

use url::{Host, Url};

use crate::error::{Error, Result};

/// Where a WebSocket URL points, ready to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The URL, with its scheme normalized to `ws` or `wss`.
    pub(crate) url: Url,
    /// Whether TLS is used.
    pub(crate) secure: bool,
    /// The host as it goes in the `Host` header (`[::1]:8080`, `example.com`).
    pub(crate) host_header: String,
    /// The host to resolve or connect to (no brackets).
    pub(crate) host: TargetHost,
    /// The port, explicit or the scheme's default.
    pub(crate) port: u16,
    /// The path and query, the request target.
    pub(crate) resource: String,
}

/// The host part of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetHost {
    Domain(String),
    Addr(std::net::IpAddr),
}

impl Target {
    /// Parse and check a WebSocket URL.
    pub(crate) fn parse(input: &str) -> Result<Target> {
        let mut url =
            Url::parse(input).map_err(|e| Error::Syntax(format!("invalid URL {input:?}: {e}")))?;
        let secure = match url.scheme() {
            "ws" => false,
            "wss" => true,
            "http" => {
                set_scheme(&mut url, "ws")?;
                false
            }
            "https" => {
                set_scheme(&mut url, "wss")?;
                true
            }
            other => {
                return Err(Error::Syntax(format!(
                    "the URL scheme must be ws or wss, not {other:?}"
                )));
            }
        };
        if url.fragment().is_some() {
            return Err(Error::Syntax(
                "a WebSocket URL may not have a fragment".into(),
            ));
        }
        let port = url
            .port_or_known_default()
            .unwrap_or(if secure { 443 } else { 80 });
        let (host, host_str) = match url.host() {
            Some(Host::Domain(d)) => (TargetHost::Domain(d.to_owned()), d.to_owned()),
            Some(Host::Ipv4(ip)) => (TargetHost::Addr(ip.into()), ip.to_string()),
            Some(Host::Ipv6(ip)) => (TargetHost::Addr(ip.into()), format!("[{ip}]")),
            None => return Err(Error::Syntax("a WebSocket URL needs a host".into())),
        };
        let host_header = match url.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str,
        };
        let mut resource = url.path().to_owned();
        if let Some(query) = url.query() {
            resource.push('?');
            resource.push_str(query);
        }
        Ok(Target {
            url,
            secure,
            host_header,
            host,
            port,
            resource,
        })
    }

    /// The socket addresses to try, resolved.
    pub(crate) async fn resolve(&self) -> Result<Vec<SocketAddr>> {
        match &self.host {
            TargetHost::Addr(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            TargetHost::Domain(domain) => Ok(tokio::net::lookup_host((domain.as_str(), self.port))
                .await?
                .collect()),
        }
    }

    /// The name TLS checks the certificate against.
    pub(crate) fn server_name(&self) -> Result<rustls_pki_types::ServerName<'static>> {
        Ok(match &self.host {
            TargetHost::Addr(ip) => rustls_pki_types::ServerName::IpAddress((*ip).into()),
            TargetHost::Domain(domain) => rustls_pki_types::ServerName::try_from(domain.clone())
                .map_err(|e| Error::Syntax(format!("invalid TLS server name {domain:?}: {e}")))?,
        })
    }
}

fn set_scheme(url: &mut Url, scheme: &str) -> Result<()> {
    url.set_scheme(scheme)
        .map_err(|()| Error::Syntax(format!("cannot use the {scheme} scheme for {url}")))
}

/// Check subprotocols as `new WebSocket(url, protocols)` does: each a non-empty token,
/// none repeated (compared case-insensitively).
pub(crate) fn check_protocols<S: AsRef<str>>(protocols: &[S]) -> Result<Vec<String>> {
    let mut seen: Vec<String> = Vec::with_capacity(protocols.len());
    for protocol in protocols {
        let protocol = protocol.as_ref();
        if !wsevents_proto::handshake::is_token(protocol) {
            return Err(Error::Syntax(format!(
                "{protocol:?} is not a valid subprotocol token"
            )));
        }
        if seen.iter().any(|p| p.eq_ignore_ascii_case(protocol)) {
            return Err(Error::Syntax(format!(
                "subprotocol {protocol:?} is repeated"
            )));
        }
        seen.push(protocol.to_owned());
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn default_ports_and_host_headers() {
        let t = parse("ws://example.com/chat?room=1");
        assert_eq!(
            (
                t.port,
                t.secure,
                t.host_header.as_str(),
                t.resource.as_str()
            ),
            (80, false, "example.com", "/chat?room=1")
        );
        let t = parse("wss://example.com");
        assert_eq!((t.port, t.secure, t.resource.as_str()), (443, true, "/"));
        let t = parse("ws://example.com:8080/");
        assert_eq!(t.host_header, "example.com:8080");
    }

    #[test]
    fn http_schemes_map_to_ws() {
        let t = parse("http://example.com/x");
        assert_eq!(t.url.as_str(), "ws://example.com/x");
        let t = parse("https://example.com/x");
        assert!(t.secure);
        assert_eq!(t.url.scheme(), "wss");
    }

    #[test]
    fn ipv6_literals() {
        let t = parse("ws://[::1]:9001/");
        assert_eq!(t.host, TargetHost::Addr("::1".parse().unwrap()));
        assert_eq!(t.host_header, "[::1]:9001");
    }

    #[test]
    fn fragments_other_schemes_and_junk_are_syntax_errors() {
        for bad in [
            "ws://example.com/#frag",
            "ftp://example.com/",
            "not a url",
            "ws://",
            "file:///tmp",
        ] {
            assert!(matches!(Target::parse(bad), Err(Error::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn protocols_must_be_distinct_tokens() {
        assert_eq!(
            check_protocols(&["chat", "superchat"]).unwrap(),
            ["chat", "superchat"]
        );
        assert!(matches!(
            check_protocols(&["chat", "Chat"]),
            Err(Error::Syntax(_))
        ));
        assert!(matches!(check_protocols(&["a b"]), Err(Error::Syntax(_))));
        assert!(matches!(check_protocols(&[""]), Err(Error::Syntax(_))));
    }
}
