//! SOCKS5 (RFC 1928) with no authentication or user/password (RFC 1929): greet with
//! the methods we can do, authenticate if the proxy picks user/password, then CONNECT
//! to the target, by name for `socks5h://` (the proxy resolves it) or by the first
//! address resolved here for `socks5://` (curl's rule). Every read has a length the
//! protocol fixes (at most 1 + 255 + 2 bytes for a bound address).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Proxy, ProxyError};
use crate::error::{Error, Result};
use crate::io::url::{Target, TargetHost};

const VERSION: u8 = 0x05;
const NO_AUTH: u8 = 0x00;
const USER_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
/// The version of the user/password subnegotiation (RFC 1929).
const AUTH_VERSION: u8 = 0x01;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// Run the SOCKS5 exchange for `target` over `io`; on return the stream is the tunnel.
pub(super) async fn connect(
    io: &mut TcpStream,
    proxy: &Proxy,
    target: &Target,
    remote_dns: bool,
) -> Result<()> {
    // Resolve first (socks5://): a name that does not resolve is not the proxy's fault.
    let address = address(target, remote_dns).await?;
    let failed = |source| ProxyError::Io {
        proxy: proxy.name(),
        source,
    };
    let bad = |reason: &str| ProxyError::BadReply {
        proxy: proxy.name(),
        reason: reason.to_owned(),
    };

    let greeting: &[u8] = match proxy.credentials {
        Some(_) => &[VERSION, 2, NO_AUTH, USER_PASSWORD],
        None => &[VERSION, 1, NO_AUTH],
    };
    io.write_all(greeting).await.map_err(failed)?;
    let mut choice = [0u8; 2];
    io.read_exact(&mut choice).await.map_err(failed)?;
    if choice[0] != VERSION {
        return Err(bad("not a SOCKS5 reply to the greeting").into());
    }
    match (choice[1], &proxy.credentials) {
        (NO_AUTH, _) => {}
        (USER_PASSWORD, Some(credentials)) => {
            let (user, password) = (credentials.user.as_bytes(), credentials.password.as_bytes());
            let (Ok(user_len), Ok(password_len)) =
                (u8::try_from(user.len()), u8::try_from(password.len()))
            else {
                return Err(Error::Syntax(
                    "a SOCKS5 user name and password are at most 255 bytes each".into(),
                ));
            };
            let mut auth = Vec::with_capacity(3 + user.len() + password.len());
            auth.extend_from_slice(&[AUTH_VERSION, user_len]);
            auth.extend_from_slice(user);
            auth.push(password_len);
            auth.extend_from_slice(password);
            io.write_all(&auth).await.map_err(failed)?;
            let mut status = [0u8; 2];
            io.read_exact(&mut status).await.map_err(failed)?;
            if status[1] != 0x00 {
                return Err(ProxyError::AuthRequired {
                    proxy: proxy.name(),
                    credentials_sent: true,
                }
                .into());
            }
        }
        (NO_ACCEPTABLE_METHOD, _) => {
            return Err(ProxyError::AuthRequired {
                proxy: proxy.name(),
                credentials_sent: proxy.credentials.is_some(),
            }
            .into());
        }
        _ => return Err(bad("the proxy chose a method that was not offered").into()),
    }

    let mut request = vec![VERSION, CMD_CONNECT, 0x00];
    request.extend_from_slice(&address);
    request.extend_from_slice(&target.port.to_be_bytes());
    io.write_all(&request).await.map_err(failed)?;

    // VER REP RSV ATYP, then the bound address and port (unused).
    let mut reply = [0u8; 4];
    io.read_exact(&mut reply).await.map_err(failed)?;
    if reply[0] != VERSION {
        return Err(bad("not a SOCKS5 reply to the request").into());
    }
    if reply[1] != 0x00 {
        return Err(ProxyError::Socks {
            proxy: proxy.name(),
            reply: reply[1],
        }
        .into());
    }
    let bound_len = match reply[3] {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_DOMAIN => {
            let mut len = [0u8; 1];
            io.read_exact(&mut len).await.map_err(failed)?;
            usize::from(len[0])
        }
        _ => return Err(bad("unknown address type in the reply").into()),
    };
    let mut bound = [0u8; 255 + 2];
    io.read_exact(&mut bound[..bound_len + 2])
        .await
        .map_err(failed)?;
    Ok(())
}

/// ATYP and DST.ADDR for the target.
async fn address(target: &Target, remote_dns: bool) -> Result<Vec<u8>> {
    let ip = match &target.host {
        TargetHost::Addr(ip) => *ip,
        TargetHost::Domain(domain) if remote_dns => {
            let Ok(len) = u8::try_from(domain.len()) else {
                return Err(Error::Syntax(format!(
                    "the host name {domain:?} is over 255 bytes, too long for SOCKS5"
                )));
            };
            let mut address = vec![ATYP_DOMAIN, len];
            address.extend_from_slice(domain.as_bytes());
            return Ok(address);
        }
        TargetHost::Domain(_) => match target.resolve().await?.first() {
            Some(addr) => addr.ip(),
            None => {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the host resolved to no address",
                )));
            }
        },
    };
    Ok(match ip {
        std::net::IpAddr::V4(ip) => [&[ATYP_IPV4][..], &ip.octets()].concat(),
        std::net::IpAddr::V6(ip) => [&[ATYP_IPV6][..], &ip.octets()].concat(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_by_name_or_ip() {
        let named = Target::parse("ws://localhost:9/").unwrap();
        assert_eq!(
            address(&named, true).await.unwrap(),
            b"\x03\x09localhost".to_vec()
        );
        let v4 = Target::parse("ws://127.0.0.1:9/").unwrap();
        assert_eq!(address(&v4, true).await.unwrap(), vec![0x01, 127, 0, 0, 1]);
        let v6 = Target::parse("ws://[::1]:9/").unwrap();
        let mut expected = vec![0x04];
        expected.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(address(&v6, false).await.unwrap(), expected);
        // socks5:// resolves here: localhost is sent as an address.
        let local = address(&named, false).await.unwrap();
        assert!(matches!(local[0], 0x01 | 0x04), "{local:?}");
    }
}
