//! Client proxies: the hop before the target. A [`Proxy`] is an HTTP CONNECT proxy
//! (`http://`, or `https://` with TLS to the proxy itself) or a SOCKS5 proxy
//! (`socks5://` resolving the target's name here, `socks5h://` letting the proxy
//! resolve it), optionally with credentials from the URL's userinfo.
//!
//! ```text
//!  TCP to the proxy ─► [TLS to the proxy] ─► CONNECT / SOCKS5 ─► tunnel ─► [TLS to the target]
//!  (Connect)            (Tls)                 (Refused, AuthRequired,          (Error::Tls)
//!                                              Socks, BadReply, Io)
//! ```
//!
//! Each hop has its own [`ProxyError`] variant; every read from the proxy is bounded
//! (the CONNECT reply head by [`MAX_PROXY_REPLY_HEAD`], SOCKS5 replies by the protocol) and
//! the whole exchange runs inside the client's connect timeout. Where the proxy comes
//! from (explicit, the environment, none) is decided in `io/client.rs`; the
//! environment's rules are in `env.rs`.

mod env;
mod http_connect;
mod socks5;

pub(crate) use env::proxy_for;

use std::fmt;
use std::io;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use tokio::net::TcpStream;
use url::{Host, Url};

use crate::error::{Error, Result};
use crate::io::url::{Target, TargetHost};

/// The largest CONNECT reply head (status line and headers) read from a proxy; a
/// longer one is [`ProxyError::BadReply`].
///
/// ```
/// assert_eq!(wsevents::MAX_PROXY_REPLY_HEAD, 16 * 1024);
/// ```
pub const MAX_PROXY_REPLY_HEAD: usize = 16 * 1024;

/// A proxy to reach WebSocket servers through.
///
/// Parsed from a URL as curl takes `--proxy`: `http://[user:password@]host[:port]`
/// (port 80 by default), `https://…` (TLS to the proxy, port 443), `socks5://…` and
/// `socks5h://…` (port 1080); a URL without a scheme is `http://`. The user name and
/// password are percent-decoded; they are sent as HTTP basic auth
/// (`Proxy-Authorization`) or SOCKS5 user/password auth (RFC 1929), and never shown
/// by `Display` or `Debug`.
///
/// ```
/// # fn main() -> wsevents::Result<()> {
/// use wsevents::{ClientBuilder, Proxy};
/// let proxy = Proxy::parse("http://user:secret@127.0.0.1:3128")?;
/// assert_eq!(proxy.to_string(), "http://user@127.0.0.1:3128");
/// let builder = ClientBuilder::new("wss://example.com/chat")?.proxy(proxy);
/// # let _ = builder; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Proxy {
    kind: Kind,
    host: TargetHost,
    port: u16,
    credentials: Option<Credentials>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The proxy protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Https,
    /// `remote_dns`: `socks5h://`, the proxy resolves the target's name.
    Socks5 {
        remote_dns: bool,
    },
}

#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    user: String,
    password: String,
}

impl Proxy {
    /// Parse a proxy URL; [`Error::Syntax`] for another scheme, no host, or userinfo
    /// that is not UTF-8.
    ///
    /// ```
    /// use wsevents::Proxy;
    /// assert!(Proxy::parse("socks5h://127.0.0.1:1080").is_ok());
    /// assert!(Proxy::parse("127.0.0.1:3128").is_ok()); // http://
    /// assert!(Proxy::parse("ftp://127.0.0.1").is_err());
    /// ```
    pub fn parse(input: &str) -> Result<Proxy> {
        let with_scheme;
        let input = input.trim();
        let input = if input.contains("://") {
            input
        } else {
            with_scheme = format!("http://{input}");
            &with_scheme
        };
        let url = Url::parse(input)
            .map_err(|e| Error::Syntax(format!("invalid proxy URL {input:?}: {e}")))?;
        let kind = match url.scheme() {
            "http" => Kind::Http,
            "https" => Kind::Https,
            "socks5" => Kind::Socks5 { remote_dns: false },
            "socks5h" => Kind::Socks5 { remote_dns: true },
            other => {
                return Err(Error::Syntax(format!(
                    "the proxy scheme must be http, https, socks5 or socks5h, not {other:?}"
                )));
            }
        };
        let host = match url.host() {
            Some(Host::Domain(d)) if !d.is_empty() => TargetHost::Domain(d.to_owned()),
            Some(Host::Ipv4(ip)) => TargetHost::Addr(ip.into()),
            Some(Host::Ipv6(ip)) => TargetHost::Addr(ip.into()),
            _ => {
                return Err(Error::Syntax(format!(
                    "the proxy URL {input:?} has no host"
                )));
            }
        };
        let port = url.port_or_known_default().unwrap_or(1080);
        let credentials = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let decode = |s: &str| {
                percent_decode_str(s)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| Error::Syntax("the proxy's user or password is not UTF-8".into()))
            };
            Some(Credentials {
                user: decode(url.username())?,
                password: decode(url.password().unwrap_or(""))?,
            })
        };
        Ok(Proxy {
            kind,
            host,
            port,
            credentials,
            tls: None,
        })
    }

    /// The proxy the environment gives for the WebSocket URL `url`, read as curl reads
    /// it (see [`Proxy::from_vars`] for the rules); `None` for a direct connection.
    ///
    /// This is what [`ClientBuilder`](crate::ClientBuilder) does unless told
    /// otherwise.
    ///
    /// ```
    /// # fn main() -> wsevents::Result<()> {
    /// let proxy = wsevents::Proxy::from_env("wss://example.com/")?;
    /// println!("through {proxy:?}");
    /// # Ok(()) }
    /// ```
    pub fn from_env(url: &str) -> Result<Option<Proxy>> {
        Proxy::from_vars(url, |name| std::env::var(name).ok())
    }

    /// The proxy that the variables `var` gives for the WebSocket URL `url`:
    /// [`from_env`](Proxy::from_env) with another source of variables (a test's, a
    /// configuration file's).
    ///
    /// - `wss://` uses `https_proxy`, then `HTTPS_PROXY`; `ws://` uses `http_proxy`,
    ///   then `HTTP_PROXY` (but not `HTTP_PROXY` when `REQUEST_METHOD` is set: in a
    ///   CGI program a request's `Proxy:` header sets it, "httpoxy"; curl never reads
    ///   `HTTP_PROXY`); then `all_proxy`, then `ALL_PROXY`. An empty value is unset.
    /// - `no_proxy`, else `NO_PROXY`, lists hosts reached directly, as curl matches it:
    ///   separated by commas or spaces; `*` alone matches every host; a name matches
    ///   itself and its subdomains (`example.com` and `.example.com` both match
    ///   `example.com` and `a.example.com`, not `badexample.com`), case-insensitively;
    ///   an IP address matches itself, `a.b.c.d/n` or `ipv6/n` a network. Ports in the
    ///   list are not supported. **Loopback is not special**: `127.0.0.1` or
    ///   `localhost` go through the proxy unless listed (as with curl and
    ///   python-websockets; Go's net/http differs).
    /// - A proxy set on the builder with [`ClientBuilder::proxy`](crate::ClientBuilder::proxy)
    ///   is used for every URL; NO_PROXY applies only to proxies from the environment.
    ///
    /// An unparsable proxy variable is [`Error::Syntax`] naming the variable.
    ///
    /// ```
    /// # fn main() -> wsevents::Result<()> {
    /// use wsevents::Proxy;
    /// let vars = |name: &str| match name {
    ///     "ALL_PROXY" => Some("socks5h://127.0.0.1:1080".to_string()),
    ///     "NO_PROXY" => Some("internal.example, 10.0.0.0/8".to_string()),
    ///     _ => None,
    /// };
    /// assert!(Proxy::from_vars("ws://example.com/", vars)?.is_some());
    /// assert!(Proxy::from_vars("ws://db.internal.example/", vars)?.is_none());
    /// assert!(Proxy::from_vars("ws://10.1.2.3/", vars)?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn from_vars(url: &str, var: impl Fn(&str) -> Option<String>) -> Result<Option<Proxy>> {
        env::proxy_for(&Target::parse(url)?, var)
    }

    /// The TLS configuration for the hop to an `https://` proxy (default: the
    /// builder's [`tls_config`](crate::ClientBuilder::tls_config), without its client
    /// certificate).
    ///
    /// ```
    /// # fn main() -> wsevents::Result<()> {
    /// let proxy = wsevents::Proxy::parse("https://proxy.example:3129")?
    ///     .tls_config(wsevents::tls::webpki_client_config()?);
    /// # let _ = proxy; Ok(()) }
    /// ```
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Proxy {
        self.tls = Some(config);
        self
    }

    /// The proxy as a name for errors: the URL without the password.
    fn name(&self) -> String {
        self.to_string()
    }

    /// Open a tunnel through the proxy to `target`; `tls` is the configuration for
    /// an `https://` proxy when it has none of its own.
    pub(crate) async fn tunnel(
        &self,
        target: &Target,
        tls: impl FnOnce() -> Result<Arc<rustls::ClientConfig>>,
    ) -> Result<Tunnel> {
        let tcp = self.connect_tcp().await?;
        match self.kind {
            Kind::Http => {
                let mut tcp = tcp;
                http_connect::connect(&mut tcp, self, target).await?;
                Ok(Tunnel::Tcp(tcp))
            }
            Kind::Https => {
                let config = match &self.tls {
                    Some(config) => config.clone(),
                    None => tls()?,
                };
                let name = self.server_name()?;
                let mut tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ProxyError::Tls {
                        proxy: self.name(),
                        message: tls_message(&e),
                    })?;
                http_connect::connect(&mut tls, self, target).await?;
                Ok(Tunnel::Tls(Box::new(tls)))
            }
            Kind::Socks5 { remote_dns } => {
                let mut tcp = tcp;
                socks5::connect(&mut tcp, self, target, remote_dns).await?;
                Ok(Tunnel::Tcp(tcp))
            }
        }
    }

    async fn connect_tcp(&self) -> Result<TcpStream, ProxyError> {
        let fail = |source| ProxyError::Connect {
            proxy: self.name(),
            source,
        };
        let addrs: Vec<_> = match &self.host {
            TargetHost::Addr(ip) => vec![std::net::SocketAddr::new(*ip, self.port)],
            TargetHost::Domain(domain) => tokio::net::lookup_host((domain.as_str(), self.port))
                .await
                .map_err(fail)?
                .collect(),
        };
        let mut last_error = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    tcp.set_nodelay(true).map_err(fail)?;
                    return Ok(tcp);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(fail(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "the proxy's host resolved to no address",
            )
        })))
    }

    fn server_name(&self) -> Result<rustls_pki_types::ServerName<'static>> {
        Ok(match &self.host {
            TargetHost::Addr(ip) => rustls_pki_types::ServerName::IpAddress((*ip).into()),
            TargetHost::Domain(domain) => rustls_pki_types::ServerName::try_from(domain.clone())
                .map_err(|e| Error::Syntax(format!("invalid TLS name {domain:?}: {e}")))?,
        })
    }
}

/// The rustls error inside a TLS I/O error, as text.
fn tls_message(error: &io::Error) -> String {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.to_string(),
        None => error.to_string(),
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Socks5 { remote_dns: false } => "socks5",
            Kind::Socks5 { remote_dns: true } => "socks5h",
        };
        write!(f, "{scheme}://")?;
        if let Some(credentials) = &self.credentials {
            let user = percent_encoding::utf8_percent_encode(
                &credentials.user,
                percent_encoding::NON_ALPHANUMERIC,
            );
            write!(f, "{user}@")?;
        }
        match &self.host {
            TargetHost::Domain(d) => write!(f, "{d}")?,
            TargetHost::Addr(std::net::IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            TargetHost::Addr(ip) => write!(f, "{ip}")?,
        }
        write!(f, ":{}", self.port)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Proxy").field(&self.to_string()).finish()
    }
}

impl PartialEq for Proxy {
    /// Same protocol, host, port and credentials (the TLS configurations are not
    /// compared).
    fn eq(&self, other: &Proxy) -> bool {
        (self.kind, &self.host, self.port, &self.credentials)
            == (other.kind, &other.host, other.port, &other.credentials)
    }
}

/// The connection a proxy opened to the target: TCP, or TLS to an `https://` proxy.
pub(crate) enum Tunnel {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A proxy failed; the variant says at which hop.
///
/// ```
/// use wsevents::{Error, ProxyError};
/// fn explain(error: &Error) -> &'static str {
///     match error {
///         Error::Proxy(ProxyError::Connect { .. }) => "the proxy is down",
///         Error::Proxy(ProxyError::AuthRequired { .. }) => "check the proxy password",
///         Error::Proxy(ProxyError::Refused { status: 403, .. }) => "the proxy forbids it",
///         Error::Proxy(_) => "the proxy failed",
///         _ => "not the proxy",
///     }
/// }
/// # let _ = explain;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The TCP connection to the proxy failed (refused, unreachable, its name did not
    /// resolve).
    #[error("cannot connect to the proxy {proxy}: {source}")]
    Connect {
        /// The proxy, without password.
        proxy: String,
        /// Why.
        source: io::Error,
    },
    /// The TLS handshake with an `https://` proxy failed.
    #[error("TLS to the proxy {proxy} failed: {message}")]
    Tls {
        /// The proxy, without password.
        proxy: String,
        /// Why.
        message: String,
    },
    /// The proxy wants (other) credentials: HTTP 407 (or 401, which tinyproxy sends
    /// for wrong ones), or a SOCKS5 proxy that accepts none of the methods offered or
    /// rejects the user and password.
    #[error("the proxy {proxy} {}", if *.credentials_sent {
        "rejected the credentials"
    } else {
        "requires credentials"
    })]
    AuthRequired {
        /// The proxy, without password.
        proxy: String,
        /// Whether credentials were sent.
        credentials_sent: bool,
    },
    /// The HTTP proxy answered CONNECT with this status (not 2xx, 401 or 407).
    #[error("the proxy {proxy} refused the tunnel with HTTP {status} {reason}")]
    Refused {
        /// The proxy, without password.
        proxy: String,
        /// The HTTP status.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The SOCKS5 proxy failed the request with this reply code (RFC 1928 §6).
    #[error("the SOCKS5 proxy {proxy} failed the request: {} (reply 0x{reply:02x})", socks_reply_name(*.reply))]
    Socks {
        /// The proxy, without password.
        proxy: String,
        /// The reply code; [`socks_reply_name`] names it.
        reply: u8,
    },
    /// The proxy's answer is not the protocol (or too long, or it closed early).
    #[error("bad reply from the proxy {proxy}: {reason}")]
    BadReply {
        /// The proxy, without password.
        proxy: String,
        /// What was wrong.
        reason: String,
    },
    /// The connection to the proxy failed during the exchange.
    #[error("the connection to the proxy {proxy} failed: {source}")]
    Io {
        /// The proxy, without password.
        proxy: String,
        /// Why.
        source: io::Error,
    },
}

/// The name of a SOCKS5 reply code (RFC 1928 §6).
///
/// ```
/// assert_eq!(wsevents::socks_reply_name(0x05), "connection refused");
/// ```
pub fn socks_reply_name(reply: u8) -> &'static str {
    match reply {
        0x00 => "succeeded",
        0x01 => "general SOCKS server failure",
        0x02 => "connection not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        _ => "unassigned reply code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_ports_and_credentials() {
        let p = Proxy::parse("http://us%40er:p%3Aw@127.0.0.1:3128").unwrap();
        assert_eq!(p.kind, Kind::Http);
        assert_eq!(p.port, 3128);
        let c = p.credentials.clone().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("us@er", "p:w"));
        assert_eq!(p.to_string(), "http://us%40er@127.0.0.1:3128");
        assert!(!format!("{p:?}").contains("p:w"));
        assert_eq!(Proxy::parse("proxy.example").unwrap().port, 80);
        assert_eq!(Proxy::parse("https://proxy.example").unwrap().port, 443);
        let s = Proxy::parse("socks5h://[::1]").unwrap();
        assert_eq!((s.kind, s.port), (Kind::Socks5 { remote_dns: true }, 1080));
        assert_eq!(s.to_string(), "socks5h://[::1]:1080");
        assert_eq!(
            Proxy::parse("socks5://h:9").unwrap().kind,
            Kind::Socks5 { remote_dns: false }
        );
        for bad in ["ftp://h", "socks4://h", "http://", "http://:80"] {
            assert!(matches!(Proxy::parse(bad), Err(Error::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn reply_names() {
        assert_eq!(socks_reply_name(0x02), "connection not allowed by ruleset");
        assert_eq!(socks_reply_name(0x42), "unassigned reply code");
        let e = ProxyError::Socks {
            proxy: "socks5://h:1".into(),
            reply: 4,
        };
        assert_eq!(
            e.to_string(),
            "the SOCKS5 proxy socks5://h:1 failed the request: host unreachable (reply 0x04)"
        );
    }
}
