//! The `wsevents` binary end to end: `connect` scripted through stdin against a
//! `serve` child, `serve`'s graceful shutdown (close 1001 after what was queued, exit
//! 0), `bench --json`, and the command line's help and errors. Every server is a child
//! process on a free 127.0.0.1 port, killed when its guard drops.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use wsevents::{CloseCode, Message};

mod support;

use support::{BIN, Redis, Serve};

/// What only these tests ask of a `serve` child.
impl Serve {
    /// `wsevents serve ARGS` with at most `files` file descriptors (`prlimit` execs
    /// it, so the pid is the server's); `None` where there is no `prlimit`.
    fn start_with_file_limit(files: u32, args: &[&str]) -> Option<Serve> {
        Command::new("prlimit").arg("--version").output().ok()?;
        let mut command = Command::new("prlimit");
        command.arg(format!("--nofile={files}:{files}")).arg(BIN);
        Some(Serve::spawn(command, args))
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait (bounded) for the child to exit; its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("wsevents serve did not exit within {limit:?}");
    }
}

/// A child killed on drop (for `connect` runs that might hang).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `wsevents ARGS` with `input` on stdin; its output (bounded by a timeout).
fn run(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let mut guard = Guard(child);
    let start = Instant::now();
    loop {
        if guard.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "wsevents {args:?} hung"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    guard
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    guard
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status: guard.0.wait().unwrap(),
        stdout,
        stderr,
    }
}

/// Run `wsevents ARGS`, write `first` as a line, wait for it on stdout (an echo), then
/// write `rest` and end the input; the output, all of it.
fn run_in_turns(args: &[String], first: &str, rest: &str) -> Output {
    run_until(args, &format!("{first}\n"), |line| line == first, rest)
}

/// Run `wsevents ARGS`, write `first`, wait for a line of stdout that passes `until`,
/// then write `rest` and end the input; the output, all of it.
fn run_until(args: &[String], first: &str, until: impl Fn(&str) -> bool, rest: &str) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let mut stdin = guard.0.stdin.take().unwrap();
    let mut stdout = BufReader::new(guard.0.stdout.take().unwrap());
    // A watchdog: a line that never comes fails the test in 20 s, not at nextest's limit.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let pid = guard.0.id().to_string();
    std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = Command::new("kill").arg(&pid).status();
        }
    });
    stdin.write_all(first.as_bytes()).unwrap();
    let mut seen = String::new();
    loop {
        let before = seen.len();
        assert!(
            stdout.read_line(&mut seen).unwrap() > 0,
            "ended early: {seen:?}"
        );
        if until(seen[before..].trim_end()) {
            break;
        }
    }
    stdin.write_all(rest.as_bytes()).unwrap();
    drop(stdin);
    stdout.read_to_string(&mut seen).unwrap();
    let mut stderr = Vec::new();
    guard
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let status = guard.0.wait().unwrap();
    let _ = done.send(());
    Output {
        status,
        stdout: seen.into_bytes(),
        stderr,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ----- connect -----

#[test]
fn connect_sends_each_line_prints_each_echo_and_closes_cleanly() {
    let serve = Serve::start(&[]);
    let out = run(&["connect", &serve.url("/ws")], "hello\nworld, 世界\n");
    assert_eq!(
        text(&out.stdout),
        "open\nhello\nworld, 世界\nclose 1000  true\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn connect_binary_as_hex_ping_escape_and_close_with_code() {
    let serve = Serve::start(&[]);
    let input = "/binary 0102ff\n/ping hi\n//not a command\n/close 4000 bye\n";
    let out = run(&["connect", &serve.url("/ws")], input);
    let stdout = text(&out.stdout);
    let (pongs, rest) = pong_lines(&stdout);
    assert_eq!(
        rest,
        [
            "open",
            "binary 0102ff",
            "/not a command",
            "close 4000 bye true"
        ],
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(pongs.len(), 1, "{stdout}");
    assert_rtt_line(&pongs[0], "pong hi ");
    assert_eq!(out.status.code(), Some(0));
}

/// The lines of `stdout` that start with `pong ` or `ping `, and the others.
fn pong_lines(stdout: &str) -> (Vec<String>, Vec<String>) {
    let (pings, rest): (Vec<&str>, Vec<&str>) = stdout
        .lines()
        .partition(|l| l.starts_with("pong ") || l.starts_with("ping "));
    (
        pings.into_iter().map(str::to_owned).collect(),
        rest.into_iter().map(str::to_owned).collect(),
    )
}

/// `line` is `prefix` then a round-trip time such as `0.183ms`.
fn assert_rtt_line(line: &str, prefix: &str) {
    let rtt = line
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix("ms"))
        .unwrap_or_else(|| panic!("{line:?} is not {prefix:?} then an rtt"));
    let (whole, millis) = rtt.split_once('.').unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()),
        "{line:?}"
    );
    assert!(
        millis.len() == 3 && millis.bytes().all(|b| b.is_ascii_digit()),
        "{line:?}"
    );
    let rtt: f64 = rtt.parse().unwrap();
    assert!(rtt < 5000.0, "{line:?}");
}

/// `/ping DATA` against `serve --echo` prints the pong that answers it with its
/// round-trip time, on its own line among the others.
#[test]
fn connect_ping_prints_the_pong_and_its_rtt() {
    let serve = Serve::start(&["--echo"]);
    let out = run(
        &["connect", &serve.url("/any")],
        "/ping first\nbetween\n/ping\n",
    );
    let stdout = text(&out.stdout);
    let (pongs, rest) = pong_lines(&stdout);
    assert_eq!(rest, ["open", "between", "close 1000  true"], "{stdout}");
    assert_eq!(pongs.len(), 2, "{stdout}");
    // The first is the answer to `/ping first`; an empty ping's pong has no data.
    let first = pongs.iter().find(|l| l.starts_with("pong first "));
    assert_rtt_line(first.unwrap_or_else(|| panic!("{stdout}")), "pong first ");
    let empty = pongs.iter().find(|l| !l.starts_with("pong first "));
    assert_rtt_line(empty.unwrap_or_else(|| panic!("{stdout}")), "pong  ");
    assert_eq!(out.status.code(), Some(0));
}

/// `--ping-interval` sets the keepalive: the client pings the silent `serve --echo`
/// after 0.1 s, and `--show-ping-pong` prints the pong answering it (the core's 8-byte
/// counter as hex, with its rtt). A negative interval is refused.
#[test]
fn connect_ping_interval_sends_keepalive_pings_whose_pongs_show() {
    let serve = Serve::start(&["--echo"]);
    let args = [
        "connect".to_owned(),
        serve.url("/"),
        "--ping-interval".into(),
        "0.1".into(),
        "--show-ping-pong".into(),
    ];
    let keepalive = "pong 0x0000000000000001 ";
    let out = run_until(&args, "", |line| line.starts_with(keepalive), "");
    let stdout = text(&out.stdout);
    let (pongs, rest) = pong_lines(&stdout);
    assert_eq!(rest, ["open", "close 1000  true"], "{stdout}");
    assert_rtt_line(&pongs[0], keepalive);
    assert_eq!(out.status.code(), Some(0));

    // A bad value is a usage error, as every bad flag is.
    let out = run(&["connect", &serve.url("/"), "--ping-interval=-1"], "");
    assert_one_line_error(&out.stderr, "--ping-interval");
    assert_eq!(out.status.code(), Some(2));
}

/// A server (wsevents' own, on a real socket) that writes a ping and an unsolicited
/// pong as raw frames right after the handshake, then echoes. `--show-ping-pong` prints
/// both (the pong with `-`: it answers nothing of ours) besides the answer to /ping;
/// without the flag only the answer to /ping is printed.
#[tokio::test]
async fn connect_show_ping_pong_prints_every_ping_and_pong_received() {
    use tokio::io::AsyncWriteExt;
    let server = wsevents::Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    tokio::spawn(async move {
        while let Some((mut ws, _)) = server.accept_stream().await {
            tokio::spawn(async move {
                // Server to client, unmasked: ping "srv", pong "hb".
                ws.get_mut()
                    .write_all(b"\x89\x03srv\x8a\x02hb")
                    .await
                    .unwrap();
                while let Some(Ok(message)) = ws.next().await {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    for show in [true, false] {
        let mut args = vec!["connect".to_owned(), url.clone()];
        if show {
            args.push("--show-ping-pong".into());
        }
        // The raw frames arrive before the echo of "wait"; then ping, then close.
        let out = tokio::task::spawn_blocking(move || run_in_turns(&args, "wait", "/ping hi\n"))
            .await
            .unwrap();
        let stdout = text(&out.stdout);
        let (pongs, rest) = pong_lines(&stdout);
        assert_eq!(rest, ["open", "wait", "close 1000  true"], "{stdout}");
        let answer: Vec<&String> = pongs.iter().filter(|l| l.starts_with("pong hi ")).collect();
        assert_eq!(answer.len(), 1, "{stdout}");
        assert_rtt_line(answer[0], "pong hi ");
        let others: Vec<&str> = pongs
            .iter()
            .filter(|l| !l.starts_with("pong hi "))
            .map(String::as_str)
            .collect();
        if show {
            assert_eq!(others, ["ping srv", "pong hb -"], "{stdout}");
        } else {
            assert!(others.is_empty(), "{stdout}");
        }
        assert_eq!(out.status.code(), Some(0));
    }
}

#[test]
fn connect_reports_local_mistakes_on_stderr_and_goes_on() {
    let serve = Serve::start(&[]);
    let out = run(
        &["connect", &serve.url("/ws")],
        "/binary 0g\n/close 1001\n/frob\nstill here\n",
    );
    assert_eq!(text(&out.stdout), "open\nstill here\nclose 1000  true\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("not a hex digit"), "{stderr}");
    assert!(stderr.contains("1001"), "{stderr}");
    assert!(stderr.contains("unknown command /frob"), "{stderr}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn connect_to_a_refused_route_prints_error_then_close_1006_and_fails() {
    let serve = Serve::start(&[]);
    let out = run(&["connect", &serve.url("/nothing-here")], "");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("error ") && lines[0].contains("404"),
        "{stdout}"
    );
    assert_eq!(lines[1], "close 1006  false");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn connect_exits_non_zero_when_the_server_dies() {
    let mut serve = Serve::start(&[]);
    let child = Command::new(BIN)
        .args(["connect", &serve.url("/ws")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut connect = Guard(child);
    let mut stdin = connect.0.stdin.take().unwrap();
    let mut stdout = BufReader::new(connect.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "open\n");
    writeln!(stdin, "ping before the crash").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ping before the crash\n");
    // The server vanishes without a close handshake (stdin stays open).
    serve.child.kill().unwrap();
    serve.wait(Duration::from_secs(5));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.ends_with("close 1006  false\n"), "{rest:?}");
    let status = connect.0.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    drop(stdin);
}

// ----- serve -----

#[tokio::test]
async fn serve_shutdown_flushes_queued_messages_then_closes_every_client_with_1001() {
    let mut serve = Serve::start(&[]);
    let mut speaker = wsevents::connect(&serve.url("/chat")).await.unwrap();
    let mut listener = wsevents::connect(&serve.url("/chat")).await.unwrap();
    let mut echo = wsevents::connect(&serve.url("/ws")).await.unwrap();
    // The listener is in the room once what it says reaches the speaker (the server
    // subscribes a socket before it handles its messages).
    listener.send(Message::text("listener here")).await.unwrap();
    let here = speaker.next().await.unwrap().unwrap();
    assert_eq!(here.as_text(), Some("listener here"));
    // The listener reads nothing more yet: what the room sends it queues up.
    let body = "x".repeat(8 * 1024);
    for i in 0..64 {
        speaker
            .feed(Message::text(format!("{i:02} {body}")))
            .await
            .unwrap();
    }
    speaker.flush().await.unwrap();
    // The speaker gets its own messages back: once it has all 64, all are published.
    for i in 0..64 {
        let got = speaker.next().await.unwrap().unwrap();
        assert!(got.as_text().unwrap().starts_with(&format!("{i:02} ")));
    }
    echo.send(Message::text("before the shutdown"))
        .await
        .unwrap();
    assert_eq!(
        echo.next().await.unwrap().unwrap().as_text(),
        Some("before the shutdown")
    );

    serve.signal("INT");

    let own = listener.next().await.unwrap().unwrap();
    assert_eq!(own.as_text(), Some("listener here"));
    for i in 0..64 {
        let got = listener.next().await.unwrap().unwrap();
        assert_eq!(got.as_text().unwrap(), format!("{i:02} {body}"));
    }
    for ws in [&mut speaker, &mut listener, &mut echo] {
        while let Some(message) = ws.next().await {
            message.unwrap();
        }
        let closure = ws.closure().unwrap();
        assert_eq!(closure.code(), CloseCode::GOING_AWAY);
        assert_eq!(closure.reason(), "server shutting down");
        assert!(closure.was_clean());
    }
    assert_eq!(serve.wait(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn serve_sigterm_prints_the_report_and_exits_0() {
    let mut serve = Serve::start(&["--echo", "--grace", "1"]);
    // One client that reads and answers the close...
    let mut polite = wsevents::connect(&serve.url("/")).await.unwrap();
    polite.send(Message::text("hi")).await.unwrap();
    assert_eq!(polite.next().await.unwrap().unwrap().as_text(), Some("hi"));
    // ... one that sends far more than the sockets hold and never reads: the server's
    // echo task waits for room until it is forced.
    let mut deaf = wsevents::connect(&serve.url("/")).await.unwrap();
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..256 {
        let sent = tokio::time::timeout(
            Duration::from_millis(200),
            deaf.send(Message::binary(chunk.clone())),
        )
        .await;
        if sent.is_err() {
            break; // our own send blocks now: both directions are full
        }
    }
    let start = Instant::now();
    serve.signal("TERM");
    while let Some(message) = polite.next().await {
        message.unwrap();
    }
    assert_eq!(polite.closure().unwrap().code(), CloseCode::GOING_AWAY);
    assert_eq!(serve.wait(Duration::from_secs(10)), Some(0));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the grace period was waited: {took:?}"
    );
    let output = serve.output();
    assert!(
        output.contains("shutdown: 1 closed cleanly, 1 forced\n"),
        "{output:?}"
    );
    drop(deaf);
}

#[tokio::test]
async fn serve_answers_503_past_max_connections_and_closes_a_slowloris_at_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let serve = Serve::start(&[
        "--echo",
        "--max-connections",
        "1",
        "--retry-after",
        "9",
        "--handshake-timeout",
        "0.8",
    ]);
    let mut open = wsevents::connect(&serve.url("/")).await.unwrap();
    let upgrade = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        serve.addr
    );
    let mut refused = tokio::net::TcpStream::connect(&serve.addr).await.unwrap();
    refused.write_all(upgrade.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut response))
        .await
        .expect("the 503 ends the connection")
        .unwrap();
    let response = text(&response);
    assert!(response.starts_with("HTTP/1.1 503 "), "{response:?}");
    assert!(response.contains("\r\nRetry-After: 9\r\n"), "{response:?}");

    // A request head a byte every 100 ms: closed at 0.8 s, in the middle of it.
    let start = Instant::now();
    let slow = tokio::net::TcpStream::connect(&serve.addr).await.unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    let bytes = upgrade.into_bytes();
    let trickle = tokio::spawn(async move {
        for byte in bytes {
            if slow_write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    open.send(Message::text("still echoing")).await.unwrap();
    assert_eq!(
        open.next().await.unwrap().unwrap().as_text(),
        Some("still echoing")
    );
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), slow_read.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    trickle.abort();
}

#[tokio::test]
async fn serve_passes_keepalive_and_idle_timeouts_to_its_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A silent client is pinged after --ping-interval.
    let pinging = Serve::start(&["--echo", "--ping-interval", "0.3"]);
    let mut tcp = tokio::net::TcpStream::connect(&pinging.addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            pinging.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), tcp.read_exact(&mut byte))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(byte[0], 0x89, "a ping (FIN, opcode 9)");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );

    // A client with nothing to say is closed after --idle-timeout.
    let idle = Serve::start(&["--echo", "--ping-interval", "0", "--idle-timeout", "0.3"]);
    let mut ws = wsevents::connect(&idle.url("/")).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .unwrap();
    assert!(end.is_none());
    assert_eq!(ws.closure().unwrap().code(), CloseCode::GOING_AWAY);
    assert_eq!(ws.closure().unwrap().reason(), "idle timeout");
}

#[tokio::test]
async fn serve_waits_out_running_out_of_file_descriptors_then_serves_again() {
    let Some(serve) = Serve::start_with_file_limit(48, &["--echo"]) else {
        eprintln!("skipped: no prlimit");
        return;
    };
    let connect = |url: String| async move {
        tokio::time::timeout(Duration::from_millis(500), wsevents::connect(&url)).await
    };
    // Open connections until the server has no descriptor left for the next one:
    // accept fails (EMFILE) and that client waits in the listen backlog.
    let mut open = Vec::new();
    loop {
        match connect(serve.url("/")).await {
            Ok(Ok(ws)) => open.push(ws),
            Ok(Err(error)) => panic!("refused instead of waiting: {error}"),
            Err(_) => break,
        }
        assert!(open.len() < 48, "the file limit was never reached");
    }
    assert!(open.len() >= 8, "only {} connections", open.len());
    // Every open connection still works.
    for ws in &mut open {
        ws.send(Message::text("alive")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().as_text(), Some("alive"));
    }
    // Free some descriptors: within the back-off's longest wait (1 s), new clients
    // are served again.
    for mut ws in open.drain(..4) {
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    }
    let mut again = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Ok(ws)) = connect(serve.url("/")).await {
                return ws;
            }
        }
    })
    .await
    .expect("served again once descriptors were free");
    again.send(Message::text("back")).await.unwrap();
    assert_eq!(again.next().await.unwrap().unwrap().as_text(), Some("back"));
}

#[tokio::test]
async fn serve_echo_mode_echoes_on_every_path_and_broadcast_mode_fans_out() {
    let echo = Serve::start(&["--echo"]);
    let mut ws = wsevents::connect(&echo.url("/any/path")).await.unwrap();
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1, 2, 3])
    );

    let broadcast = Serve::start(&["--broadcast"]);
    // A client is a member of the room once its own message comes back (the server
    // joins it after the handshake, on its own task): a first, then b.
    let mut a = wsevents::connect(&broadcast.url("/a")).await.unwrap();
    a.send(Message::text("a here")).await.unwrap();
    assert_eq!(a.next().await.unwrap().unwrap().as_text(), Some("a here"));
    let mut b = wsevents::connect(&broadcast.url("/b")).await.unwrap();
    b.send(Message::text("b here")).await.unwrap();
    assert_eq!(b.next().await.unwrap().unwrap().as_text(), Some("b here"));
    assert_eq!(a.next().await.unwrap().unwrap().as_text(), Some("b here"));
    a.send(Message::text("hello all")).await.unwrap();
    assert_eq!(
        a.next().await.unwrap().unwrap().as_text(),
        Some("hello all")
    );
    assert_eq!(
        b.next().await.unwrap().unwrap().as_text(),
        Some("hello all")
    );
}

/// The next text message of `ws`, within 10 s.
async fn next_text<S>(ws: &mut wsevents::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no message within 10 s");
    match next {
        Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
        other => panic!("{other:?}"),
    }
}

/// Connect to `url` and send `hello` until it comes back: subscribed.
async fn joined(url: &str, hello: &str) -> wsevents::WebSocketStream<wsevents::MaybeTlsStream> {
    let mut ws = wsevents::connect(url).await.unwrap();
    ws.send(Message::text(hello.to_owned())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, hello);
    ws
}

#[tokio::test]
async fn serve_topics_keep_to_themselves_and_chat_is_the_topic_chat() {
    let serve = Serve::start(&[]);
    let mut a1 = joined(&serve.url("/topic/a"), "a1 here").await;
    let mut a2 = joined(&serve.url("/topic/a"), "a2 here").await;
    assert_eq!(next_text(&mut a1).await, "a2 here");
    let mut b = joined(&serve.url("/topic/b"), "b here").await;
    let mut chat = joined(&serve.url("/chat"), "chat here").await;
    a1.send(Message::text("to a")).await.unwrap();
    b.send(Message::text("to b")).await.unwrap();
    chat.send(Message::text("to chat")).await.unwrap();
    assert_eq!(next_text(&mut a1).await, "to a");
    assert_eq!(next_text(&mut a2).await, "to a");
    assert_eq!(next_text(&mut b).await, "to b");
    assert_eq!(next_text(&mut chat).await, "to chat");
    // An empty topic name is no endpoint.
    assert!(wsevents::connect(&serve.url("/topic/")).await.is_err());
    // A topic is the rest of the path, percent-decoded: `x%2Fy` and `x/y` are one.
    let mut slash = joined(&serve.url("/topic/x/y"), "slash here").await;
    let mut encoded = joined(&serve.url("/topic/x%2Fy"), "encoded here").await;
    assert_eq!(next_text(&mut slash).await, "encoded here");
    slash.send(Message::text("to x/y")).await.unwrap();
    assert_eq!(next_text(&mut encoded).await, "to x/y");
}

/// Two `serve` processes on one Redis are one chat: what a client of one says reaches
/// the clients of both, once each, in order.
#[tokio::test]
async fn two_serves_on_one_redis_are_one_chat() {
    let redis = Redis::start();
    // Redis answers before the servers start: a server that finds it down drops what
    // is published until it has reconnected (the hub's rule), which would race here.
    assert_eq!(redis.numsub("wsevents:chat").await, 0);
    let one = Serve::start(&["--redis", &redis.url()]);
    let two = Serve::start(&["--redis", &redis.url()]);
    let mut alice = joined(&one.url("/chat"), "alice here").await;
    let mut bob = joined(&two.url("/chat"), "bob here").await;
    let mut carol = joined(&two.url("/chat"), "carol here").await;
    // Both nodes subscribed in Redis: from now on every message crosses.
    let started = Instant::now();
    while redis.numsub("wsevents:chat").await < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Alice's hello may reach bob and carol too (skipped).
    let mut hello = next_text(&mut bob).await;
    if hello == "alice here" {
        hello = next_text(&mut bob).await;
    }
    assert_eq!(hello, "carol here");
    for i in 0..50 {
        alice
            .send(Message::text(format!("alice {i}")))
            .await
            .unwrap();
    }
    bob.send(Message::text("bob says hi")).await.unwrap();
    for ws in [&mut alice, &mut bob, &mut carol] {
        let mut from_alice = Vec::new();
        let mut from_bob = 0;
        while from_alice.len() < 50 || from_bob < 1 {
            match next_text(ws).await {
                text if text == "bob says hi" => from_bob += 1,
                // The other node's hellos may cross too (published before it was
                // subscribed in Redis, they waited for its first connection).
                text if text.ends_with(" here") => {}
                text => from_alice.push(text),
            }
        }
        let expected: Vec<String> = (0..50).map(|i| format!("alice {i}")).collect();
        assert_eq!(from_alice, expected);
        let more = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
        assert!(more.is_err(), "a duplicate: {more:?}");
    }
}

#[tokio::test]
async fn serve_answers_plain_http_with_the_page_404_and_426() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let serve = Serve::start(&[]);
    for (path, status, needle) in [
        ("/", "200", "the WebSocket events, live"),
        ("/nope", "404", "Not found"),
        ("/ws", "426", "WebSocket endpoint"),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(&serve.addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", serve.addr);
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {response}"
        );
        assert!(response.contains(needle), "{path}: {response}");
    }
}

// ----- bench -----

#[test]
fn bench_json_reports_throughput_latency_and_cpu() {
    let serve = Serve::start(&["--echo"]);
    let pid = serve.child.id().to_string();
    let url = serve.url("/");
    let out = run(
        &[
            "bench",
            &url,
            "--connections",
            "3",
            "--duration",
            "0.5",
            "--pipeline",
            "4",
            "--size",
            "100",
            "--binary",
            "--json",
            "--server-pid",
            &pid,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["connections"], 3);
    assert_eq!(report["pipeline"], 4);
    assert_eq!(report["size"], 100);
    assert_eq!(report["kind"], "binary");
    assert_eq!(report["errors"], 0);
    assert!(report["messages"].as_u64().unwrap() > 0);
    assert!(report["messages_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["mb_per_s"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_us"];
    let p = |name: &str| latency[name].as_f64().unwrap();
    assert!(p("p50") > 0.0);
    assert!(p("p50") <= p("p90") && p("p90") <= p("p99"));
    assert!(p("p99") <= p("p99_9") && p("p99_9") <= p("max"));
    assert!(report["cpu_s"]["generator"].is_number());
    assert!(report["cpu_s"]["server"].is_number());
}

#[test]
fn bench_prints_a_readable_report() {
    let serve = Serve::start(&["--echo"]);
    let out = run(&["bench", &serve.url("/"), "-c", "2", "-d", "0.3"], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    for needle in ["msg/s", "MB/s", "p50", "p99.9", "max", "CPU"] {
        assert!(report.contains(needle), "{needle} missing from {report}");
    }
}

#[test]
fn bench_deflate_needs_the_server_to_accept_it() {
    let serve = Serve::start(&["--echo"]);
    let args = [
        "bench",
        &serve.url("/"),
        "-c",
        "2",
        "-d",
        "0.3",
        "-s",
        "2000",
        "--deflate",
        "--json",
    ];
    let out = run(&args, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deflate"], true);
    assert!(report["messages"].as_u64().unwrap() > 0);

    let refusing = Serve::start(&["--echo", "--no-deflate"]);
    let args = [
        "bench",
        &refusing.url("/"),
        "-c",
        "2",
        "-d",
        "0.3",
        "--deflate",
    ];
    let out = run(&args, "");
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&out.stderr, "did not accept permessage-deflate");
}

#[test]
fn bench_fails_with_one_line_when_nothing_listens() {
    let out = run(&["bench", "ws://127.0.0.1:1/", "-d", "0.2"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&out.stderr, "could not connect");
}

// ----- the command line -----

fn assert_one_line_error(stderr: &[u8], needle: &str) {
    let stderr = text(stderr);
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("wsevents: error: "), "{stderr:?}");
    assert!(
        stderr.contains(needle),
        "{needle:?} missing from {stderr:?}"
    );
}

#[test]
fn bad_flags_give_one_line_and_exit_code_2() {
    for (args, needle) in [
        (&["connect", "--bogus", "ws://x"][..], "--bogus"),
        (
            &["bench", "ws://x", "--connections", "0"][..],
            "--connections",
        ),
        (&["bench", "ws://x", "--size", "lots"][..], "--size"),
        (&["serve", "--tls-cert", "cert.pem"][..], "--tls-key"),
        (&["serve", "--echo", "--broadcast"][..], "--broadcast"),
        (&["frobnicate"][..], "frobnicate"),
        (&["connect"][..], "URL"),
    ] {
        let out = run(args, "");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_one_line_error(&out.stderr, needle);
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn runtime_errors_give_one_line_and_exit_code_1() {
    let out = run(&["connect", "ftp://example.com/"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&out.stderr, "scheme");
    let out = run(&["serve", "--listen", "256.0.0.1:80"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&out.stderr, "cannot listen");
    let out = run(
        &[
            "serve",
            "--tls-cert",
            "/no/such.pem",
            "--tls-key",
            "/no/such.key",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&out.stderr, "/no/such.pem");
}

#[test]
fn help_is_there_for_the_command_and_every_subcommand() {
    let out = run(&["--help"], "");
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for sub in ["serve", "connect", "bench"] {
        assert!(help.contains(sub), "{help}");
        let out = run(&[sub, "--help"], "");
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        assert!(help.contains("Examples:"), "{sub}: {help}");
    }
    let out = run(&["--version"], "");
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("wsevents "));
}

// ----- TLS -----

/// A CA and a server certificate for localhost / 127.0.0.1, as PEM files in a fresh
/// directory: (dir, ca.pem, cert.pem, key.pem).
fn tls_files() -> (std::path::PathBuf, String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "wsevents-cli-tls-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let ca_pem = write("ca.pem", ca.pem());
    let cert_pem = write("cert.pem", cert.pem());
    let key_pem = write("key.pem", key.serialize_pem());
    (dir, ca_pem, cert_pem, key_pem)
}

#[test]
fn serve_tls_with_connect_ca_and_insecure() {
    let (dir, ca, cert, key) = tls_files();
    let serve = Serve::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let url = format!("wss://{}/ws", serve.addr);
    let out = run(&["connect", &url, "--ca", &ca], "over tls\n");
    assert_eq!(
        text(&out.stdout),
        "open\nover tls\nclose 1000  true\n",
        "{}",
        text(&out.stderr)
    );
    let out = run(&["connect", &url, "--insecure"], "insecure\n");
    assert_eq!(text(&out.stdout), "open\ninsecure\nclose 1000  true\n");
    // Without the CA the certificate is refused.
    let out = run(&["connect", &url], "");
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("error ") && stdout.ends_with("close 1006  false\n"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(dir);
}
