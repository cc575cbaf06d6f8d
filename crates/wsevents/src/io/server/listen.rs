//! Binding a listener with a listen backlog sized for bursts of connections.
//!
//! `TcpListener::bind` asks the kernel for a backlog of 1,024 connections that finished
//! the TCP handshake and wait for `accept`. A burst larger than that (a fleet of clients
//! reconnecting at once after a restart) overflows it, and the overflow waits in SYN
//! retries for a second or more, some past 30 s. [`bind_listener`] asks for
//! [`DEFAULT_BACKLOG`] instead; the kernel caps it at `net.core.somaxconn` (4,096 on
//! current Linux).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};

/// The listen backlog [`bind_listener`] and [`Server::bind`](crate::Server) ask for.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Bind a TCP listener on the first of `addr`'s addresses that binds, with
/// `SO_REUSEADDR` (a restarted server binds while old connections are in TIME_WAIT) and
/// a listen backlog of `backlog`.
///
/// ```
/// # async fn demo() -> std::io::Result<()> {
/// let listener = wsevents::bind_listener("127.0.0.1:0", wsevents::DEFAULT_BACKLOG).await?;
/// println!("listening on {}", listener.local_addr()?);
/// # Ok(()) }
/// ```
pub async fn bind_listener(addr: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match bind_one(addr, backlog) {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")))
}

fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_and_accepts() {
        let listener = bind_listener("127.0.0.1:0", 16)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = tokio::net::TcpStream::connect(addr);
        let (accepted, connected) = tokio::join!(listener.accept(), client);
        assert!(accepted.is_ok() && connected.is_ok());
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error() {
        let first = bind_listener("127.0.0.1:0", 16)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = first.local_addr().unwrap_or_else(|e| panic!("{e}"));
        // SO_REUSEADDR does not let two listeners share a port.
        assert!(bind_listener(addr, 16).await.is_err());
    }
}
