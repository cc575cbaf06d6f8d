//! The flags of issue 17, end to end: `connect`'s output styles (plain, prefixed, raw
//! `--binary`), its one-shot modes (`-1`, `--max-messages`, `-x`, `-w`), `--verbose`,
//! `--no-deflate` and `--max-size`; `bench --rate` (the open loop) and the check of
//! every echo. Each server is a real one on 127.0.0.1: a `wsevents serve` child, or a
//! wsevents `Server` in the test when it must misbehave (stall, corrupt, reorder).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use wsevents::Message;

mod support;

use support::{BIN, Serve};

/// A child killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `wsevents ARGS` with `input` on stdin, which stays open unless `close_stdin`;
/// its output, with a 20 s bound.
fn run_with(args: &[&str], input: &[u8], close_stdin: bool) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut guard = Guard(child);
    let input = input.to_vec();
    // Written on a thread: a large input must not block us while the child writes.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        if !close_stdin {
            std::thread::sleep(Duration::from_secs(30));
        }
    });
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let mut err = Vec::new();
    let start = Instant::now();
    loop {
        if guard.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "wsevents {args:?} hung"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = stderr.read_to_end(&mut err);
    let status = guard.0.wait().unwrap();
    drop(writer);
    Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: err,
    }
}

fn run(args: &[&str], input: &str) -> Output {
    run_with(args, input.as_bytes(), true)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A wsevents server in this process that runs `serve` on each connection; its URL.
async fn server<F, Fut>(serve: F) -> String
where
    F: Fn(wsevents::WebSocketStream<wsevents::MaybeTlsStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let server = wsevents::Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    tokio::spawn(async move {
        while let Some((ws, _)) = server.accept_stream().await {
            tokio::spawn(serve(ws));
        }
    });
    url
}

/// A server that sends "late" 300 ms after the handshake unless the client closed
/// before, then echoes.
async fn late_server() -> String {
    server(|mut ws| async move {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                let _ = ws.send(Message::text("late")).await;
            }
            first = ws.next() => match first {
                Some(Ok(message)) => {
                    let _ = ws.send(message).await;
                }
                _ => return,
            },
        }
        while let Some(Ok(message)) = ws.next().await {
            if ws.send(message).await.is_err() {
                break;
            }
        }
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

// ----- connect: output -----

/// With `--prefix`, every line says what it is: `* ` events, `> ` sent, `< ` received
/// (`>b `/`<b ` binary, hex). A text message of several lines continues indented, so
/// one that holds `\n* close 1000  true` does not print an event line.
#[test]
fn connect_prefix_marks_events_sent_and_received() {
    let serve = Serve::start(&["--echo"]);
    let out = run(
        &["connect", &serve.url("/"), "--prefix"],
        "hi\n/binary 01ff\nfake\\n\n",
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"* open"), "{stdout}");
    assert_eq!(lines.last(), Some(&"* close 1000  true"), "{stdout}");
    let mut middle = lines[1..lines.len() - 1].to_vec();
    middle.sort_unstable();
    assert_eq!(
        middle,
        [
            "< fake\\n",
            "< hi",
            "<b 01ff",
            "> fake\\n",
            "> hi",
            ">b 01ff"
        ],
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(0));

    let forged = "one\n* close 1000  true\r";
    let out = run(&["connect", &serve.url("/"), "--prefix", "-x", forged], "");
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout,
        "* open\n> one\n  * close 1000  true\\r\n< one\n  * close 1000  true\\r\n\
         * close 1000  true\n"
    );
}

/// A close reason is the server's text too: prefixed, it cannot forge a line.
#[tokio::test]
async fn connect_prefix_escapes_the_close_reason() {
    let url = server(|mut ws| async move {
        let _ = ws
            .close(wsevents::CloseCode::from(4000), "bye\n< forged\r")
            .await;
    })
    .await;
    let out = blocking(move || run(&["connect", &url, "--prefix"], "")).await;
    assert_eq!(
        text(&out.stdout),
        "* open\n* close 4000 bye\n  < forged\\r true\n"
    );
}

/// Without a terminal and without `--prefix` the output is the plain one scripts read
/// (sent messages not repeated); on a terminal (`script` gives one) it is prefixed.
#[test]
fn connect_prefixes_by_default_on_a_terminal_only() {
    let serve = Serve::start(&["--echo"]);
    let out = run(&["connect", &serve.url("/"), "-x", "hi"], "");
    assert_eq!(text(&out.stdout), "open\nhi\nclose 1000  true\n");

    let command = format!("{BIN} connect {} -x hi", serve.url("/"));
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else {
        panic!("util-linux `script` is needed for this test");
    };
    let stdout = text(&out.stdout).replace("\r\n", "\n");
    assert!(
        stdout.contains("* open\n> hi\n< hi\n* close 1000  true\n"),
        "{stdout:?}"
    );
}

/// `--binary`: stdin goes out in binary messages (random bytes, not UTF-8, so text
/// would fail) and what comes back is written raw: stdout is the input, byte for byte;
/// events go to stderr.
#[test]
fn connect_binary_pipes_raw_bytes_both_ways() {
    let serve = Serve::start(&["--echo"]);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let input: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let out = run_with(&["connect", &serve.url("/"), "--binary"], &input, true);
    assert_eq!(out.stdout.len(), input.len(), "{}", text(&out.stderr));
    assert!(out.stdout == input, "the bytes differ");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("* open\n") && stderr.ends_with("* close 1000  true\n"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0));
}

// ----- connect: one-shot modes -----

/// `-x` sends and exits after the reply, although stdin stays open.
#[test]
fn connect_execute_sends_then_exits_after_the_reply() {
    let serve = Serve::start(&["--echo"]);
    let out = run_with(
        &[
            "connect",
            &serve.url("/"),
            "-x",
            "hello",
            "-x",
            "/binary 0a0b",
        ],
        b"",
        false,
    );
    assert_eq!(
        text(&out.stdout),
        "open\nhello\nbinary 0a0b\nclose 1000  true\n"
    );
    assert_eq!(out.status.code(), Some(0));
}

/// `--max-messages N` prints N messages and closes: three sent at once, whose echoes
/// all come back before the close reply, give one (`-1`) or two.
#[test]
fn connect_max_messages_prints_n_then_closes() {
    let serve = Serve::start(&["--echo"]);
    let url = serve.url("/");
    let three = ["-x", "a", "-x", "b", "-x", "c"];
    for (limit, want) in [
        (&["-1"][..], "open\na\nclose 1000  true\n"),
        (
            &["--max-messages", "2"][..],
            "open\na\nb\nclose 1000  true\n",
        ),
    ] {
        let mut args = vec!["connect", &url];
        args.extend(three);
        args.extend(limit);
        let out = run_with(&args, b"", false);
        assert_eq!(text(&out.stdout), want, "{limit:?}");
        assert_eq!(out.status.code(), Some(0));
    }
}

/// `-1` with stdin at its end at once still waits for the message: the server's comes
/// 300 ms after the handshake.
#[tokio::test]
async fn connect_one_waits_for_a_message_after_the_input_ends() {
    let url = late_server().await;
    let out = blocking(move || run(&["connect", &url, "-1"], "")).await;
    assert_eq!(text(&out.stdout), "open\nlate\nclose 1000  true\n");
    assert_eq!(out.status.code(), Some(0));
}

/// `-w SECS` keeps the connection open that long after the input ends (the message
/// 300 ms later is printed); without it the close is at once.
#[tokio::test]
async fn connect_wait_prints_what_comes_before_closing() {
    let url = late_server().await;
    let u = url.clone();
    let start = Instant::now();
    let out = blocking(move || run(&["connect", &u, "-w", "0.8"], "")).await;
    assert_eq!(text(&out.stdout), "open\nlate\nclose 1000  true\n");
    assert!(start.elapsed() >= Duration::from_millis(800));
    let out = blocking(move || run(&["connect", &url], "")).await;
    assert_eq!(text(&out.stdout), "open\nclose 1000  true\n");
}

/// With `-x`, `-w` bounds the wait for a reply: a server that never answers is closed
/// on after 0.3 s (cleanly: it does answer the close).
#[tokio::test]
async fn connect_execute_gives_up_on_the_reply_after_wait() {
    let url = server(|mut ws| async move {
        // Reads (and so answers the close) but never replies.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let start = Instant::now();
    let out =
        blocking(move || run_with(&["connect", &url, "-x", "hi", "-w", "0.3"], b"", false)).await;
    assert_eq!(text(&out.stdout), "open\nclose 1000  true\n");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(0));
}

// ----- connect: handshake and limits -----

/// `-v` prints the request and the response on stderr (stdout unchanged); with
/// `--no-deflate` the request offers no extension and none is accepted.
#[test]
fn connect_verbose_shows_the_handshake_and_no_deflate_drops_the_offer() {
    let serve = Serve::start(&[]);
    let url = serve.url("/ws");
    let out = run(&["connect", &url, "-v", "-x", "hi"], "");
    assert_eq!(text(&out.stdout), "open\nhi\nclose 1000  true\n");
    let stderr = text(&out.stderr);
    for needle in [
        "> GET /ws HTTP/1.1\n",
        "> upgrade: websocket\n",
        "> sec-websocket-key: ",
        "> sec-websocket-extensions: permessage-deflate",
        ">\n< HTTP/1.1 101\n",
        "< sec-websocket-accept: ",
        "< sec-websocket-extensions: permessage-deflate",
    ] {
        assert!(stderr.contains(needle), "{needle:?} missing: {stderr}");
    }

    let out = run(&["connect", &url, "-v", "--no-deflate", "-x", "hi"], "");
    assert_eq!(text(&out.stdout), "open\nhi\nclose 1000  true\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("> GET /ws HTTP/1.1\n"), "{stderr}");
    assert!(!stderr.contains("sec-websocket-extensions"), "{stderr}");

    // A refused handshake: the request is shown, the error has the status.
    let out = run(&["connect", &serve.url("/nothing"), "-v"], "");
    assert!(text(&out.stderr).contains("> GET /nothing HTTP/1.1\n"));
    assert!(text(&out.stdout).starts_with("error "));
}

/// `--max-size` fails the connection on a larger message (1009 to the server, 1006
/// reported here, exit 1); a message of exactly that size passes.
#[test]
fn connect_max_size_refuses_a_larger_message() {
    let serve = Serve::start(&["--echo"]);
    let url = serve.url("/");
    let hundred = "x".repeat(100);
    let out = run(&["connect", &url, "--max-size", "99", "-x", &hundred], "");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "open");
    assert!(
        lines[1].starts_with("error ") && lines[1].contains("99"),
        "{stdout}"
    );
    assert_eq!(lines[2], "close 1006  false");
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["connect", &url, "--max-size", "100", "-x", &hundred], "");
    assert_eq!(
        text(&out.stdout),
        format!("open\n{hundred}\nclose 1000  true\n")
    );
}

// ----- bench -----

fn bench_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["bench"];
    all.extend(args);
    all.push("--json");
    let out = run(&all, "");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), report)
}

/// `--rate 100` over 2 connections for 1 s sends 100 messages, not as many as the
/// server can echo; every echo intact.
#[test]
fn bench_rate_sends_at_the_rate_asked() {
    let serve = Serve::start(&["--echo"]);
    let url = serve.url("/");
    let (code, report) = bench_json(&[&url, "-c", "2", "-d", "1", "--rate", "100"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["rate"], 100.0);
    assert!(report["pipeline"].is_null());
    let sent = report["sent"].as_u64().unwrap();
    assert!((95..=101).contains(&sent), "{report}");
    assert!(report["messages"].as_u64().unwrap() >= 90, "{report}");
    assert_eq!(report["mismatches"], 0);

    let (code, report) = bench_json(&[&url, "-c", "2", "-d", "0.5"]);
    assert_eq!(code, Some(0));
    assert!(
        report["sent"].as_u64().unwrap() > 200,
        "closed loop: {report}"
    );
    assert_eq!(report["mismatches"], 0);
}

/// A server that stalls for 500 ms at its 10th message: the closed loop sees one slow
/// message (p90 stays small), the open loop sees every message that was due during the
/// stall (p90 well above 200 ms).
#[tokio::test]
async fn bench_rate_shows_the_queue_behind_a_stall() {
    let url = server(|mut ws| async move {
        let mut n = 0;
        while let Some(Ok(message)) = ws.next().await {
            n += 1;
            if n == 10 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if ws.send(message).await.is_err() {
                break;
            }
        }
    })
    .await;
    let u = url.clone();
    let (code, open) =
        blocking(move || bench_json(&[&u, "-c", "1", "-d", "1.5", "--rate", "50"])).await;
    assert_eq!(code, Some(0), "{open}");
    let p90 = open["latency_us"]["p90"].as_f64().unwrap();
    assert!(p90 > 200_000.0, "open loop p90 {p90} µs: {open}");

    let (code, closed) = blocking(move || bench_json(&[&url, "-c", "1", "-d", "1.5"])).await;
    assert_eq!(code, Some(0), "{closed}");
    let p90 = closed["latency_us"]["p90"].as_f64().unwrap();
    assert!(p90 < 100_000.0, "closed loop p90 {p90} µs: {closed}");
}

/// The same when the stall blocks the generator's writes too: the server, with a 4 KiB
/// receive buffer, stops reading for 600 ms, so the 32 KiB messages due meanwhile
/// cannot even be written (the socket and the 128 KiB write limit are full). Their
/// latency still counts from when they were due, not from when the socket took them:
/// p90 well above 200 ms.
#[tokio::test]
async fn bench_rate_counts_from_the_due_time_when_writes_block() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = wsevents::accept(tcp).await else {
                    return;
                };
                let mut n = 0;
                while let Some(Ok(message)) = ws.next().await {
                    n += 1;
                    if n == 10 {
                        tokio::time::sleep(Duration::from_millis(600)).await;
                    }
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let (code, report) = blocking(move || {
        bench_json(&[&url, "-c", "1", "-d", "1.5", "--rate", "100", "-s", "32768"])
    })
    .await;
    assert_eq!(code, Some(0), "{report}");
    let p90 = report["latency_us"]["p90"].as_f64().unwrap();
    assert!(p90 > 200_000.0, "p90 {p90} µs: {report}");
}

/// Echoes are checked: a server that corrupts every 5th message, or one that swaps
/// each pair, is caught (mismatches counted, exit 1), in both loops.
#[tokio::test]
async fn bench_counts_echoes_that_differ_and_fails() {
    let corrupting = server(|mut ws| async move {
        let mut n = 0;
        while let Some(Ok(message)) = ws.next().await {
            n += 1;
            let mut bytes = message.payload().to_vec();
            if n % 5 == 0 {
                bytes[3] ^= 1;
            }
            if ws.send(Message::binary(bytes)).await.is_err() {
                break;
            }
        }
    })
    .await;
    let swapping = server(|mut ws| async move {
        let mut held: Option<Message> = None;
        while let Some(Ok(message)) = ws.next().await {
            match held.take() {
                None => held = Some(message),
                Some(first) => {
                    let _ = ws.feed(message).await;
                    if ws.send(first).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
    .await;
    for (url, extra) in [
        (corrupting.clone(), &["--binary"][..]),
        (corrupting, &["--binary", "--rate", "200"][..]),
        (swapping.clone(), &["-k", "2"][..]),
        (swapping, &["--rate", "200"][..]),
    ] {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (code, report) = blocking(move || {
            let mut args = vec![url.as_str(), "-c", "1", "-d", "0.5"];
            args.extend(extra.iter().map(String::as_str));
            bench_json(&args)
        })
        .await;
        assert_eq!(code, Some(1), "{report}");
        assert!(report["mismatches"].as_u64().unwrap() > 0, "{report}");
        assert!(report["first_mismatch"].is_string(), "{report}");
    }
}

/// The text report names the loop and the mismatches.
#[tokio::test]
async fn bench_text_report_names_the_open_loop_and_mismatches() {
    let url = server(|mut ws| async move {
        while let Some(Ok(_)) = ws.next().await {
            if ws.send(Message::text("wrong")).await.is_err() {
                break;
            }
        }
    })
    .await;
    let out =
        blocking(move || run(&["bench", &url, "-c", "1", "-d", "0.3", "-r", "100"], "")).await;
    let report = text(&out.stdout);
    assert!(report.contains("open loop at 100 msg/s"), "{report}");
    assert!(report.contains("MISMATCHES"), "{report}");
    assert_eq!(out.status.code(), Some(1));
}

// ----- serve -----

/// `--protocol` (repeatable): the first of the client's list that the server speaks
/// wins; a client offering none of them connects without one; without the flag none is
/// ever chosen.
#[tokio::test]
async fn serve_protocol_picks_the_clients_first_that_it_speaks() {
    let serve = Serve::start(&["--protocol", "chat", "--protocol", "superchat"]);
    let plain = Serve::start(&[]);
    for (server, offer, want) in [
        (&serve, &["x", "superchat", "chat"][..], Some("superchat")),
        (&serve, &["chat", "superchat"][..], Some("chat")),
        (&serve, &["other"][..], None),
        (&plain, &["chat"][..], None),
    ] {
        let ws = wsevents::ClientBuilder::new(&server.url("/ws"))
            .unwrap()
            .protocols(offer)
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.protocol(), want, "{offer:?}");
    }
}

/// `GET path` on the server: the status line and the whole response.
async fn get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    text(&response)
}

/// `--dir`: files with their content types, a directory's index.html, the page still
/// at `/`, WebSocket routes unchanged, and nothing outside the directory (`..`, its
/// percent-encoded forms, a symbolic link out of it).
#[tokio::test]
async fn serve_dir_serves_files_beside_the_page_and_nothing_outside() {
    let base = std::env::temp_dir().join(format!("wsevents-cli-dir-{}", std::process::id()));
    let www = base.join("www");
    std::fs::create_dir_all(www.join("app")).unwrap();
    std::fs::write(www.join("style.css"), "body { color: red }").unwrap();
    std::fs::write(www.join("app/index.html"), "<p>my app</p>").unwrap();
    std::fs::write(www.join("logo.svg"), "<svg/>").unwrap();
    std::fs::write(base.join("secret.txt"), "do not serve").unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), www.join("link.txt")).unwrap();
    let serve = Serve::start(&["--dir", www.to_str().unwrap()]);

    let css = get(&serve.addr, "/style.css").await;
    assert!(css.starts_with("HTTP/1.1 200 "), "{css}");
    assert!(
        css.contains("Content-Type: text/css; charset=utf-8\r\n"),
        "{css}"
    );
    assert!(css.ends_with("\r\n\r\nbody { color: red }"), "{css}");
    let svg = get(&serve.addr, "/logo.svg").await;
    assert!(svg.contains("Content-Type: image/svg+xml\r\n"), "{svg}");
    let app = get(&serve.addr, "/app/").await;
    assert!(
        app.starts_with("HTTP/1.1 200 ") && app.ends_with("<p>my app</p>"),
        "{app}"
    );
    let page = get(&serve.addr, "/").await;
    assert!(
        page.contains("the WebSocket events, live"),
        "the demo page stays at /"
    );
    for outside in [
        "/../secret.txt",
        "/app/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/..%2fsecret.txt",
        "/link.txt",
        "/missing.css",
    ] {
        let response = get(&serve.addr, outside).await;
        assert!(
            response.starts_with("HTTP/1.1 404 "),
            "{outside}: {response}"
        );
        assert!(!response.contains("do not serve"), "{outside}: {response}");
    }
    let mut ws = wsevents::connect(&serve.url("/ws")).await.unwrap();
    ws.send(Message::text("still echoing")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().as_text(),
        Some("still echoing")
    );
    let _ = std::fs::remove_dir_all(base);
}

/// `--stdin`: each line typed goes to every connected client, echo and chat alike.
#[tokio::test]
async fn serve_stdin_sends_each_line_to_every_client() {
    let mut command = Command::new(BIN);
    command.stdin(Stdio::piped());
    let mut serve = Serve::spawn(command, &["--stdin"]);
    let mut stdin = serve.child.stdin.take().unwrap();
    let mut echo = wsevents::connect(&serve.url("/ws")).await.unwrap();
    let mut chat = wsevents::connect(&serve.url("/chat")).await.unwrap();
    // A round trip each: both are past the handshake, listening for typed lines.
    for ws in [&mut echo, &mut chat] {
        ws.send(Message::text("ready")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().as_text(), Some("ready"));
    }
    stdin.write_all(b"typed one\ntyped two\r\n").unwrap();
    stdin.flush().unwrap();
    for ws in [&mut echo, &mut chat] {
        for want in ["typed one", "typed two"] {
            let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap();
            assert_eq!(got.unwrap().unwrap().as_text(), Some(want));
        }
    }
    drop(stdin);
}

// ----- the command line -----

/// Every new flag is in its subcommand's help; contradictory ones give exit code 2,
/// impossible values exit code 1, each with one line on stderr.
#[test]
fn the_new_flags_are_documented_and_checked() {
    for (sub, flags) in [
        (
            "connect",
            &[
                "--binary",
                "--execute",
                "--max-messages",
                "-1",
                "--wait",
                "--prefix",
                "--verbose",
                "--no-deflate",
                "--max-size",
                "--proxy",
                "--no-proxy",
                "--cert",
                "--key",
            ][..],
        ),
        (
            "serve",
            &["--protocol", "--dir", "--stdin", "--client-ca"][..],
        ),
        ("bench", &["--rate"][..]),
    ] {
        let help = text(&run(&[sub, "--help"], "").stdout);
        for flag in flags {
            assert!(help.contains(flag), "{sub} --help lacks {flag}");
        }
    }
    for (args, code, needle) in [
        (
            &["connect", "ws://x/", "--binary", "--prefix"][..],
            2,
            "--prefix",
        ),
        (
            &["connect", "ws://x/", "-1", "--max-messages", "2"][..],
            2,
            "--max-messages",
        ),
        (
            &["connect", "ws://x/", "--wait", "1", "--keep-open"][..],
            2,
            "--keep-open",
        ),
        (
            &["connect", "ws://x/", "--max-messages", "0"][..],
            2,
            "--max-messages",
        ),
        (
            &["bench", "ws://x/", "--rate", "10", "--pipeline", "2"][..],
            2,
            "--pipeline",
        ),
        (
            &["connect", "ws://127.0.0.1:1/", "--wait=-1"][..],
            2,
            "--wait",
        ),
        (
            &["bench", "ws://127.0.0.1:1/", "--rate", "0"][..],
            1,
            "--rate",
        ),
        (
            &["serve", "--listen", "127.0.0.1:0", "--dir", "/no/such/dir"][..],
            1,
            "--dir",
        ),
    ] {
        let out = run(args, "");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Durations from flags at their extremes: what a `Duration` holds but no deadline can
/// reach (1e19 s) is accepted and means "never", and the connection works; what is
/// not a duration (1e30, negative, not a number) is refused with a message and exit
/// code 2, never a panic.
#[test]
fn extreme_durations_are_never_or_refused_never_a_panic() {
    let serve = Serve::start(&[
        "--echo",
        "--idle-timeout",
        "1e19",
        "--ping-interval",
        "1e19",
    ]);
    let out = run(
        &[
            "connect",
            &serve.url("/"),
            "--ping-interval",
            "1e19",
            "-x",
            "still alive",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("still alive"),
        "{}",
        text(&out.stdout)
    );
    for args in [
        vec!["connect", "ws://127.0.0.1:9/", "--ping-interval", "1e30"],
        vec!["connect", "ws://127.0.0.1:9/", "--connect-timeout=-1"],
        vec!["connect", "ws://127.0.0.1:9/", "--wait", "NaN"],
        vec!["sub", "ws://127.0.0.1:9/pubsub", "t", "--max-delay", "1e30"],
        vec!["bench", "ws://127.0.0.1:9/", "--duration", "inf"],
        vec!["serve", "--idle-timeout", "1e30"],
    ] {
        let out = run(&args, "");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("duration") || err.contains("seconds"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
