//! The little HTTP the server needs besides WebSocket upgrades: read a request head,
//! tell an upgrade from a page request, answer the latter (the demo page, 404, 426),
//! and give the former to the WebSocket acceptor *with the bytes already read*
//! ([`Rewind`]).
//!
//! HTTP/1.1 only, one request per connection (`Connection: close`), heads up to
//! 16 KiB: enough for a page and its socket; anything more belongs in a real HTTP
//! server in front (the library plugs into hyper/axum for that).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The demo page, embedded in the binary.
pub(super) const DEMO_PAGE: &str = include_str!("../../assets/demo.html");

/// The largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// The start of a request: what routing needs, and every byte read so far.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) method: String,
    /// The path of the target, without the query.
    pub(super) path: String,
    /// `Upgrade: websocket` was asked for.
    pub(super) upgrade: bool,
    /// The bytes read: the head and whatever followed it in the same reads.
    pub(super) buffered: Bytes,
}

/// Why no request head could be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum HeadError {
    /// The transport failed or ended: nobody to answer.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Over [`MAX_HEAD`]: answered 431, like the library's acceptor.
    #[error("request head over 16 KiB")]
    TooLarge,
    /// Not HTTP/1.1: answered 400.
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
}

impl HeadError {
    /// The answer the client gets, if it is still there to get one.
    pub(super) fn response(&self) -> Option<Response> {
        let (status, reason, body) = match self {
            HeadError::Io(_) => return None,
            HeadError::TooLarge => (
                431,
                "Request Header Fields Too Large",
                "request head over 16 KiB\n",
            ),
            HeadError::Malformed(_) => (400, "Bad Request", "malformed request head\n"),
        };
        Some(Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body,
            extra: "",
        })
    }
}

/// Read until a whole request head has arrived.
pub(super) async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<Head, HeadError> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(HeadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection ended inside the request head",
            )));
        }
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let target = request.path.unwrap_or("/");
                let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
                let upgrade = request.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("upgrade")
                        && String::from_utf8_lossy(h.value)
                            .split(',')
                            .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
                });
                return Ok(Head {
                    method: request.method.unwrap_or("GET").to_owned(),
                    path,
                    upgrade,
                    buffered: buf.freeze(),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(HeadError::TooLarge),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(error) => return Err(HeadError::Malformed(error)),
        }
    }
}

/// An HTTP response to a request that is not an upgrade.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Response {
    pub(super) status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: &'static str,
    extra: &'static str,
}

/// The answer to a plain request: the page (when `demo`), or why there is none.
pub(super) fn respond_plain(head: &Head, demo: bool) -> Response {
    let response = |status, reason, content_type, body| Response {
        status,
        reason,
        content_type,
        body,
        extra: "",
    };
    if head.method != "GET" && head.method != "HEAD" {
        return Response {
            extra: "Allow: GET, HEAD\r\n",
            ..response(
                405,
                "Method Not Allowed",
                "text/plain",
                "GET or HEAD only\n",
            )
        };
    }
    match (demo, head.path.as_str()) {
        (true, "/" | "/index.html") => response(200, "OK", "text/html; charset=utf-8", DEMO_PAGE),
        (true, "/favicon.ico") => response(204, "No Content", "text/plain", ""),
        (true, "/ws" | "/chat") | (false, _) => Response {
            extra: "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            ..response(
                426,
                "Upgrade Required",
                "text/plain",
                "This is a WebSocket endpoint: connect with a WebSocket client.\n",
            )
        },
        (true, _) => response(
            404,
            "Not Found",
            "text/plain",
            "Not found. The demo page is at /\n",
        ),
    }
}

/// Write `response` (without its body for HEAD) and end the connection.
pub(super) async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    response: &Response,
    method: &str,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.reason,
        response.content_type,
        response.body.len(),
        response.extra,
    );
    io.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        io.write_all(response.body.as_bytes()).await?;
    }
    io.flush().await?;
    io.shutdown().await
}

/// Answer a request that could not be read (431, 400), then read on for a moment: a
/// client still sending its head would otherwise get a reset for the bytes we left
/// unread, which can destroy the answer before it reads it. Bounded: at most 1 s and
/// 256 KiB more.
pub(super) async fn answer_and_linger<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    response: &Response,
) {
    if let Err(error) = write_response(io, response, "GET").await {
        tracing::debug!(%error, "writing the error response failed");
        return;
    }
    let drain = async {
        let mut scratch = [0u8; 4096];
        let mut left = 256 * 1024usize;
        while left > 0 {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// A transport whose first reads replay bytes already read from it: the request head
/// the router looked at goes to the WebSocket acceptor as if unread.
#[derive(Debug)]
pub(super) struct Rewind<S> {
    prefix: Bytes,
    io: S,
}

impl<S> Rewind<S> {
    pub(super) fn new(prefix: Bytes, io: S) -> Self {
        Rewind { prefix, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn head_of(request: &str) -> Head {
        let mut input = request.as_bytes();
        read_head(&mut input).await.unwrap()
    }

    #[tokio::test]
    async fn tells_an_upgrade_from_a_page_request() {
        let page = head_of("GET /?x=1 HTTP/1.1\r\nHost: h\r\n\r\n").await;
        assert!(!page.upgrade);
        assert_eq!(page.path, "/");
        assert_eq!(respond_plain(&page, true).status, 200);
        assert_eq!(respond_plain(&page, false).status, 426);
        let upgrade = head_of(
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .await;
        assert!(upgrade.upgrade);
        assert_eq!(upgrade.path, "/ws");
    }

    #[tokio::test]
    async fn answers_other_paths_and_methods() {
        let missing = head_of("GET /nope HTTP/1.1\r\nHost: h\r\n\r\n").await;
        assert_eq!(respond_plain(&missing, true).status, 404);
        let post = head_of("POST / HTTP/1.1\r\nHost: h\r\n\r\n").await;
        assert_eq!(respond_plain(&post, true).status, 405);
    }

    #[tokio::test]
    async fn rewind_replays_the_head_then_reads_on() {
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n");
        let rest: &[u8] = b"frame bytes";
        let mut io = Rewind::new(head.clone(), rest);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, [&head[..], rest].concat());
    }

    #[tokio::test]
    async fn refuses_an_endless_head() {
        let endless = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        let mut input = endless.as_bytes();
        assert!(read_head(&mut input).await.is_err());
    }
}
