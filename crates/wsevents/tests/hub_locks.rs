//! The hub's locks (issue 24): a lock per topic, so publishes to different topics go on
//! while one topic's framing runs; no hub lock held while a `Framing`, a `Backend` or a
//! subscription's answer runs, so each may call back into the hub; and one topic's
//! order kept when several threads publish to it at once. Over real sockets.
//!
//! A deadlock on a std mutex blocks its thread for good, where no tokio timeout can
//! fire, so each scenario runs on a thread of its own and the test waits for it with a
//! deadline.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use futures_util::StreamExt;
use wsevents::hub::{
    Backend, BackendStatus, Framing, History, Hub, Inbound, Publication, Subscribed,
};
use wsevents::{Message, Server, WebSocket};

/// Run `scenario` on a thread of its own with a multi-thread runtime of two workers;
/// panic if it has not finished within 60 s (a deadlock) or panicked.
fn within_deadline<F>(name: &str, scenario: impl FnOnce() -> F + Send + 'static)
where
    F: Future<Output = ()>,
{
    let (done, finished) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(scenario());
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => thread.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: no end within 60 s (a deadlock)"),
    }
}

/// A client connected to `server` and the server's socket for it, driven.
async fn pair(
    server: &Server,
    url: &str,
) -> (
    wsevents::WebSocketStream<wsevents::MaybeTlsStream>,
    WebSocket,
) {
    let client = wsevents::connect(url).await.unwrap();
    let ws = server.accept().await.unwrap();
    tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    (client, ws)
}

async fn next_text(client: &mut wsevents::WebSocketStream<wsevents::MaybeTlsStream>) -> String {
    match tokio::time::timeout(Duration::from_secs(20), client.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.as_str().to_owned(),
        other => panic!("expected a text message: {other:?}"),
    }
}

/// A framing of `OFFSET|PAYLOAD` that calls back into the hub it frames for.
struct Reentrant {
    hub: OnceLock<Hub>,
    calls: AtomicUsize,
}

impl Framing for Reentrant {
    fn frame(&self, topic: &str, publication: &Publication) -> Message {
        if let Some(hub) = self.hub.get() {
            // Reads, a publish to another topic, and (once) one to its own topic: the
            // last is queued behind this delivery and delivered after it, in order.
            let _ = hub.stats();
            let _ = hub.subscriber_count(topic);
            hub.publish("elsewhere", "from a framing");
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                hub.publish(topic, "published by the framing");
            }
        }
        let payload = match &publication.message {
            Message::Text(text) => text.as_str().to_owned(),
            Message::Binary(_) => "binary".to_owned(),
        };
        Message::text(format!("{}|{payload}", publication.position.offset()))
    }
}

/// A backend with no other node that calls back into its hub from every method.
#[derive(Clone, Default)]
struct ReentrantBackend {
    hub: Arc<OnceLock<Hub>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl ReentrantBackend {
    fn reenter(&self, what: String) {
        if let Some(hub) = self.hub.get() {
            let _ = hub.stats();
            let _ = hub.subscriber_count("t");
            let _ = hub.backend_status();
        }
        self.calls.lock().unwrap().push(what);
    }
}

impl Backend for ReentrantBackend {
    fn start(&self, _: Inbound) {}
    fn subscribe(&self, topic: &str) {
        self.reenter(format!("subscribe {topic}"));
        if let Some(hub) = self.hub.get() {
            // A publish from inside the backend, to the topic being subscribed.
            hub.publish(topic, "from the backend");
        }
    }
    fn unsubscribe(&self, topic: &str) {
        self.reenter(format!("unsubscribe {topic}"));
    }
    fn publish(&self, topic: &str, _: &Message) {
        self.reenter(format!("publish {topic}"));
    }
    fn status(&self) -> BackendStatus {
        BackendStatus::InProcess
    }
}

#[test]
fn a_framing_a_backend_and_an_answer_may_call_back_into_the_hub() {
    within_deadline("re-entry", || async {
        let backend = ReentrantBackend::default();
        let hub = Hub::builder()
            .history(History::default())
            .backend(backend.clone())
            .build();
        let _ = backend.hub.set(hub.clone());
        let framing = Arc::new(Reentrant {
            hub: OnceLock::new(),
            calls: AtomicUsize::new(0),
        });
        let _ = framing.hub.set(hub.clone());

        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let (mut client, ws) = pair(&server, &url).await;
        let answered = {
            let hub = hub.clone();
            let ws = ws.clone();
            move |s: &Subscribed| {
                // The answer is made with no hub lock held.
                assert_eq!(hub.topics(&ws), ["t"]);
                assert_eq!(hub.subscriber_count("t"), 1);
                hub.publish("elsewhere", "from an answer");
                Message::text(format!("subscribed {} {}", s.topic, s.position.offset()))
            }
        };
        let subscribed = hub
            .subscribe_from(&ws, "t", None, framing.clone(), answered)
            .await
            .unwrap();
        assert!(!subscribed.recovered);
        assert_eq!(subscribed.position.offset(), 0);
        assert_eq!(next_text(&mut client).await, "subscribed t 0");
        // The backend's subscribe published on t while the subscription was held
        // (offset 1); framing it published once more on t (offset 2, queued behind
        // it); then this publish (offset 3). Each once, in order.
        let at = hub.publish_confirmed("t", "first", None).await.unwrap();
        assert_eq!(at.offset(), 3);
        let mut received = Vec::new();
        while received.len() < 3 {
            received.push(next_text(&mut client).await);
        }
        assert_eq!(
            received,
            [
                "1|from the backend",
                "2|published by the framing",
                "3|first"
            ]
        );
        assert!(hub.unsubscribe(&ws, "t"));
        let calls = backend.calls.lock().unwrap().clone();
        assert!(calls.contains(&"subscribe t".to_owned()), "{calls:?}");
        assert!(calls.contains(&"unsubscribe t".to_owned()), "{calls:?}");
    });
}

/// Topic "a"'s framing waits until a publish to topic "b" has been delivered on
/// another thread: with one lock for every topic, that publish would wait for the
/// framing, and the framing for it.
#[test]
fn a_publish_to_another_topic_goes_on_while_a_framing_runs() {
    within_deadline("parallel topics", || async {
        struct Waiting {
            started: Mutex<Option<mpsc::Sender<()>>>,
            go_on: Mutex<mpsc::Receiver<usize>>,
            other_delivered: AtomicBool,
        }
        impl Framing for Waiting {
            fn frame(&self, _: &str, publication: &Publication) -> Message {
                if let Some(started) = self.started.lock().unwrap().take() {
                    let _ = started.send(());
                    let other = self
                        .go_on
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(20));
                    self.other_delivered.store(other == Ok(1), Ordering::SeqCst);
                }
                Message::text(publication.position.to_string())
            }
        }
        let hub = Hub::builder().history(History::default()).build();
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let (mut a_client, a) = pair(&server, &url).await;
        let (mut b_client, b) = pair(&server, &url).await;
        let (started_tx, started) = mpsc::channel();
        let (go_on, go_on_rx) = mpsc::channel();
        let framing = Arc::new(Waiting {
            started: Mutex::new(Some(started_tx)),
            go_on: Mutex::new(go_on_rx),
            other_delivered: AtomicBool::new(false),
        });
        hub.subscribe_from(&a, "a", None, framing.clone(), |_| Message::text("a ok"))
            .await
            .unwrap();
        assert_eq!(next_text(&mut a_client).await, "a ok");
        hub.subscribe(&b, "b").unwrap();

        let publisher = std::thread::spawn({
            let hub = hub.clone();
            move || hub.publish("a", "waits in its framing")
        });
        started.recv_timeout(Duration::from_secs(20)).unwrap();
        // Here, on this thread, while "a" is being framed on the other one.
        let queued = hub.publish("b", "not held up");
        go_on.send(queued).unwrap();
        assert_eq!(publisher.join().unwrap(), 1);
        assert!(framing.other_delivered.load(Ordering::SeqCst));
        assert_eq!(next_text(&mut b_client).await, "not held up");
        assert!(next_text(&mut a_client).await.ends_with(":1"));
    });
}

/// Four threads publish to one topic at once: one order of positions, contiguous, and
/// the subscriber receives them in it, each once; each thread's own in its order.
#[test]
fn threads_publishing_to_one_topic_give_one_contiguous_order() {
    within_deadline("one topic, four threads", || async {
        const THREADS: usize = 4;
        const EACH: usize = 500;
        struct Plain;
        impl Framing for Plain {
            fn frame(&self, _: &str, publication: &Publication) -> Message {
                let Message::Text(text) = &publication.message else {
                    unreachable!("text only")
                };
                Message::text(format!(
                    "{}|{}",
                    publication.position.offset(),
                    text.as_str()
                ))
            }
        }
        let hub = Hub::builder().history(History::default()).build();
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let (mut client, ws) = pair(&server, &url).await;
        hub.subscribe_from(&ws, "t", None, Arc::new(Plain), |_| Message::text("ok"))
            .await
            .unwrap();
        assert_eq!(next_text(&mut client).await, "ok");
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let hub = hub.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        hub.publish("t", format!("{t}:{i}"));
                    }
                })
            })
            .collect();
        let mut next_of = [0usize; THREADS];
        for expected in 1..=(THREADS * EACH) as u64 {
            let text = next_text(&mut client).await;
            let (offset, payload) = text.split_once('|').unwrap();
            assert_eq!(offset.parse::<u64>().unwrap(), expected, "{text}");
            let (t, i) = payload.split_once(':').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next_of[t], "thread {t}'s publications out of order");
            next_of[t] += 1;
        }
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(hub.stats().delivered, (THREADS * EACH) as u64);
    });
}
