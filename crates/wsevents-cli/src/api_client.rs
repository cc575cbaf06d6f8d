//! `wsevents pub --api URL --api-key-file FILE`: publish through a server's HTTP API
//! (docs/api.md) instead of wsevents.v1, as an application backend would: one
//! `POST /api/publish` per message, in order, each on a connection of its own (the
//! server answers one request per connection), over hyper's HTTP/1.1 client, with TLS
//! for `https://`.
//!
//! Every message carries an idempotency key made of this run's id and its number, so
//! a message whose answer was lost (the connection dropped, a 503 while Redis was
//! away) is sent again, after the server's `Retry-After` or a backoff, and stored once.
//! `--max-retries` bounds the attempts in a row (default: no bound) and `--max-delay`
//! the wait between them. A refusal (4xx) stops at once, with the server's message.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use wsevents::MaybeTlsStream;

use crate::Result;

/// The largest answer read, in bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The first wait before sending a message again (doubling, up to `--max-delay`),
/// when the server says nothing of it.
const FIRST_DELAY: Duration = Duration::from_millis(200);

/// A server's API, and how to reach it.
pub(crate) struct ApiClient {
    /// `http` or `https`.
    tls: Option<tokio_rustls::TlsConnector>,
    host: String,
    port: u16,
    /// The URL's path, without its trailing `/` (the API is under it).
    base: String,
    key: String,
    /// This run's part of every idempotency key.
    run: String,
    max_retries: Option<u32>,
    max_delay: Duration,
}

/// What one attempt got.
enum Attempt {
    Stored(Value),
    /// Worth sending again (after this long, if the server said).
    Again(String, Option<Duration>),
}

impl ApiClient {
    /// A client of the API at `url` with the first key of `key_file`.
    pub(crate) fn new(
        url: &str,
        key_file: &Path,
        tls: Option<Arc<rustls::ClientConfig>>,
        max_retries: Option<u32>,
        max_delay: Duration,
    ) -> Result<ApiClient> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("--api {url:?}: not a URL ({e})"))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("--api {url:?}: an http:// or https:// URL").into()),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("--api {url:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let text = std::fs::read_to_string(key_file)
            .map_err(|e| format!("--api-key-file {}: {e}", key_file.display()))?;
        let key = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| format!("--api-key-file {}: no key in it", key_file.display()))?
            .to_owned();
        let tls = match (secure, tls) {
            (false, _) => None,
            (true, Some(config)) => Some(tokio_rustls::TlsConnector::from(config)),
            (true, None) => Some(tokio_rustls::TlsConnector::from(
                wsevents::tls::webpki_client_config()?,
            )),
        };
        Ok(ApiClient {
            tls,
            host,
            port,
            base: uri.path().trim_end_matches('/').to_owned(),
            key,
            run: run_id(),
            max_retries,
            max_delay,
        })
    }

    /// Publish `data` (text) to `topic` as message number `n` of this run, sending
    /// it again while the server cannot take it; its answer (`{"epoch", "offset"}`).
    pub(crate) async fn publish(&self, topic: &str, data: &str, n: u64) -> Result<Value> {
        let body = json!({"topic": topic, "data": data, "key": format!("{}-{n}", self.run)});
        let body = Bytes::from(body.to_string());
        let mut failures = 0u32;
        let mut delay = FIRST_DELAY;
        loop {
            let (why, after) = match self.attempt("/api/publish", body.clone()).await? {
                Attempt::Stored(answer) => return Ok(answer),
                Attempt::Again(why, after) => (why, after),
            };
            failures += 1;
            if self.max_retries.is_some_and(|max| failures > max) {
                return Err(format!("publish failed after {failures} attempts: {why}").into());
            }
            let wait = after.unwrap_or(delay).min(self.max_delay);
            eprintln!(
                "wsevents: {why}; sending again in {:.1}s",
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.max_delay);
        }
    }

    /// One `POST` of `body` to `path`: stored, worth sending again, or refused (an
    /// error).
    async fn attempt(&self, path: &str, body: Bytes) -> Result<Attempt> {
        let sent = tokio::time::timeout(REQUEST_TIMEOUT, self.post(path, body)).await;
        let (status, retry_after, answer) = match sent {
            Err(_) => {
                return Ok(Attempt::Again(
                    format!("no answer within {REQUEST_TIMEOUT:?}"),
                    None,
                ));
            }
            Ok(Err(error)) => return Ok(Attempt::Again(error, None)),
            Ok(Ok(answer)) => answer,
        };
        let value: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        let message = || {
            let error = &value["error"];
            match (error["code"].as_str(), error["message"].as_str()) {
                (Some(code), Some(message)) => format!("{status} {code}: {message}"),
                _ => format!("{status}: {}", String::from_utf8_lossy(&answer)),
            }
        };
        match status {
            StatusCode::OK => Ok(Attempt::Stored(value)),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
                Ok(Attempt::Again(message(), retry_after))
            }
            _ => Err(format!("the server refused: {}", message()).into()),
        }
    }

    /// `POST` on a connection of its own: the status, `Retry-After` and the body.
    async fn post(
        &self,
        path: &str,
        body: Bytes,
    ) -> std::result::Result<(StatusCode, Option<Duration>, Bytes), String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        let io = match &self.tls {
            None => MaybeTlsStream::Plain(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("{}: {e}", self.host))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.host))?;
                MaybeTlsStream::Tls(Box::new(stream.into()))
            }
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let driver = tokio::spawn(connection);
        let authority = match self.port {
            80 | 443 => self.host.clone(),
            port => format!("{}:{port}", self.host),
        };
        let request = Request::post(format!("{}{path}", self.base))
            .header(HOST, authority)
            .header(AUTHORIZATION, format!("Bearer {}", self.key))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| format!("the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let answer = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("the answer: {e}"))?
            .to_bytes();
        driver.abort();
        Ok((status, retry_after, answer))
    }
}

/// An id for this run's idempotency keys: another run's is unlikely to be the same.
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!("wsevents-pub-{:016x}", hasher.finish())
}
