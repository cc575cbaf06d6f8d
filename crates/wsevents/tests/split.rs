//! `WebSocketStream::split` over real sockets on 127.0.0.1: the halves wake
//! independently (no lost wakeup when both wait on the transport), the write half's
//! close keeps the read half's messages, its ping reaches the peer, and two tasks echo
//! many messages both ways.
#![allow(clippy::unwrap_used)]

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;
use wsevents::{ClientBuilder, CloseCode, Config, Message, StreamEvent, WebSocketStream};

/// Long enough for anything here on a loaded machine, and shorter than the default
/// keepalive deadlines (20 s), which could otherwise end a hang; a hang fails instead
/// of blocking.
const LIMIT: Duration = Duration::from_secs(10);

/// How many times the client's socket had nothing to give a read, or no room for a
/// write (its poll returned `Pending`): what the tests below wait for, instead of
/// guessing with time when a half is parked on the socket.
#[derive(Clone, Copy, Debug, Default)]
struct Waits {
    reads: usize,
    writes: usize,
}

/// The client's TCP stream, counting its `Pending` polls into a [`Waits`].
struct Watched {
    tcp: TcpStream,
    waits: Arc<watch::Sender<Waits>>,
}

impl Watched {
    fn count<T>(&self, poll: Poll<T>, count: fn(&mut Waits)) -> Poll<T> {
        if poll.is_pending() {
            self.waits.send_modify(count);
        }
        poll
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.tcp).poll_read(cx, buf);
        self.count(poll, |w| w.reads += 1)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.count(poll, |w| w.writes += 1)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.count(poll, |w| w.writes += 1)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The waits of one client socket: a test takes a [`snapshot`](Self::now) and then
/// waits for a count to pass it.
#[derive(Clone)]
struct Watch(Arc<watch::Sender<Waits>>);

impl Watch {
    fn now(&self) -> Waits {
        *self.0.borrow()
    }

    /// Until `done` holds (at most [`LIMIT`]).
    async fn until(&self, what: &str, done: impl FnMut(&Waits) -> bool) {
        let mut waits = self.0.subscribe();
        match timeout(LIMIT, waits.wait_for(done)).await {
            Ok(found) => drop(found.unwrap()),
            Err(_) => panic!("{what}: not within {LIMIT:?} ({:?})", self.now()),
        }
    }

    /// Until a read of the socket waited after `since`: a half is parked on it,
    /// with its waker registered.
    async fn read_waits(&self, since: Waits) {
        self.until("a read waiting on the socket", |w| w.reads > since.reads)
            .await;
    }

    /// Until a write to the socket waited after `since`: the socket is full.
    async fn write_waits(&self, since: Waits) {
        self.until("a write waiting on the socket", |w| w.writes > since.writes)
            .await;
    }
}

/// The client's socket watched.
fn watched(tcp: TcpStream) -> (Watched, Watch) {
    let waits = Arc::new(watch::Sender::new(Waits::default()));
    let watch = Watch(waits.clone());
    (Watched { tcp, waits }, watch)
}

/// A connected client and the server end of its connection, over loopback.
async fn pair() -> (WebSocketStream<TcpStream>, WebSocketStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    handshake(listener, tcp, Config::default()).await
}

/// The same, with small kernel buffers both ways, so a few hundred KiB fill them,
/// and the client's socket watched.
async fn small_buffer_pair(
    config: Config,
) -> (WebSocketStream<Watched>, WebSocketStream<TcpStream>, Watch) {
    let socket = TcpSocket::new_v4().unwrap();
    // Set before listen: accepted sockets inherit it, and the window is sized by it.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(8).unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let (tcp, watch) = watched(socket.connect(addr).await.unwrap());
    let (client, server) = handshake(listener, tcp, config).await;
    (client, server, watch)
}

/// The client end, over `tcp`, runs with `config`.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    listener: TcpListener,
    tcp: S,
    config: Config,
) -> (WebSocketStream<S>, WebSocketStream<TcpStream>) {
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        wsevents::accept(tcp).await.unwrap()
    });
    let client = ClientBuilder::new(&url)
        .unwrap()
        .config(config)
        .handshake(tcp)
        .await
        .unwrap();
    (client, server.await.unwrap())
}

/// `len` bytes that do not compress (xorshift64 from `seed`).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The lost-wakeup regression: the write half waits on a full socket, then the read
/// half waits too (and its poll writes, taking the socket's one write waker); when the
/// peer drains, both must finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_half_on_a_full_socket_wakes_while_the_read_half_waits() {
    const COUNT: usize = 64;
    const SIZE: usize = 64 * 1024;
    let (client, mut peer, watch) = small_buffer_pair(Config::default()).await;
    let (mut write, mut read) = client.split();

    let before = watch.now();
    let writer = tokio::spawn(async move {
        for i in 0..COUNT {
            write.send(Message::binary(noise(SIZE, i as u64))).await?;
        }
        Ok::<_, wsevents::Error>(write)
    });
    // The peer reads nothing yet: the writer fills the buffers and waits.
    watch.write_waits(before).await;
    assert!(!writer.is_finished(), "the socket never filled up");

    let before = watch.now();
    let reader = tokio::spawn(async move {
        let message = read.next().await;
        (
            message.map(|m| m.map(|m| m.as_text().map(str::to_owned))),
            read,
        )
    });
    // The reader's poll reaches the transport (and registers) before the peer drains.
    watch.read_waits(before).await;
    assert!(!reader.is_finished());

    let drain = async {
        for i in 0..COUNT {
            let message = peer.next().await.expect("a message").expect("no error");
            assert_eq!(message, Message::binary(noise(SIZE, i as u64)));
        }
        peer.send(Message::text("all read")).await.unwrap();
    };
    timeout(LIMIT, drain)
        .await
        .expect("the peer got every message (the write half was woken)");
    let write = timeout(LIMIT, writer)
        .await
        .expect("the write half finished")
        .unwrap()
        .unwrap();
    let (message, read) = timeout(LIMIT, reader)
        .await
        .expect("the read half finished")
        .unwrap();
    assert_eq!(message.unwrap().unwrap().as_deref(), Some("all read"));
    assert!(read.reunite(write).is_ok());
}

/// The same full socket, but the read half's task polls once and then stops polling
/// (a `select!` or a timeout dropped its read): it last took the socket's write waker,
/// yet the write half must still wake when the peer drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_half_wakes_when_the_read_half_polled_once_and_went_idle() {
    const COUNT: usize = 64;
    const SIZE: usize = 64 * 1024;
    let (client, mut peer, watch) = small_buffer_pair(Config::default()).await;
    let (mut write, mut read) = client.split();

    let before = watch.now();
    let writer = tokio::spawn(async move {
        for i in 0..COUNT {
            write.send(Message::binary(noise(SIZE, i as u64))).await?;
        }
        Ok::<_, wsevents::Error>(write)
    });
    watch.write_waits(before).await;
    assert!(!writer.is_finished(), "the socket never filled up");

    let before = watch.now();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let (idle_tx, idle) = tokio::sync::oneshot::channel::<()>();
    let reader_watch = watch.clone();
    let reader = tokio::spawn(async move {
        // Poll the read until it waits on the socket, then drop it.
        tokio::select! {
            biased;
            early = read.next() => panic!("nothing to read yet, got {early:?}"),
            () = reader_watch.read_waits(before) => {}
        }
        idle_tx.send(()).unwrap();
        // Idle, holding the half, until told to read again.
        wait.await.unwrap();
        let message = read.next().await;
        (
            message.map(|m| m.map(|m| m.as_text().map(str::to_owned))),
            read,
        )
    });
    timeout(LIMIT, idle).await.unwrap().unwrap();

    let drain = async {
        for i in 0..COUNT {
            let message = peer.next().await.expect("a message").expect("no error");
            assert_eq!(message, Message::binary(noise(SIZE, i as u64)));
        }
        peer.send(Message::text("all read")).await.unwrap();
    };
    timeout(LIMIT, drain)
        .await
        .expect("the peer got every message (the write half was woken)");
    let write = timeout(LIMIT, writer)
        .await
        .expect("the write half finished")
        .unwrap()
        .unwrap();
    go.send(()).unwrap();
    let (message, read) = timeout(LIMIT, reader)
        .await
        .expect("the read half finished")
        .unwrap();
    assert_eq!(message.unwrap().unwrap().as_deref(), Some("all read"));
    assert!(write.reunite(read).is_ok());
}

/// The write half's close arms the close timeout, which only the reading side's poll
/// sets: a read half already waiting must be woken to arm it, or a peer that never
/// answers the close leaves it waiting for ever.
#[tokio::test]
async fn write_half_close_times_out_a_silent_peer_for_a_waiting_read_half() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    // No deadline but the close timeout (keepalive would arm the timer anyway).
    let config = Config {
        close_timeout: Some(Duration::from_millis(200)),
        ping_interval: None,
        pong_timeout: None,
        ..Config::default()
    };
    let (tcp, watch) = watched(tcp);
    let (client, _silent_peer) = handshake(listener, tcp, config).await;
    let (mut write, mut read) = client.split();
    let before = watch.now();
    let reader = tokio::spawn(async move {
        let mut messages = 0;
        while let Some(item) = read.next().await {
            // The close timeout is reported as an error before the end.
            if item.is_ok() {
                messages += 1;
            }
        }
        (messages, read)
    });
    // The reader is waiting for input (no deadline armed) when the write half closes.
    watch.read_waits(before).await;
    timeout(LIMIT, write.close(CloseCode::NORMAL, ""))
        .await
        .unwrap()
        .unwrap();
    let (messages, read) = timeout(LIMIT, reader)
        .await
        .expect("the close timeout ended the read half")
        .unwrap();
    assert_eq!(messages, 0);
    let closure = read.closure().expect("closed");
    assert!(!closure.was_clean());
    assert_eq!(closure.code(), CloseCode::ABNORMAL);
}

/// The write half closes behind a message that cannot leave (a peer that reads
/// nothing, full buffers): its flush waits on the socket, and only the state change
/// can tell the waiting read half to arm the close timeout that ends it all.
#[tokio::test]
async fn write_half_close_on_a_full_socket_times_out_a_peer_that_reads_nothing() {
    // No deadline but the close timeout (keepalive would arm the timer anyway).
    let config = Config {
        close_timeout: Some(Duration::from_millis(200)),
        ping_interval: None,
        pong_timeout: None,
        ..Config::default()
    };
    let (client, _deaf_peer, watch) = small_buffer_pair(config).await;
    let (mut write, mut read) = client.split();
    let before = watch.now();
    let reader = tokio::spawn(async move {
        while read.next().await.is_some() {}
        read
    });
    watch.read_waits(before).await;
    write.set_write_limit(usize::MAX);
    write
        .feed(Message::binary(noise(4 << 20, 7)))
        .await
        .unwrap();
    // Fill the socket: from here on the close's own flush writes nothing.
    let before = watch.now();
    tokio::select! {
        biased;
        flushed = write.flush() => panic!("4 MiB flushed to a peer that reads nothing: {flushed:?}"),
        () = watch.write_waits(before) => {}
    }
    timeout(LIMIT, write.close(CloseCode::NORMAL, ""))
        .await
        .expect("the close ended with the connection")
        .unwrap();
    let read = timeout(LIMIT, reader).await.unwrap().unwrap();
    assert_eq!(read.closure().unwrap().code(), CloseCode::ABNORMAL);
}

/// The write half's sink has the stream's backpressure: with the peer not reading,
/// `feed` waits once the write limit is queued, so what is queued stays under the
/// limit plus one message. (Incompressible data: the limit counts wire bytes,
/// `buffered_amount` application bytes before compression.)
#[tokio::test]
async fn write_half_sink_waits_at_the_write_limit() {
    const LIMIT_BYTES: usize = 64 * 1024;
    const SIZE: usize = 16 * 1024;
    let (client, _deaf_peer, watch) = small_buffer_pair(Config::default()).await;
    let (mut write, _read) = client.split();
    write.set_write_limit(LIMIT_BYTES);
    let mut fed = 0;
    // 16 MiB is far more than the kernel's buffers hold. A feed that waits on the
    // full socket has waited for good: the peer reads nothing.
    while fed < 1024 {
        let before = watch.now();
        tokio::select! {
            biased;
            result = write.feed(Message::binary(noise(SIZE, fed as u64))) => result.unwrap(),
            () = watch.write_waits(before) => break,
        }
        fed += 1;
    }
    assert!(fed < 1024, "feed never waited");
    // Under the limit before the last message, which may take it one message over;
    // `buffered_amount` may lag the writes by one 16 KiB granule.
    let queued = write.buffered_amount();
    assert!(
        queued <= LIMIT_BYTES + 2 * SIZE,
        "{queued} bytes queued over a {LIMIT_BYTES} limit"
    );
}

/// Closing the write half sends the close frame but keeps what the peer sent before
/// its own: the read half yields it all, then ends after the close handshake.
#[tokio::test]
async fn write_half_close_keeps_the_read_halfs_pending_messages() {
    let (client, mut peer) = pair().await;
    let (mut write, mut read) = client.split();
    for i in 0..5 {
        peer.feed(Message::text(format!("message {i}")))
            .await
            .unwrap();
    }
    peer.flush().await.unwrap();
    // The messages are on their way (or in the client's buffers) when it closes.
    let peer_task = tokio::spawn(async move {
        while let Some(message) = peer.next().await {
            message.unwrap();
        }
        peer.closure().cloned()
    });
    timeout(LIMIT, write.close(CloseCode::GOING_AWAY, "bye"))
        .await
        .unwrap()
        .unwrap();

    let mut received = Vec::new();
    let collect = async {
        while let Some(message) = read.next().await {
            received.push(message.unwrap().as_text().unwrap().to_owned());
        }
    };
    timeout(LIMIT, collect).await.expect("the read half ended");
    let expected: Vec<String> = (0..5).map(|i| format!("message {i}")).collect();
    assert_eq!(received, expected);

    let closure = read.closure().expect("closed");
    assert!(closure.was_clean());
    assert_eq!(
        closure.code(),
        CloseCode::GOING_AWAY,
        "the peer echoes the code"
    );
    let peer_closure = peer_task.await.unwrap().expect("the peer closed");
    assert_eq!(
        (peer_closure.code(), peer_closure.reason()),
        (CloseCode::GOING_AWAY, "bye")
    );
}

/// The sink's `close` follows the same rule, with 1000.
#[tokio::test]
async fn sink_close_of_the_write_half_keeps_the_read_halfs_messages() {
    let (client, mut peer) = pair().await;
    let (mut write, mut read) = client.split();
    peer.send(Message::binary(vec![7; 100_000])).await.unwrap();
    let peer_task = tokio::spawn(async move {
        while let Some(message) = peer.next().await {
            message.unwrap();
        }
        peer.closure().cloned()
    });
    timeout(LIMIT, SinkExt::close(&mut write))
        .await
        .unwrap()
        .unwrap();
    let message = timeout(LIMIT, read.next()).await.unwrap();
    assert_eq!(message.unwrap().unwrap(), Message::binary(vec![7; 100_000]));
    assert!(timeout(LIMIT, read.next()).await.unwrap().is_none());
    assert!(read.closure().unwrap().was_clean());
    let peer_closure = peer_task.await.unwrap().unwrap();
    assert_eq!(peer_closure.code(), CloseCode::NORMAL);
}

/// With the read half dropped, nobody is left to read: the write half's close drives
/// the close handshake to its end itself.
#[tokio::test]
async fn write_half_close_without_a_read_half_finishes_the_handshake() {
    let (client, mut peer) = pair().await;
    let (mut write, read) = client.split();
    drop(read);
    peer.send(Message::text("unread")).await.unwrap();
    let peer_task = tokio::spawn(async move {
        while peer.next().await.is_some() {}
        peer.closure().cloned()
    });
    timeout(LIMIT, write.close(CloseCode::NORMAL, ""))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(write.state(), wsevents::State::Closed);
    assert!(peer_task.await.unwrap().unwrap().was_clean());
}

/// The write half's ping is written out by itself (the read half is not polled), and
/// its pong comes out of the read half's `next_event`.
#[tokio::test]
async fn write_half_ping_reaches_the_peer() {
    let (client, mut peer) = pair().await;
    let (mut write, mut read) = client.split();
    timeout(LIMIT, write.ping("are you there?"))
        .await
        .unwrap()
        .unwrap();
    let event = timeout(LIMIT, peer.next_event()).await.unwrap();
    assert_eq!(
        event.unwrap().unwrap(),
        StreamEvent::Ping(bytes::Bytes::from_static(b"are you there?"))
    );
    // The peer answered on that read; the pong comes back to the read half.
    let event = timeout(LIMIT, read.next_event()).await.unwrap();
    match event.unwrap().unwrap() {
        StreamEvent::Pong { payload, rtt } => {
            assert_eq!(payload, "are you there?");
            assert!(rtt.is_some(), "the write half's ping is recorded");
        }
        other => panic!("expected the pong, got {other:?}"),
    }
}

/// Keepalive pings go out from the read half's timer, and their pongs come out of its
/// `next_event` with the round-trip time.
#[tokio::test]
async fn read_half_runs_keepalive_and_times_its_pongs() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let config = Config {
        ping_interval: Some(Duration::from_millis(50)),
        ..Config::default()
    };
    let (client, mut peer) = handshake(listener, tcp, config).await;
    let echo = tokio::spawn(async move { while peer.next().await.is_some() {} });
    let (mut write, mut read) = client.split();
    let event = timeout(LIMIT, read.next_event()).await.unwrap();
    match event.unwrap().unwrap() {
        StreamEvent::Pong { rtt, .. } => assert!(rtt.is_some(), "a keepalive ping is timed"),
        other => panic!("expected a keepalive pong, got {other:?}"),
    }
    timeout(LIMIT, write.close(CloseCode::NORMAL, ""))
        .await
        .unwrap()
        .unwrap();
    while timeout(LIMIT, read.next()).await.unwrap().is_some() {}
    echo.await.unwrap();
}

/// Two tasks, one per half, against an echo peer: many messages of mixed sizes go out
/// and come back in order, then the write half closes and the read half ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halves_on_two_tasks_echo_many_messages() {
    const COUNT: usize = 5_000;
    let (client, mut peer) = pair().await;
    let echo = tokio::spawn(async move {
        while let Some(Ok(message)) = peer.next().await {
            if peer.feed(message).await.is_err() {
                break;
            }
        }
    });
    fn message(i: usize) -> Message {
        // Mostly small, every 100th large (and incompressible) enough to fill the
        // socket's buffers.
        if i.is_multiple_of(100) {
            return Message::binary(noise(300_000, i as u64));
        }
        let size = i % 1000;
        if i.is_multiple_of(2) {
            Message::binary(vec![i as u8; size])
        } else {
            Message::text("x".repeat(size))
        }
    }
    let (mut write, mut read) = client.split();
    let writer = tokio::spawn(async move {
        for i in 0..COUNT {
            write.feed(message(i)).await?;
        }
        write.flush().await?;
        Ok::<_, wsevents::Error>(write)
    });
    let reader = tokio::spawn(async move {
        for i in 0..COUNT {
            let got = read.next().await.expect("a message").expect("no error");
            assert_eq!(got, message(i), "message {i}");
        }
        read
    });
    let mut write = timeout(LIMIT, writer).await.unwrap().unwrap().unwrap();
    let mut read = timeout(LIMIT, reader).await.unwrap().unwrap();
    timeout(LIMIT, write.close(CloseCode::NORMAL, "done"))
        .await
        .unwrap()
        .unwrap();
    assert!(timeout(LIMIT, read.next()).await.unwrap().is_none());
    assert!(read.closure().unwrap().was_clean());
    echo.await.unwrap();
}

/// `reunite` gives the stream back only for the halves of one stream.
#[tokio::test]
async fn reunite_takes_only_the_halves_of_one_stream() {
    let (a, _peer_a) = pair().await;
    let (b, _peer_b) = pair().await;
    let (write_a, read_a) = a.split();
    let (write_b, read_b) = b.split();
    assert!(!read_a.is_pair_of(&write_b));
    let wsevents::ReuniteError(read_a, write_b) = read_a.reunite(write_b).unwrap_err();
    let mut a = read_a.reunite(write_a).unwrap();
    let mut b = write_b.reunite(read_b).unwrap();
    a.send(Message::text("still open")).await.unwrap();
    assert_eq!(a.state(), wsevents::State::Open);
    b.send(Message::text("also")).await.unwrap();
}
