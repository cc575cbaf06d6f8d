//! `wsevents connect URL`: a client for the terminal and for scripts, built on the
//! event API, so it speaks the seed's vocabulary: the handlers print `open`, each
//! message, `error …` and `close CODE REASON WASCLEAN`, one line each, in the order the
//! events happen ([`crate::printer`] says how each is written: plain for scripts,
//! prefixed `< ` / `> ` / `* ` on a terminal or with `--prefix`, raw with `--binary`).
//!
//! Input is line by line: a line is a text message; `/binary HEX`, `/ping [DATA]` and
//! `/close [CODE [REASON]]` are commands (`//…` sends a line that starts with `/`).
//! `/ping` prints the pong that answers it as `pong DATA RTT` (`RTT` like `0.183ms`);
//! with `--show-ping-pong` every ping (`ping DATA`) and pong received is printed, a pong
//! that answers nothing of ours with `-` for its RTT. A payload that is not printable
//! UTF-8 (a keepalive ping's 8-byte counter) is printed as `0x` and hex. With
//! `--binary`, input is read in chunks instead, each sent as a binary message.
//!
//! When the input ends (Ctrl-D, the end of a pipe, the last `-x` message) the socket is
//! closed with 1000 — after `--wait SECS`, or once `--max-messages` (`-1`, `-x`) have
//! been received — and the command exits when the close event comes, with 0 if it was
//! clean and 1 otherwise. That makes it scriptable: `printf 'a\nb\n' | wsevents connect
//! URL` prints `open`, the echoes of `a` and `b`, then `close 1000  true`.
//!
//! Local mistakes (bad hex, sending while closed) go to stderr, so stdout holds only
//! the connection's events; so do `--verbose`'s handshake request (`> `) and response
//! (`< `), curl's way.

use std::collections::VecDeque;
use std::fs::File;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::watch;
use wsevents::{BinaryType, ClientBuilder, Config, Data, WebSocket};

use crate::printer::{Printer, Style};
use crate::{Result, hex};

/// Options of `wsevents connect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The server: ws://HOST[:PORT]/PATH or wss://… (http:// and https:// also work)
    url: String,
    /// Offer this subprotocol (repeatable; the server picks one)
    #[arg(long = "protocol", short = 'p', value_name = "NAME")]
    protocols: Vec<String>,
    /// Add a header to the upgrade request (repeatable)
    #[arg(long = "header", short = 'H', value_name = "K:V", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Send this Origin header
    #[arg(long, value_name = "ORIGIN")]
    origin: Option<String>,
    /// Trust the CA certificate(s) in this PEM file for wss:// (instead of the Mozilla roots)
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Do not check the server's certificate (self-signed test servers; still encrypted)
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// Present this PEM client certificate (chain) to the server: mutual TLS (needs --key)
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Connect through this proxy: http://[USER:PW@]HOST:PORT (CONNECT), https://… (TLS
    /// to the proxy), socks5://… (names resolved here) or socks5h://… (by the proxy).
    /// Without it the proxy comes from HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY
    /// as curl reads them
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    proxy: Option<String>,
    /// Connect directly, whatever the proxy variables of the environment say
    #[arg(long)]
    no_proxy: bool,
    /// Append received binary messages to FILE instead of printing them as hex
    #[arg(long, value_name = "FILE", conflicts_with = "binary")]
    binary_file: Option<PathBuf>,
    /// Binary mode: standard input is read in chunks (as they come, up to 64 KiB), each
    /// sent as a binary message (no commands); every message received is written to
    /// standard output as is, and nothing else is: events go to stderr
    #[arg(long, short = 'b')]
    binary: bool,
    /// Send MESSAGE once open (a line as typed: `/binary HEX` works), then close after
    /// the reply instead of reading standard input; repeatable, one reply each (or
    /// --max-messages)
    #[arg(long = "execute", short = 'x', value_name = "MESSAGE")]
    execute: Vec<String>,
    /// Close (with 1000) once N messages have been received, printing no more
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_messages: Option<u64>,
    /// Close after one message received: --max-messages 1
    #[arg(short = '1', conflicts_with = "max_messages")]
    one: bool,
    /// When the input ends, wait SECONDS (still printing what comes) before closing;
    /// with --max-messages or -x, the longest to wait for the replies
    #[arg(
        long,
        short = 'w',
        value_name = "SECONDS",
        conflicts_with = "keep_open",
        value_parser = crate::seconds::seconds
    )]
    wait: Option<Duration>,
    /// When the input ends, stay connected until the server closes
    #[arg(long)]
    keep_open: bool,
    /// Prefix every line: `< ` received, `> ` sent, `* ` an event (`<b `, `>b ` for
    /// binary, as hex); the default when standard output is a terminal
    #[arg(long, conflicts_with = "binary")]
    prefix: bool,
    /// Print the handshake request (`> `) and response (`< `) on stderr
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Do not offer permessage-deflate (offered by default, as browsers do)
    #[arg(long)]
    no_deflate: bool,
    /// Fail the connection (1009) on a message received over BYTES (default 64 MiB)
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    max_size: Option<u64>,
    /// Give up if the connection is not open after this long
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = crate::seconds::positive_seconds)]
    connect_timeout: Duration,
    /// Send a keepalive ping after SECONDS with nothing received (default 20); the
    /// connection fails if the server then sends nothing for 20 s. 0 turns keepalive off
    #[arg(long, value_name = "SECONDS", value_parser = crate::seconds::seconds)]
    ping_interval: Option<Duration>,
    /// Print every ping (`ping DATA`) and pong (`pong DATA RTT`) received, not only the
    /// pongs that answer /ping (keepalive pongs carry an 8-byte counter, shown as hex)
    #[arg(long)]
    show_ping_pong: bool,
}

/// The payloads of `/ping`s not answered yet and when they were sent, oldest first: a
/// pong with one of them answers it (and any older one, which the peer may have
/// skipped). The library knows the round trip of the latest ping only; this keeps one
/// for each `/ping` typed, however fast they come.
type Pending = Arc<Mutex<VecDeque<(Bytes, Instant)>>>;

/// How many unanswered `/ping`s are remembered.
const MAX_PENDING_PINGS: usize = 64;

/// `--binary`: the most read from standard input into one message.
const CHUNK: usize = 64 * 1024;

/// Input waits while more than this is queued to send, so that a large file piped in
/// goes out at the network's pace instead of filling the send queue (16 MiB) and
/// failing.
const SEND_AHEAD: u64 = 1 << 20;

/// `Name: value` (or `Name:value`) as a header (`connect`, `sub` and `pub`).
pub(crate) fn parse_header(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected 'Name: value', got '{text}'")),
    }
}

/// What happens once the input ends.
#[derive(Debug, Clone, Copy)]
struct Ending {
    /// `--keep-open`: nothing, the server closes.
    keep_open: bool,
    /// `--wait`: this long first.
    wait: Option<Duration>,
    /// `--max-messages`, `-1`, `-x`: the message handler closes after that many.
    awaiting_replies: bool,
}

/// Connect, print events, send input, exit after the close.
pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let wait = args.wait;
    let mut config = Config::default();
    if let Some(interval) = args.ping_interval {
        config.ping_interval = crate::seconds::unless_zero(interval);
    }
    if let Some(max) = args.max_size {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        config.max_message_size = max;
        config.max_frame_size = config.max_frame_size.min(max);
    }
    let mut builder = ClientBuilder::new(&args.url)?
        .protocols(&args.protocols)?
        .config(config)
        .connect_timeout(args.connect_timeout);
    if args.no_deflate {
        builder = builder.deflate(None);
    }
    for (name, value) in &args.headers {
        builder = builder.header(name.clone(), value.clone());
    }
    if let Some(origin) = &args.origin {
        builder = builder.origin(origin.clone());
    }
    if let Some(config) = crate::tls::client_config(args.ca.as_deref(), args.insecure)? {
        builder = builder.tls_config(config);
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let (cert, key) = crate::tls::client_identity(cert, key)?;
        builder = builder.client_certificate(&cert, &key)?;
    }
    if let Some(proxy) = &args.proxy {
        builder =
            builder.proxy(wsevents::Proxy::parse(proxy).map_err(|e| format!("--proxy: {e}"))?);
    } else if args.no_proxy {
        builder = builder.no_proxy();
    }
    let binary_file = match &args.binary_file {
        Some(path) => Some((
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            path.display().to_string(),
        )),
        None => None,
    };
    let style = if args.binary {
        Style::Raw
    } else if args.prefix || std::io::stdout().is_terminal() {
        Style::Prefixed
    } else {
        Style::Plain
    };
    let out = Arc::new(Printer::new(style, binary_file));
    let max_messages = match (args.max_messages, args.one) {
        (Some(n), _) => Some(n),
        (None, true) => Some(1),
        (None, false) if !args.execute.is_empty() => Some(args.execute.len() as u64),
        (None, false) => None,
    };
    let ending = Ending {
        keep_open: args.keep_open,
        wait,
        awaiting_replies: max_messages.is_some(),
    };

    let ws = WebSocket::connecting(builder);
    ws.set_binary_type(BinaryType::ArrayBuffer);
    let (opened, wait_open) = watch::channel(false);
    let interactive = std::io::stdin().is_terminal() && args.execute.is_empty();
    let handle = ws.clone();
    let printer = out.clone();
    let verbose = args.verbose;
    let binary = args.binary;
    ws.on_open(move |_| {
        if verbose {
            print_handshake(&handle);
        }
        printer.event("open");
        let protocol = handle.protocol();
        let extensions = handle.extensions();
        if interactive {
            eprintln!(
                "# protocol: {}  extensions: {}",
                or_none(&protocol),
                or_none(&extensions)
            );
            if binary {
                eprintln!("# what you type is sent as binary, chunk by chunk; Ctrl-D closes");
            } else {
                eprintln!(
                    "# type a line to send it; /binary HEX, /ping [DATA], /close [CODE [REASON]]; \
                     Ctrl-D closes"
                );
            }
        }
        let _ = opened.send(true);
    });
    let printer = out.clone();
    let received = AtomicU64::new(0);
    let closer = ws.clone();
    ws.on_message(move |e| {
        let n = received.fetch_add(1, Ordering::Relaxed) + 1;
        if max_messages.is_some_and(|max| n > max) {
            // Arrived while closing, after the last one asked for.
            return;
        }
        match &e.data {
            Data::Text(text) => printer.received_text(text),
            other => printer.received_binary(other.as_bytes()),
        }
        if max_messages == Some(n) {
            let _ = closer.close_with(1000, "");
        }
    });
    let pending = Pending::default();
    if args.show_ping_pong {
        let printer = out.clone();
        ws.on_ping(move |e| printer.event(&format!("ping {}", payload(&e.data))));
    }
    let answered = pending.clone();
    let show_all = args.show_ping_pong;
    let printer = out.clone();
    ws.on_pong(move |e| {
        let mut pending = answered.lock().unwrap_or_else(|e| e.into_inner());
        let ours = pending.iter().position(|(data, _)| *data == e.data);
        let sent_at = ours.and_then(|i| pending.drain(..=i).last().map(|(_, at)| at));
        drop(pending);
        match sent_at {
            Some(at) => printer.event(&pong_line(&e.data, e.rtt.or(Some(at.elapsed())))),
            None if show_all => printer.event(&pong_line(&e.data, e.rtt)),
            None => {}
        }
    });
    let printer = out.clone();
    let handle = ws.clone();
    ws.on_error(move |e| {
        // A failed handshake: the request that was refused (the error has the status).
        if verbose && handle.response().is_none() {
            print_handshake(&handle);
        }
        printer.event(&format!("error {}", e.message()));
    });
    let printer = out.clone();
    ws.on_close(move |e| printer.event(&format!("close {} {} {}", e.code, e.reason, e.was_clean)));

    let input = Input {
        ws: ws.clone(),
        out,
        pending,
        ending,
    };
    let input = tokio::spawn(input.run(wait_open, args.binary, args.execute));
    let closer = ws.clone();
    let closed = tokio::select! {
        closed = ws.run() => closed,
        _ = tokio::signal::ctrl_c() => {
            let _ = closer.close_with(1000, "");
            ws.run().await
        }
    };
    input.abort();
    Ok(if closed.was_clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--verbose`: the request sent and the response received, on stderr, curl's way.
fn print_handshake(ws: &WebSocket) {
    let mut lines = Vec::new();
    if let Some(request) = ws.request() {
        lines.push(format!("> {} {} HTTP/1.1", request.method(), request.uri()));
        for (name, value) in request.headers() {
            lines.push(format!(
                "> {name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        // The head ends with an empty line, which a `>` alone marks.
        lines.push(">".to_owned());
    }
    if let Some(response) = ws.response() {
        lines.push(format!("< HTTP/1.1 {}", response.status().as_u16()));
        for (name, value) in response.headers() {
            lines.push(format!(
                "< {name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        lines.push("<".to_owned());
    }
    eprintln!("{}", lines.join("\n"));
}

/// The input side: stdin or `-x`, sent once open; then the ending.
struct Input {
    ws: WebSocket,
    out: Arc<Printer>,
    pending: Pending,
    ending: Ending,
}

impl Input {
    async fn run(self, mut opened: watch::Receiver<bool>, binary: bool, execute: Vec<String>) {
        if opened.wait_for(|&open| open).await.is_err() {
            return;
        }
        if !execute.is_empty() {
            for line in &execute {
                self.line(line);
            }
        } else if binary {
            self.send_chunks().await;
        } else {
            self.send_lines().await;
        }
        let ending = self.ending;
        if ending.keep_open {
            return;
        }
        match ending.wait {
            Some(wait) => tokio::time::sleep(wait).await,
            // The message handler closes after the last reply.
            None if ending.awaiting_replies => return,
            None => {}
        }
        let _ = self.ws.close_with(1000, "");
    }

    /// Each line of stdin, until it ends.
    async fn send_lines(&self) {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    self.line(line.strip_suffix('\r').unwrap_or(&line));
                    self.drain().await;
                }
                Ok(None) => break,
                Err(error) => {
                    eprintln!("wsevents: reading standard input: {error}");
                    break;
                }
            }
        }
    }

    /// `--binary`: each read of stdin as a binary message, until it ends.
    async fn send_chunks(&self) {
        let mut stdin = tokio::io::stdin();
        loop {
            let mut chunk = BytesMut::with_capacity(CHUNK);
            match stdin.read_buf(&mut chunk).await {
                Ok(0) => break,
                Ok(_) => {
                    if let Err(error) = self.ws.send(chunk.freeze()) {
                        eprintln!("wsevents: {error}");
                    }
                    self.drain().await;
                }
                Err(error) => {
                    eprintln!("wsevents: reading standard input: {error}");
                    break;
                }
            }
        }
    }

    /// Wait while much is queued to send (see [`SEND_AHEAD`]).
    async fn drain(&self) {
        while self.ws.buffered_amount() > SEND_AHEAD {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Run one line; a local mistake goes to stderr.
    fn line(&self, line: &str) {
        if let Err(error) = command(&self.ws, line, &self.pending, &self.out) {
            eprintln!("wsevents: {error}");
        }
    }
}

/// One line of input: a command or a text message.
fn command(ws: &WebSocket, line: &str, pending: &Pending, out: &Printer) -> Result<()> {
    let (word, rest) = match line.split_once(' ') {
        Some((word, rest)) => (word, rest),
        None => (line, ""),
    };
    match word {
        "/binary" => {
            let bytes = hex::decode(rest).map_err(|e| format!("/binary: {e}"))?;
            // Shown before it goes: the reply (and the exit after it) may come first.
            out.sent_binary(&bytes);
            ws.send(bytes.as_slice())?;
        }
        "/ping" => {
            let data = Bytes::copy_from_slice(rest.as_bytes());
            // Recorded first: the pong may be read before `ping` returns.
            let mut waiting = pending.lock().unwrap_or_else(|e| e.into_inner());
            if waiting.len() == MAX_PENDING_PINGS {
                // A peer that never answers: forget the oldest.
                waiting.pop_front();
            }
            waiting.push_back((data.clone(), Instant::now()));
            if let Err(error) = ws.ping(data) {
                waiting.pop_back();
                return Err(error.into());
            }
        }
        "/close" if rest.trim().is_empty() => ws.close()?,
        "/close" => {
            let (code, reason) = rest
                .trim_start()
                .split_once(' ')
                .unwrap_or((rest.trim(), ""));
            let code: u16 = code
                .parse()
                .map_err(|_| format!("/close: '{code}' is not a close code"))?;
            ws.close_with(code, reason)?;
        }
        _ if line.starts_with("//") => {
            out.sent_text(&line[1..]);
            ws.send(&line[1..])?;
        }
        _ if line.starts_with('/') => {
            return Err(format!(
                "unknown command {word} (commands: /binary HEX, /ping [DATA], \
                 /close [CODE [REASON]]; start a line with // to send it as text)"
            )
            .into());
        }
        _ => {
            out.sent_text(line);
            ws.send(line)?;
        }
    }
    Ok(())
}

/// `pong DATA RTT`: the round trip in milliseconds, `-` when unknown.
fn pong_line(data: &[u8], rtt: Option<Duration>) -> String {
    match rtt {
        Some(rtt) => format!("pong {} {:.3}ms", payload(data), rtt.as_secs_f64() * 1e3),
        None => format!("pong {} -", payload(data)),
    }
}

/// A ping or pong payload: as text when it is printable UTF-8, else `0x` and hex (a
/// keepalive's counter, random bytes).
fn payload(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => format!("0x{}", hex::encode(data)),
    }
}

fn or_none(text: &str) -> &str {
    if text.is_empty() { "(none)" } else { text }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn headers_parse_with_or_without_space() {
        assert_eq!(
            parse_header("Authorization: Bearer x").unwrap(),
            ("Authorization".into(), "Bearer x".into())
        );
        assert_eq!(parse_header("K:V").unwrap(), ("K".into(), "V".into()));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": empty name").is_err());
    }

    #[test]
    fn pongs_print_text_or_hex_and_the_rtt_in_milliseconds() {
        assert_eq!(
            pong_line(b"hi", Some(Duration::from_micros(1500))),
            "pong hi 1.500ms"
        );
        assert_eq!(pong_line(b"\xff\x01", None), "pong 0xff01 -");
        assert_eq!(
            pong_line(b"\0\x01", None),
            "pong 0x0001 -",
            "control characters"
        );
        assert_eq!(payload("κόσμε".as_bytes()), "κόσμε");
    }
}
