//! # `wsevents`: the command-line face of the wsevents library
//!
//! The subcommands, one module each:
//!
//! - `serve` ([`serve`]): a WebSocket server with the demo page at `/` (the seed's
//!   JavaScript examples, run by the browser against this server), an echo endpoint at
//!   `/ws`, a chat room at `/chat` and topics at `/topic/NAME` (the library's hub;
//!   `--redis URL` shares them between servers); `--echo` / `--broadcast` for tests and
//!   benchmarks. Bounded (open connections, handshakes and their timeout) and
//!   graceful on Ctrl-C: every client gets close 1001 after its queued messages.
//! - `connect URL` ([`connect`]): a terminal or scripted client that prints what
//!   happens in the seed's words (`open`, each message, `error`, `close code reason
//!   wasClean`).
//! - `bench URL` ([`mod@bench`]): a load generator for echo servers, with latency
//!   percentiles.
//! - `sub URL TOPIC…` and `pub URL TOPIC [MESSAGE]` ([`pubsub`]): the wsevents.v1
//!   protocol (docs/protocol.md), reconnecting and recovering what was missed; `pub
//!   --api URL` publishes through a server's HTTP API instead ([`api_client`]).
//!
//! `serve --config FILE` reads every `serve` flag from a TOML file (`serve/config.rs`),
//! before clap parses the command line over it.
//!
//! This file only parses the command line, sets up logging and the runtime, and turns
//! results into exit codes: 0 for success, 1 for a failure (an unclean close, a server
//! that could not start), 2 for a bad command line (clap's code), always with a
//! one-line message.

// Doc comments on the argument types are clap's help text, where `[OPTIONAL]` is the
// usual notation, not an intra-doc link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod api_client;
mod bench;
mod connect;
mod hex;
mod printer;
mod pubsub;
mod seconds;
mod serve;
mod stats;
mod tls;

/// What a subcommand fails with: a message for the user, printed on one line.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
/// A subcommand's result.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// WebSocket server, client and load generator, with the browser's event API.
///
/// Start with `wsevents serve` and open the page it prints.
#[derive(Debug, Parser)]
#[command(name = "wsevents", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the demo page (/), an echo endpoint (/ws), a chat room (/chat) and topics
    /// (/topic/NAME)
    ///
    /// The demo page runs the WebSocket examples of the seed tutorial (onopen,
    /// onmessage, binaryType, send, onerror, onclose, close) in the browser against
    /// this server and shows each event as it happens. Ctrl-C (or SIGTERM) closes
    /// every client with 1001 after flushing what is queued for it, waits up to
    /// --grace for the close handshakes, forces the rest, prints
    /// `shutdown: N closed cleanly, M forced` and exits 0.
    ///
    /// Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.
    #[command(after_help = "Examples:\n  \
        wsevents serve                                   # then open http://127.0.0.1:8080/\n  \
        wsevents serve --listen 0.0.0.0:9000 --tls-cert cert.pem --tls-key key.pem\n  \
        wsevents serve --echo --listen 127.0.0.1:9001    # echo on every path (benchmarks)\n  \
        wsevents serve --protocol chat --dir ./public    # a subprotocol; files beside the page\n  \
        wsevents serve --stdin                           # each line typed goes to every client\n  \
        wsevents serve --jwt-secret-file secret --anonymous-subscribe 'public:*'  # tokens\n  \
        wsevents serve --api-key-file api.key            # the HTTP API under /api/ (docs/api.md)\n  \
        wsevents serve --config wsevents.toml            # every flag as a TOML key; flags override it")]
    // Boxed: the serve options outweigh every other command's.
    Serve(Box<serve::Args>),
    /// Connect to a WebSocket server; type lines to send them
    ///
    /// Prints `open`, each message (text as is, binary as `binary HEX`), `error
    /// MESSAGE` and `close CODE REASON WASCLEAN`. Each line typed is sent as a text
    /// message; commands: /binary HEX, /ping [DATA] (prints the answer as `pong DATA
    /// RTT`, e.g. `pong hi 0.183ms`), /close [CODE [REASON]]. When
    /// standard input ends (Ctrl-D, or the end of a pipe), the connection is closed with
    /// 1000 and the command exits once the close handshake is over. The exit code is 0
    /// for a clean close, 1 otherwise.
    ///
    /// On a terminal, or with --prefix, each line says what it is: `< ` received, `> `
    /// sent, `* ` an event (`<b `/`>b ` binary, as hex), so a message never reads as an
    /// event. Piped, the output stays plain (as above) for scripts. --binary sends stdin
    /// in binary messages and writes what comes back raw; -x sends and closes after the
    /// reply; -1 / --max-messages N close after N messages; -w waits before closing.
    #[command(after_help = "Examples:\n  \
        wsevents connect ws://127.0.0.1:8080/ws\n  \
        printf 'hello\\n/binary 0102\\n' | wsevents connect ws://127.0.0.1:8080/ws\n  \
        printf '/ping hi\\n' | wsevents connect ws://127.0.0.1:8080/ws --show-ping-pong\n  \
        wsevents connect wss://example.com/chat --protocol chat --header 'Authorization: Bearer x'\n  \
        wsevents connect ws://127.0.0.1:8080/ws -x 'hello'        # send, print the reply, close\n  \
        wsevents connect -b ws://127.0.0.1:8080/ws < in.bin > out.bin\n  \
        wsevents connect -v --no-deflate ws://127.0.0.1:8080/ws  # the handshake on stderr")]
    Connect(connect::Args),
    /// Load-test an echo server: throughput and latency percentiles
    ///
    /// Opens N connections, each keeping K messages in flight for the duration, and
    /// measures the time from sending each message to receiving its echo. With --rate R
    /// the loop is open: R messages/s in all, sent on schedule whatever the echoes do,
    /// each message's latency counted from when it was due (so a stall shows as the
    /// queue behind it). Every echo is checked against what was sent: mismatches are
    /// reported and make the exit code 1. Reports
    /// messages/s, MB/s (echoed payload received) and latency p50/p90/p99/p99.9/max,
    /// and the CPU time this generator used (and the server's, with --server-pid), so
    /// you can tell which side was the bottleneck.
    #[command(after_help = "Examples:\n  \
        wsevents serve --echo --listen 127.0.0.1:9001 &\n  \
        wsevents bench ws://127.0.0.1:9001/ --connections 64 --size 64 --duration 10 --server-pid $!\n  \
        wsevents bench ws://127.0.0.1:9001/ --binary --size 16384 --pipeline 4 --json\n  \
        wsevents bench ws://127.0.0.1:9001/ --connections 16 --rate 50000 --duration 10")]
    Bench(bench::Args),
    /// Subscribe to topics of a wsevents.v1 server and print each publication
    ///
    /// Prints each publication's data on a line of its own (binary as hex), with
    /// `EPOCH:OFFSET ` before it under --positions. Reconnects by itself (full-jitter
    /// backoff, across URL and every --server) and subscribes again from the last
    /// position it printed: what was published meanwhile follows, in order, exactly once,
    /// when the server still has it. Notes go to stderr: `subscribed TOPIC at POSITION
    /// recovered true|false` (false: what was published meanwhile is lost to it), lost
    /// connections and reconnects. Runs until Ctrl-C (exit 0), --count publications
    /// (exit 0), or a close that is final (a 4xx refusal, a protocol error: exit 1).
    #[command(after_help = "Examples:\n  \
        wsevents sub ws://127.0.0.1:8080/pubsub news\n  \
        wsevents sub ws://node-1:8080/pubsub news --server ws://node-2:8080/pubsub --positions\n  \
        wsevents sub ws://127.0.0.1:8080/pubsub news --since 7kq3v9xb:41 -n 10")]
    Sub(pubsub::SubArgs),
    /// Publish to a topic of a wsevents.v1 server: MESSAGE, or each line of stdin
    ///
    /// Each line of standard input is one message, published in order (up to 256
    /// unanswered at once; --pipeline 1 waits for each answer). A publish not answered when a connection is lost is sent
    /// again, with the same idempotency key, on the next one: no line is lost or
    /// stored twice. Exits 0 once every message is stored (--positions prints where,
    /// one line each, in input order), 1 if one is refused or the client is closed for
    /// good.
    #[command(after_help = "Examples:\n  \
        wsevents pub ws://127.0.0.1:8080/pubsub news 'hello'\n  \
        wsevents pub --api http://127.0.0.1:8080 --api-key-file api.key news 'hello'\n  \
        tail -f app.log | wsevents pub ws://127.0.0.1:8080/pubsub logs --server ws://node-2:8080/pubsub")]
    Pub(pubsub::PubArgs),
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let serve_config = argv.get(1).is_some_and(|a| a == "serve")
        && serve::config::wanted(argv.get(2..).unwrap_or_default());
    let parsed = if serve_config {
        // `serve --config FILE`: the file's settings under the command line's.
        match serve::config::from_command_line(argv.get(2..).unwrap_or_default()) {
            Ok(args) => Ok(Cli {
                command: Command::Serve(Box::new(args)),
            }),
            Err(serve::config::LoadError::CommandLine(error)) => Err(error),
            Err(serve::config::LoadError::File(error)) => {
                eprintln!("wsevents: error: {error}");
                return ExitCode::from(2);
            }
        }
    } else {
        Cli::try_parse()
    };
    let mut cli = match parsed {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    if let Command::Pub(args) = &mut cli.command
        && let Err(error) = args.resolve()
    {
        eprintln!("wsevents: error: {error} (see 'wsevents pub --help')");
        return ExitCode::from(2);
    }
    let default_log = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    init_logging(default_log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wsevents: error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Sub(args) => pubsub::sub(args).await,
            Command::Pub(args) => pubsub::publish(args).await,
        }
    });
    // Tasks still blocked on stdin would keep the runtime alive: do not wait for them.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("wsevents: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A bad command line: clap's message on one line (help and version print in full).
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            ExitCode::from(error.exit_code() as u8)
        }
        _ => {
            // clap's message is its first paragraph (a list of missing arguments
            // continues it on indented lines); usage and tips follow a blank line.
            let rendered = error.to_string();
            let paragraph: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = paragraph.join(" ");
            let first = message.strip_prefix("error: ").unwrap_or(&message);
            let help = std::env::args()
                .nth(1)
                .filter(|arg| ["serve", "connect", "bench", "sub", "pub"].contains(&arg.as_str()))
                .map_or_else(
                    || "wsevents --help".to_owned(),
                    |sub| format!("wsevents {sub} --help"),
                );
            eprintln!("wsevents: error: {first} (see '{help}')");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: `default` for every target).
fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
