//! `ClientBuilder::reconnect` over real sockets on 127.0.0.1: servers that drop,
//! restart, refuse or close with a code, and what the reconnecting client does.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use wsevents::{
    Accept, Acceptor, ClientBuilder, CloseCode, Data, Error, ReadyState, Reconnect,
    ReconnectCloseEvent, ReconnectingWebSocket, WebSocket,
};

/// Every wait of a test.
const TIMEOUT: Duration = Duration::from_secs(10);

type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// What a test server does with each connection it accepts.
#[derive(Clone, Copy)]
enum Behavior {
    /// Report every text message on the channel, keep the connection open.
    Record,
    /// Close with this code as soon as it opens.
    CloseWith(u16),
}

/// A server whose connections all end when it is dropped (the listener and every
/// connection task are aborted): what a crashed process looks like to its clients.
struct TestServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
    accepted: Arc<AtomicUsize>,
}

impl TestServer {
    async fn start(
        addr: &str,
        behavior: Behavior,
        messages: mpsc::UnboundedSender<String>,
    ) -> Self {
        Self::start_with(addr, Acceptor::new(), behavior, messages).await
    }

    async fn start_with(
        addr: &str,
        acceptor: Acceptor,
        behavior: Behavior,
        messages: mpsc::UnboundedSender<String>,
    ) -> Self {
        let listener = bind(addr).await;
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            let acceptor = Arc::new(acceptor);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, messages) = (acceptor.clone(), messages.clone());
                connections.spawn(async move {
                    let Ok((stream, _)) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let ws = WebSocket::from_stream(stream, "ws://client/");
                    let me = ws.clone();
                    match behavior {
                        Behavior::Record => ws.on_message(move |e| {
                            if let Data::Text(text) = &e.data {
                                let _ = messages.send(text.to_string());
                            }
                        }),
                        Behavior::CloseWith(code) => ws.on_open(move |_| {
                            let _ = me.close_with_code(CloseCode::from(code), "go away");
                        }),
                    }
                    ws.run().await;
                });
            }
        });
        TestServer {
            addr,
            task,
            accepted,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Kill it: the listener and every connection, at once (no close handshake).
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Bind `addr`, retrying a little while the port is released by a server just killed.
async fn bind(addr: &str) -> TcpListener {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

/// A port nothing listens on (for now).
async fn free_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Fast options for tests.
fn fast() -> Reconnect {
    Reconnect::new()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(100))
}

/// A reconnecting client whose open and close events are logged:
/// `open:<reconnect>:<attempt>` and `close:<code>:<will_reconnect>`.
fn client(url: &str, options: Reconnect) -> (ReconnectingWebSocket, Log) {
    let ws = ClientBuilder::new(url)
        .unwrap()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .reconnect(options);
    let log: Log = Arc::default();
    let l = log.clone();
    ws.on_open(move |e| {
        l.lock()
            .unwrap()
            .push(format!("open:{}:{}", e.reconnect, e.attempt));
    });
    let l = log.clone();
    ws.on_close(move |e| {
        l.lock()
            .unwrap()
            .push(format!("close:{}:{}", e.code, e.will_reconnect()));
    });
    (ws, log)
}

/// Wait until `f` holds, for at most [`TIMEOUT`].
async fn until(what: &str, f: impl Fn() -> bool) {
    tokio::time::timeout(TIMEOUT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("a message in time")
        .expect("the server is there")
}

async fn finish(run: JoinHandle<ReconnectCloseEvent>) -> ReconnectCloseEvent {
    tokio::time::timeout(TIMEOUT, run)
        .await
        .expect("run ends in time")
        .unwrap()
}

#[tokio::test]
async fn client_reconnects_after_the_server_drops_it_and_open_says_reconnect() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = TestServer::start("127.0.0.1:0", Behavior::Record, tx.clone()).await;
    let addr = server.addr.to_string();
    let (ws, log) = client(&server.url(), fast());
    let run = tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    until("the first open", || ws.ready_state() == ReadyState::Open).await;
    ws.send("one").unwrap();
    assert_eq!(next(&mut rx).await, "one");

    server.kill().await;
    until("the loss", || ws.ready_state() == ReadyState::Connecting).await;
    let server = TestServer::start(&addr, Behavior::Record, tx).await;
    until("the reopen", || {
        entries(&log).iter().any(|e| e.starts_with("open:true"))
    })
    .await;
    ws.send("two").unwrap();
    assert_eq!(next(&mut rx).await, "two");

    let log_now = entries(&log);
    assert_eq!(log_now[0], "open:false:1");
    assert!(log_now[1].starts_with("close:1006:true"), "{log_now:?}");
    assert!(
        log_now.last().unwrap().starts_with("open:true:"),
        "{log_now:?}"
    );
    ws.close().unwrap();
    let last = finish(run).await;
    assert!(!last.will_reconnect());
    assert_eq!(ws.ready_state(), ReadyState::Closed);
    drop(server);
}

#[tokio::test]
async fn messages_sent_while_disconnected_arrive_in_order_after_reconnect() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = TestServer::start("127.0.0.1:0", Behavior::Record, tx.clone()).await;
    // The next server in turn, a second process of the same service: its port now,
    // the server itself only once the messages are queued (until then every attempt
    // to reach it is refused).
    let second_addr = free_port().await;
    let second_url = format!("ws://{second_addr}/");
    let options = fast().servers(&[&second_url]).unwrap();
    let (ws, log) = client(&first.url(), options);
    // Before the first connection: queued.
    ws.send("q1").unwrap();
    ws.send("q2").unwrap();
    let sender = ws.clone();
    ws.on_open(move |e| {
        // Sent from the open handler: after the queue.
        let _ = sender.send(format!("hello {}", e.reconnect));
    });
    let run = tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    assert_eq!(next(&mut rx).await, "q1");
    assert_eq!(next(&mut rx).await, "q2");
    assert_eq!(next(&mut rx).await, "hello false");

    first.kill().await;
    until("the loss", || ws.ready_state() != ReadyState::Open).await;
    for i in 0..50 {
        ws.send(format!("m{i}")).unwrap();
    }
    assert_eq!(ws.queued(), 50);
    let second = TestServer::start(&second_addr, Behavior::Record, tx).await;
    for i in 0..50 {
        assert_eq!(next(&mut rx).await, format!("m{i}"));
    }
    assert_eq!(next(&mut rx).await, "hello true");
    assert_eq!(ws.url(), second.url());
    assert_eq!(ws.queued(), 0);
    // on_open was replaced above: only the closes are logged (the loss, then every
    // refused attempt).
    assert_eq!(entries(&log)[0], "close:1006:true");
    ws.close().unwrap();
    finish(run).await;
}

#[tokio::test]
async fn sending_past_the_queue_bound_is_queue_full() {
    let (ws, _) = client("ws://127.0.0.1:9/", fast().max_queued(3));
    for i in 0..3 {
        ws.send(format!("m{i}")).unwrap();
    }
    match ws.send("one too many") {
        Err(Error::QueueFull { limit: 3 }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(ws.queued(), 3);
    ws.close().unwrap();
    assert!(matches!(ws.send("after close"), Err(Error::InvalidState)));
}

#[tokio::test]
async fn the_callers_close_ends_it_and_no_attempt_follows() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let server = TestServer::start("127.0.0.1:0", Behavior::Record, tx).await;
    let (ws, log) = client(&server.url(), fast());
    let run = tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    until("open", || ws.ready_state() == ReadyState::Open).await;
    ws.close_with(1000, "done").unwrap();
    assert_eq!(ws.ready_state(), ReadyState::Closing);
    let last = finish(run).await;
    assert_eq!((last.code, last.was_clean), (1000, true));
    assert_eq!(last.reconnect_in, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.accepted(), 1);
    assert_eq!(entries(&log), ["open:false:1", "close:1000:false"]);
    // A later run returns the same final close at once.
    assert_eq!(ws.run().await, last);
}

#[tokio::test]
async fn the_callers_close_while_waiting_ends_it() {
    // Nothing listens there: every attempt fails, and the client waits between them.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    drop(listener);
    let options = Reconnect::new()
        .initial_delay(Duration::from_secs(60))
        .max_delay(Duration::from_secs(60));
    let (ws, log) = client(&url, options);
    let run = tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    until("the first failure", || !entries(&log).is_empty()).await;
    ws.close().unwrap();
    let last = finish(run).await;
    assert_eq!(last.code, 1005);
    assert_eq!(entries(&log), ["close:1006:true", "close:1005:false"]);
}

#[tokio::test]
async fn a_permanent_close_code_from_the_server_ends_it() {
    for code in [1002, 1003] {
        let (tx, _rx) = mpsc::unbounded_channel();
        let server = TestServer::start("127.0.0.1:0", Behavior::CloseWith(code), tx).await;
        let (ws, log) = client(&server.url(), fast());
        let last = tokio::time::timeout(TIMEOUT, ws.run()).await.unwrap();
        assert_eq!(last.code, code);
        assert!(!last.will_reconnect());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(server.accepted(), 1, "code {code}");
        assert_eq!(
            entries(&log),
            ["open:false:1".to_owned(), format!("close:{code}:false")]
        );
    }
}

#[tokio::test]
async fn a_retryable_close_code_from_the_server_is_retried() {
    let (tx, _rx) = mpsc::unbounded_channel();
    // 1008: the hub's "slow subscriber"; 1013: try again later.
    for code in [1008, 1013] {
        let server = TestServer::start("127.0.0.1:0", Behavior::CloseWith(code), tx.clone()).await;
        let (ws, log) = client(&server.url(), fast());
        let run = tokio::spawn({
            let ws = ws.clone();
            async move { ws.run().await }
        });
        until("three connections", || server.accepted() >= 3).await;
        ws.close().unwrap();
        finish(run).await;
        assert!(entries(&log).contains(&format!("close:{code}:true")));
    }
}

/// An acceptor that refuses the first `refusals` upgrades with `status`, then accepts.
fn refusing(status: StatusCode, refusals: usize) -> (Acceptor, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let acceptor = Acceptor::new().on_request(move |_| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < refusals {
                Err(http::Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap())
            } else {
                Ok(Accept::new())
            }
        }
    });
    (acceptor, asked)
}

#[tokio::test]
async fn a_403_refusal_ends_it() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let (acceptor, asked) = refusing(StatusCode::FORBIDDEN, usize::MAX);
    let server = TestServer::start_with("127.0.0.1:0", acceptor, Behavior::Record, tx).await;
    let (ws, log) = client(&server.url(), fast());
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e2 = errors.clone();
    ws.on_error(move |e| e2.lock().unwrap().push(e.message().to_owned()));
    let last = tokio::time::timeout(TIMEOUT, ws.run()).await.unwrap();
    assert_eq!(last.code, 1006);
    assert!(!last.will_reconnect());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(entries(&log), ["close:1006:false"]);
    let errors = errors.lock().unwrap().clone();
    assert!(errors[0].contains("403"), "{errors:?}");
}

#[tokio::test]
async fn a_503_refusal_is_retried_until_it_opens() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (acceptor, asked) = refusing(StatusCode::SERVICE_UNAVAILABLE, 2);
    let server = TestServer::start_with("127.0.0.1:0", acceptor, Behavior::Record, tx).await;
    let (ws, log) = client(&server.url(), fast());
    ws.send("queued through two refusals").unwrap();
    let run = tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    assert_eq!(next(&mut rx).await, "queued through two refusals");
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert_eq!(
        entries(&log),
        ["close:1006:true", "close:1006:true", "open:false:3"]
    );
    ws.close().unwrap();
    finish(run).await;
}

#[tokio::test]
async fn max_retries_gives_up() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    drop(listener);
    let (ws, log) = client(&url, fast().max_retries(Some(2)));
    let last = tokio::time::timeout(TIMEOUT, ws.run()).await.unwrap();
    assert!(!last.will_reconnect());
    assert_eq!(
        entries(&log),
        ["close:1006:true", "close:1006:true", "close:1006:false"]
    );
}

#[tokio::test]
async fn the_callers_close_during_a_handshake_ends_it_at_once() {
    // A server that reads the upgrade request and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (got, mut requested) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
        got.send(()).unwrap();
        // Hold the connection open, silent, without ever closing it first.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(tcp);
    });
    let (ws, _) = client(&url, fast());
    let run = tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    tokio::time::timeout(TIMEOUT, requested.recv())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    ws.close().unwrap();
    let last = finish(run).await;
    // Not the close timeout (5 s) waiting for a close handshake that was never begun.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(!last.will_reconnect());
    server.abort();
}
