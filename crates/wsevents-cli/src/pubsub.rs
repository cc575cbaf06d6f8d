//! `wsevents sub` and `wsevents pub`: the wsevents.v1 protocol (docs/protocol.md) from
//! the command line, on the library's [`wsevents::pubsub::Client`], so both reconnect
//! (full-jitter backoff, across the URL and every `--server`), resume their topics
//! from the positions they kept, and re-send unanswered publishes by key.
//!
//! - `sub` prints each publication's data on a line of its own (binary as hex, like
//!   `connect`), with `EPOCH:OFFSET ` before it under `--positions`; its notes
//!   (subscribed, recovered or not, connection lost, reconnected) go to stderr, so
//!   stdout carries data only.
//! - `pub` publishes MESSAGE, or each line of standard input as one message, in order,
//!   with up to [`WINDOW`] unanswered at once (`--pipeline`); it exits 0 once every one
//!   is answered. A line is never lost or stored twice across a reconnect: each keeps
//!   its key until the server answers. The order holds across reconnects (the
//!   unanswered ones are sent again oldest first) and across a burst of temporary
//!   errors (retried together, in order); only a temporary error on one line while a
//!   later one, already in flight, is stored could let the later one first:
//!   `--pipeline 1` waits for each answer and rules that out too.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use wsevents::hub::Position;
use wsevents::pubsub::{Client, Publishing};
use wsevents::{ClientBuilder, Message, Reconnect};

use crate::Result;
use crate::api_client::ApiClient;

/// The most publishes `pub` keeps unanswered at once by default (`--pipeline`); the
/// next line waits for the oldest answer.
pub(crate) const WINDOW: u16 = 256;

/// How the commands connect (shared by `sub` and `pub`).
#[derive(Debug, clap::Args)]
pub(crate) struct Connection {
    /// Another URL of the same service, tried in turn when a connection fails or is
    /// lost (repeatable)
    #[arg(long = "server", value_name = "URL")]
    servers: Vec<String>,
    /// Add a header to the upgrade request (repeatable)
    #[arg(long = "header", short = 'H', value_name = "K:V", value_parser = crate::connect::parse_header)]
    headers: Vec<(String, String)>,
    /// Trust the CA certificate(s) in this PEM file for wss://
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Do not check the server's certificate (self-signed test servers)
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// Connect directly, whatever the proxy variables of the environment say
    #[arg(long)]
    no_proxy: bool,
    /// Give up after N failed reconnects in a row (default: never)
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
    /// The longest wait between two attempts, in seconds
    #[arg(long, value_name = "SECONDS", default_value = "20", value_parser = crate::seconds::seconds)]
    max_delay: Duration,
    /// A connection token (JWT), sent first on every connection (`connect`)
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the connection token from this file, again on every connection and before
    /// it expires (so a token renewed in the file is picked up); a final newline is not
    /// part of it
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

impl Connection {
    /// The flags' mistakes found before connecting (a token file that cannot be read).
    fn check(&self) -> Result<()> {
        if let Some(path) = &self.token_file {
            read_token(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// The token in `path`, without its final newline.
fn read_token(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let token = text.trim_end_matches(['\n', '\r']).to_owned();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(token)
}

/// A usage error: said, and exit code 2.
fn usage(error: &crate::Error) -> ExitCode {
    eprintln!("wsevents: error: {error}");
    ExitCode::from(2)
}

/// `wsevents sub`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubArgs {
    /// The server's wsevents.v1 endpoint: ws://HOST[:PORT]/pubsub or wss://…
    url: String,
    #[command(flatten)]
    connection: Connection,
    /// The topics (one or more)
    #[arg(required = true, value_name = "TOPIC")]
    topics: Vec<String>,
    /// Start after this position (as printed by --positions), for every TOPIC: what was
    /// published since is received first, if the server still has it (stderr says
    /// `recovered true`)
    #[arg(long, value_name = "EPOCH:OFFSET")]
    since: Option<Position>,
    /// Print `EPOCH:OFFSET ` before each publication's data
    #[arg(long)]
    positions: bool,
    /// Exit (0) after N publications
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
}

/// `wsevents pub`.
#[derive(Debug, clap::Args)]
pub(crate) struct PubArgs {
    /// The server's wsevents.v1 endpoint: ws://HOST[:PORT]/pubsub or wss://… (left
    /// out with --api)
    #[arg(value_name = "URL", required_unless_present = "api")]
    url: Option<String>,
    #[command(flatten)]
    connection: Connection,
    /// The topic
    #[arg(value_name = "TOPIC", required_unless_present = "api")]
    topic: Option<String>,
    /// The message; without it, each line of standard input is one message
    message: Option<String>,
    /// Publish through the server's HTTP API at this URL instead (http://HOST:PORT or
    /// https://…; docs/api.md): `pub --api URL --api-key-file FILE TOPIC [MESSAGE]`.
    /// One request per message, in order, each sent again with its idempotency key
    /// until stored (503, a lost connection)
    #[arg(long, value_name = "URL", requires = "api_key_file")]
    api: Option<String>,
    /// With --api: the file of the API key (its first line that is not a # comment)
    #[arg(long, value_name = "FILE", requires = "api")]
    api_key_file: Option<PathBuf>,
    /// Print each publication's position (`EPOCH:OFFSET`), in input order, once stored
    #[arg(long)]
    positions: bool,
    /// Keep at most N publishes unanswered at once (1: each line waits for the answer to
    /// the one before, the strictest order, one round trip a line)
    #[arg(long, value_name = "N", default_value_t = WINDOW, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pipeline: u16,
}

impl PubArgs {
    /// The topic and the message, checked: with `--api` the URL is left out, so the
    /// words on the command line are `TOPIC [MESSAGE]`. An error is a bad command
    /// line.
    pub(crate) fn resolve(&mut self) -> std::result::Result<(), String> {
        if self.api.is_none() {
            return Ok(());
        }
        let words: Vec<String> = [self.url.take(), self.topic.take(), self.message.take()]
            .into_iter()
            .flatten()
            .collect();
        match <[String; 2]>::try_from(words) {
            Ok([topic, message]) => (self.topic, self.message) = (Some(topic), Some(message)),
            Err(words) if words.len() == 1 => self.topic = words.into_iter().next(),
            Err(words) => {
                return Err(format!(
                    "with --api, give TOPIC [MESSAGE] (no URL): {} words given",
                    words.len()
                ));
            }
        }
        Ok(())
    }
}

/// `wsevents sub`: print publications until Ctrl-C, `--count`, or a permanent close.
pub(crate) async fn sub(args: SubArgs) -> Result<ExitCode> {
    if let Err(error) = args.connection.check() {
        return Ok(usage(&error));
    }
    let client = client(&args.url, &args.connection)?;
    let positions = args.positions;
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let count = args.count;
    let seen = std::sync::atomic::AtomicU64::new(0);
    client.on_publication(move |p| {
        // Past --count (publications already read when it was reached): not printed.
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if count.is_some_and(|max| n > max) {
            return;
        }
        let data = match &p.data {
            Message::Text(text) => text.to_string(),
            Message::Binary(bytes) => crate::hex::encode(bytes),
        };
        if positions {
            say(&format!("{} {data}", p.position));
        } else {
            say(&data);
        }
        if count == Some(n) {
            let _ = done.send(());
        }
    });
    client.on_subscribed(|s| {
        eprintln!(
            "wsevents: subscribed {} at {} recovered {}",
            s.topic, s.position, s.recovered
        );
    });
    notes(&client);
    for topic in &args.topics {
        client.subscribe(topic, args.since.clone())?;
    }
    let driver = client.clone();
    let run = tokio::spawn(async move { driver.run().await });
    tokio::select! {
        last = run => {
            let last = last.map_err(|e| format!("the client stopped: {e}"))?;
            return Err(format!("closed for good: {} {}", last.code, last.reason).into());
        }
        // `None` is not --count reached: the handlers (and `done` with them) are dropped
        // at a final close, which the `run` branch reports.
        Some(()) = finished.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    close(&client).await;
    Ok(ExitCode::SUCCESS)
}

/// `wsevents pub`: publish MESSAGE or every line of stdin, in order, each until
/// answered; exit 0 once all are.
pub(crate) async fn publish(args: PubArgs) -> Result<ExitCode> {
    if let Err(error) = args.connection.check() {
        return Ok(usage(&error));
    }
    if let (Some(api), Some(key_file)) = (&args.api, &args.api_key_file) {
        let tls =
            crate::tls::client_config(args.connection.ca.as_deref(), args.connection.insecure)?;
        let client = ApiClient::new(
            api,
            key_file,
            tls,
            args.connection.max_retries,
            args.connection.max_delay,
        )?;
        let outcome = tokio::select! {
            outcome = publish_api(&client, &args) => outcome,
            _ = tokio::signal::ctrl_c() => Err("interrupted before every message was stored".into()),
        };
        return outcome.map(|()| ExitCode::SUCCESS);
    }
    let url = args.url.as_deref().ok_or("no URL")?;
    let client = client(url, &args.connection)?;
    notes(&client);
    let driver = client.clone();
    let run = tokio::spawn(async move { driver.run().await });
    let outcome = tokio::select! {
        outcome = publish_all(&client, &args) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted before every message was answered".into()),
    };
    close(&client).await;
    run.abort();
    outcome.map(|()| ExitCode::SUCCESS)
}

/// `pub --api`: MESSAGE, or each line of stdin, one request each, in order.
async fn publish_api(client: &ApiClient, args: &PubArgs) -> Result<()> {
    let topic = args.topic.as_deref().ok_or("no TOPIC")?;
    let stored = |answer: serde_json::Value| {
        if args.positions {
            say(&format!(
                "{}:{}",
                answer["epoch"].as_str().unwrap_or("?"),
                answer["offset"]
            ));
        }
    };
    if let Some(message) = &args.message {
        stored(client.publish(topic, message, 1).await?);
        return Ok(());
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut n = 0;
    while let Some(line) = lines.next_line().await? {
        n += 1;
        stored(client.publish(topic, &line, n).await?);
    }
    Ok(())
}

async fn publish_all(client: &Client, args: &PubArgs) -> Result<()> {
    let topic = args.topic.as_deref().ok_or("no TOPIC")?;
    let mut window: VecDeque<Publishing> = VecDeque::new();
    let answered = |position: wsevents::Result<Position>| -> Result<()> {
        let position = position.map_err(|e| format!("publish failed: {e}"))?;
        if args.positions {
            say(&position.to_string());
        }
        Ok(())
    };
    if let Some(message) = &args.message {
        return answered(client.publish(topic, message.as_str()).await);
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if window.len() >= usize::from(args.pipeline)
            && let Some(oldest) = window.pop_front()
        {
            answered(oldest.await)?;
        }
        window.push_back(client.publish(topic, line));
    }
    for pending in window {
        answered(pending.await)?;
    }
    Ok(())
}

/// The client of `url` the options describe.
fn client(url: &str, args: &Connection) -> Result<Client> {
    let mut builder = ClientBuilder::new(url)?;
    for (name, value) in &args.headers {
        builder = builder.header(name.clone(), value.clone());
    }
    if let Some(config) = crate::tls::client_config(args.ca.as_deref(), args.insecure)? {
        builder = builder.tls_config(config);
    }
    if args.no_proxy {
        builder = builder.no_proxy();
    }
    let options = Reconnect::new()
        .servers(&args.servers)?
        .max_delay(args.max_delay)
        .max_retries(args.max_retries);
    let client = Client::with_options(builder, options)?;
    if let Some(token) = &args.token {
        client.token(token.clone());
    }
    if let Some(path) = &args.token_file {
        let path = path.clone();
        client.token_provider(move || {
            let path = path.clone();
            async move {
                let shown = path.display().to_string();
                tokio::task::spawn_blocking(move || read_token(&path))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("--token-file {shown}: {e}"))
            }
        });
    }
    Ok(client)
}

/// Notes on stderr: connections lost and made again, errors.
fn notes(client: &Client) {
    client.on_open(|e| {
        if e.reconnect {
            eprintln!("wsevents: reconnected to {} (attempt {})", e.url, e.attempt);
        }
    });
    client.on_close(|e| match e.reconnect_in {
        Some(delay) => eprintln!(
            "wsevents: connection to {} lost ({}{}), reconnecting in {:.1}s",
            e.url,
            e.code,
            if e.reason.is_empty() {
                String::new()
            } else {
                format!(" {}", e.reason)
            },
            delay.as_secs_f64()
        ),
        None => eprintln!("wsevents: closed for good ({})", e.code),
    });
    client.on_error(|e| eprintln!("wsevents: {}", e.message()));
}

/// Close, and let the close handshake finish (bounded).
async fn close(client: &Client) {
    let _ = client.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), client.run()).await;
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
