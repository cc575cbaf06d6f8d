//! The HTTP side of `serve`, on hyper: each connection is served by hyper's HTTP/1.1
//! server (its parser, its limits), and every request gets one of three answers:
//!
//! ```text
//!  request ─┬─ Upgrade: websocket ─► Lifecycle::upgrade (503 past the cap) ─► 101 + a task
//!           ├─ the page, /wsevents.js, a file (--dir) ─► 200
//!           └─ otherwise ─► 404, 405, or 426 on a WebSocket path
//! ```
//!
//! Limits: a request head over [`MAX_HEAD`] bytes is answered 431 (hyper's
//! `max_header_size`), and the head must arrive within the handshake timeout
//! (`header_read_timeout`): a client that trickles it in a byte at a time is closed
//! then. Plain answers end the connection (`Connection: close`): the server serves a
//! page and its sockets, not a site. Header names are written in title case, as
//! before hyper.

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue,
    UPGRADE,
};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

/// The demo page, embedded in the binary.
pub(super) const DEMO_PAGE: &str = include_str!("../../assets/demo.html");

/// The browser's wsevents.v1 client (an ES module, docs/protocol.md), at `/wsevents.js`.
pub(super) const CLIENT_MODULE: &str = include_str!("../../assets/wsevents.js");

/// The largest request head read (431 past it).
pub(super) const MAX_HEAD: usize = 16 * 1024;

/// Every answer's body.
pub(super) type Body = Full<Bytes>;

/// `request` asks for a WebSocket: `Upgrade: websocket` on HTTP/1.1.
pub(super) fn is_upgrade<B>(request: &http::Request<B>) -> bool {
    request.headers().get_all(UPGRADE).iter().any(|value| {
        String::from_utf8_lossy(value.as_bytes())
            .split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
    })
}

/// A response with a body and a content type, that ends the connection.
pub(super) fn plain(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The answer to a plain request: the page (when `demo`), or why there is none.
pub(super) fn respond_plain(method: &Method, path: &str, demo: bool) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or HEAD only\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match (demo, path) {
        (true, "/" | "/index.html") => plain(StatusCode::OK, "text/html; charset=utf-8", DEMO_PAGE),
        (true, "/wsevents.js") => {
            let mut response = plain(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                CLIENT_MODULE,
            );
            // A module imported from another origin needs CORS; the file is public.
            response
                .headers_mut()
                .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            response
        }
        (true, "/favicon.ico") => plain(StatusCode::NO_CONTENT, "text/plain", ""),
        (true, "/ws" | "/chat") | (false, _) => {
            let mut response = plain(
                StatusCode::UPGRADE_REQUIRED,
                "text/plain",
                "This is a WebSocket endpoint: connect with a WebSocket client.\n",
            );
            let headers = response.headers_mut();
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
            response
        }
        (true, _) => plain(
            StatusCode::NOT_FOUND,
            "text/plain",
            "Not found. The demo page is at /\n",
        ),
    }
}

/// The library's answer to an upgrade (a `String` body), as `serve`'s.
pub(super) fn from_library(response: Response<String>) -> Response<Body> {
    response.map(|body| Full::new(Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tells_an_upgrade_from_a_page_request() {
        let page = http::Request::get("/").body(()).unwrap();
        assert!(!is_upgrade(&page));
        let upgrade = http::Request::get("/ws")
            .header("Upgrade", "h2c, WebSocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(&upgrade));
        assert_eq!(respond_plain(&Method::GET, "/", true).status(), 200);
        assert_eq!(respond_plain(&Method::GET, "/", false).status(), 426);
    }

    #[test]
    fn serves_the_client_module() {
        let module = respond_plain(&Method::GET, "/wsevents.js", true);
        assert_eq!(module.status(), 200);
        assert_eq!(
            module.headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(module.headers()["access-control-allow-origin"], "*");
        assert!(CLIENT_MODULE.contains("export class WseventsClient"));
        assert_eq!(
            respond_plain(&Method::GET, "/wsevents.js", false).status(),
            426
        );
    }

    #[test]
    fn answers_other_paths_and_methods() {
        assert_eq!(respond_plain(&Method::GET, "/nope", true).status(), 404);
        let post = respond_plain(&Method::POST, "/", true);
        assert_eq!(post.status(), 405);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        let ws = respond_plain(&Method::GET, "/ws", true);
        assert_eq!(ws.status(), 426);
        assert_eq!(ws.headers()["sec-websocket-version"], "13");
        assert_eq!(ws.headers()[CONNECTION], "close");
    }
}
