//! HTTP CONNECT (RFC 9110 §9.3.6): ask the proxy for a tunnel to `host:port`, with
//! basic auth when the proxy URL has credentials, and read its reply head (at most
//! [`MAX_PROXY_REPLY_HEAD`] bytes). The target's name goes to the proxy as is: the proxy
//! resolves it.

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{MAX_PROXY_REPLY_HEAD, Proxy, ProxyError};
use crate::io::url::{Target, TargetHost};

/// Headers a reply head may have (tinyproxy sends 4 or 5).
const MAX_HEADERS: usize = 64;

/// Send CONNECT for `target` over `io` and read the proxy's reply; on return the
/// stream is the tunnel.
pub(super) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    proxy: &Proxy,
    target: &Target,
) -> Result<(), ProxyError> {
    let failed = |source| ProxyError::Io {
        proxy: proxy.name(),
        source,
    };
    io.write_all(request(proxy, target).as_bytes())
        .await
        .map_err(failed)?;
    io.flush().await.map_err(failed)?;

    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = (MAX_PROXY_REPLY_HEAD - head.len()).min(chunk.len());
        if room == 0 {
            return Err(bad(
                proxy,
                format!("the reply head is over {MAX_PROXY_REPLY_HEAD} bytes"),
            ));
        }
        let n = io.read(&mut chunk[..room]).await.map_err(failed)?;
        if n == 0 {
            return Err(bad(
                proxy,
                format!(
                    "the proxy closed the connection after {} bytes of its reply",
                    head.len()
                ),
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response
            .parse(&head)
            .map_err(|e| bad(proxy, format!("not an HTTP reply: {e}")))?;
        let httparse::Status::Complete(len) = parsed else {
            continue;
        };
        // Complete means the status line was parsed.
        let status = response.code.unwrap_or(0);
        let reason = response.reason.unwrap_or("").to_owned();
        return match status {
            200..=299 if len < head.len() => Err(bad(
                proxy,
                format!(
                    "{} bytes arrived after the reply, before the tunnel was used",
                    head.len() - len
                ),
            )),
            200..=299 => Ok(()),
            // 401 too: a CONNECT reply is the proxy's own, and tinyproxy answers wrong
            // credentials with 401 (none with 407).
            401 | 407 => Err(ProxyError::AuthRequired {
                proxy: proxy.name(),
                credentials_sent: proxy.credentials.is_some(),
            }),
            _ => Err(ProxyError::Refused {
                proxy: proxy.name(),
                status,
                reason,
            }),
        };
    }
}

fn bad(proxy: &Proxy, reason: String) -> ProxyError {
    ProxyError::BadReply {
        proxy: proxy.name(),
        reason,
    }
}

/// The CONNECT request head.
fn request(proxy: &Proxy, target: &Target) -> String {
    let authority = match &target.host {
        TargetHost::Domain(d) => format!("{d}:{}", target.port),
        TargetHost::Addr(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", target.port),
        TargetHost::Addr(ip) => format!("{ip}:{}", target.port),
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = &proxy.credentials {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.user, credentials.password));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_with_and_without_credentials() {
        let target = Target::parse("wss://[::1]:9001/x").unwrap();
        let plain = Proxy::parse("http://127.0.0.1:3128").unwrap();
        assert_eq!(
            request(&plain, &target),
            "CONNECT [::1]:9001 HTTP/1.1\r\nHost: [::1]:9001\r\n\r\n"
        );
        let target = Target::parse("ws://example.com/").unwrap();
        let auth = Proxy::parse("http://user:pw@127.0.0.1:3128").unwrap();
        assert_eq!(
            request(&auth, &target),
            "CONNECT example.com:80 HTTP/1.1\r\nHost: example.com:80\r\n\
             Proxy-Authorization: Basic dXNlcjpwdw==\r\n\r\n"
        );
    }
}
