//! `wsevents connect URL`: a client for the terminal and for scripts, built on the
//! event API, so it speaks the seed's vocabulary: the handlers print `open`, each
//! message, `error …` and `close CODE REASON WASCLEAN`, one line each, in the order the
//! events happen.
//!
//! Input is line by line: a line is a text message; `/binary HEX`, `/ping [DATA]` and
//! `/close [CODE [REASON]]` are commands (`//…` sends a line that starts with `/`).
//! `/ping` prints the pong that answers it as `pong DATA RTT` (`RTT` like `0.183ms`);
//! with `--show-ping-pong` every ping (`ping DATA`) and pong received is printed, a pong
//! that answers nothing of ours with `-` for its RTT. A payload that is not printable
//! UTF-8 (a keepalive ping's 8-byte counter) is printed as `0x` and hex.
//! When the input ends (Ctrl-D, or the end of a pipe) the socket is closed with 1000,
//! and the command exits when the close event comes, with 0 if it was clean and 1
//! otherwise. That makes it scriptable: `printf 'a\nb\n' | wsevents connect URL`
//! prints `open`, the echoes of `a` and `b`, then `close 1000  true`.
//!
//! Local mistakes (bad hex, sending while closed) go to stderr, so stdout holds only
//! the connection's events.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use wsevents::{BinaryType, ClientBuilder, Config, Data, WebSocket};

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
    /// Append received binary messages to FILE instead of printing them as hex
    #[arg(long, value_name = "FILE")]
    binary_file: Option<PathBuf>,
    /// When the input ends, stay connected until the server closes
    #[arg(long)]
    keep_open: bool,
    /// Give up if the connection is not open after this long
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    connect_timeout: f64,
    /// Send a keepalive ping after SECONDS with nothing received (default 20); the
    /// connection fails if the server then sends nothing for 20 s. 0 turns keepalive off
    #[arg(long, value_name = "SECONDS")]
    ping_interval: Option<f64>,
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

/// `Name: value` (or `Name:value`) as a header.
fn parse_header(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected 'Name: value', got '{text}'")),
    }
}

/// `--ping-interval SECS` as the keepalive interval: 0 is none.
fn ping_interval(secs: f64) -> Result<Option<Duration>> {
    if !(secs >= 0.0 && secs.is_finite()) {
        return Err("--ping-interval must be 0 (off) or a positive number of seconds".into());
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// Connect, print events, send input, exit after the close.
pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    if !(args.connect_timeout > 0.0 && args.connect_timeout.is_finite()) {
        return Err("--connect-timeout must be a positive number of seconds".into());
    }
    let mut config = Config::default();
    if let Some(secs) = args.ping_interval {
        config.ping_interval = ping_interval(secs)?;
    }
    let mut builder = ClientBuilder::new(&args.url)?
        .protocols(&args.protocols)?
        .config(config)
        .connect_timeout(Duration::from_secs_f64(args.connect_timeout));
    for (name, value) in &args.headers {
        builder = builder.header(name.clone(), value.clone());
    }
    if let Some(origin) = &args.origin {
        builder = builder.origin(origin.clone());
    }
    if let Some(config) = crate::tls::client_config(args.ca.as_deref(), args.insecure)? {
        builder = builder.tls_config(config);
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

    let ws = WebSocket::connecting(builder);
    ws.set_binary_type(BinaryType::ArrayBuffer);
    let (opened, wait_open) = watch::channel(false);
    let interactive = std::io::stdin().is_terminal();
    let handle = ws.clone();
    ws.on_open(move |_| {
        say("open");
        let protocol = handle.protocol();
        let extensions = handle.extensions();
        if interactive {
            eprintln!(
                "# protocol: {}  extensions: {}",
                or_none(&protocol),
                or_none(&extensions)
            );
            eprintln!(
                "# type a line to send it; /binary HEX, /ping [DATA], /close [CODE [REASON]]; \
                 Ctrl-D closes"
            );
        }
        let _ = opened.send(true);
    });
    let binary_file = Arc::new(Mutex::new(binary_file));
    ws.on_message(move |e| match &e.data {
        Data::Text(text) => say(text),
        other => {
            let bytes = other.as_bytes();
            let mut file = binary_file.lock().unwrap_or_else(|e| e.into_inner());
            match file.as_mut() {
                None => say(&format!("binary {}", hex::encode(bytes))),
                Some((file, name)) => match file.write_all(bytes) {
                    Ok(()) => say(&format!("binary {} bytes to {name}", bytes.len())),
                    Err(error) => eprintln!("wsevents: cannot write to {name}: {error}"),
                },
            }
        }
    });
    let pending = Pending::default();
    if args.show_ping_pong {
        ws.on_ping(|e| say(&format!("ping {}", payload(&e.data))));
    }
    let answered = pending.clone();
    let show_all = args.show_ping_pong;
    ws.on_pong(move |e| {
        let mut pending = answered.lock().unwrap_or_else(|e| e.into_inner());
        let ours = pending.iter().position(|(data, _)| *data == e.data);
        let sent_at = ours.and_then(|i| pending.drain(..=i).last().map(|(_, at)| at));
        drop(pending);
        match sent_at {
            Some(at) => say(&pong_line(&e.data, e.rtt.or(Some(at.elapsed())))),
            None if show_all => say(&pong_line(&e.data, e.rtt)),
            None => {}
        }
    });
    ws.on_error(|e| say(&format!("error {}", e.message())));
    ws.on_close(|e| say(&format!("close {} {} {}", e.code, e.reason, e.was_clean)));

    let input = tokio::spawn(send_input(ws.clone(), wait_open, args.keep_open, pending));
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

/// Once open, send each input line (or run its command); at the end of the input,
/// close with 1000 unless `keep_open`.
async fn send_input(
    ws: WebSocket,
    mut opened: watch::Receiver<bool>,
    keep_open: bool,
    pending: Pending,
) {
    if opened.wait_for(|&open| open).await.is_err() {
        return;
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let line = line.strip_suffix('\r').unwrap_or(&line);
                if let Err(error) = command(&ws, line, &pending) {
                    eprintln!("wsevents: {error}");
                }
            }
            Ok(None) => break,
            Err(error) => {
                eprintln!("wsevents: reading standard input: {error}");
                break;
            }
        }
    }
    if !keep_open {
        let _ = ws.close_with(1000, "");
    }
}

/// One line of input: a command or a text message.
fn command(ws: &WebSocket, line: &str, pending: &Pending) -> Result<()> {
    let (word, rest) = match line.split_once(' ') {
        Some((word, rest)) => (word, rest),
        None => (line, ""),
    };
    match word {
        "/binary" => ws.send(hex::decode(rest).map_err(|e| format!("/binary: {e}"))?)?,
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
        _ if line.starts_with("//") => ws.send(&line[1..])?,
        _ if line.starts_with('/') => {
            return Err(format!(
                "unknown command {word} (commands: /binary HEX, /ping [DATA], \
                 /close [CODE [REASON]]; start a line with // to send it as text)"
            )
            .into());
        }
        _ => ws.send(line)?,
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

/// Print one line on stdout; a closed stdout is not worth a panic.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
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
    fn ping_interval_zero_is_off_and_negative_is_refused() {
        assert_eq!(ping_interval(0.0).unwrap(), None);
        assert_eq!(
            ping_interval(0.25).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert!(ping_interval(-1.0).is_err());
        assert!(ping_interval(f64::NAN).is_err());
        assert!(ping_interval(f64::INFINITY).is_err());
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
