//! A wsevents.v1 peer for tests: the protocol by hand over the stream API, so a test
//! sees exactly what the server sent, in order (no client-side repair of gaps).
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use wsevents::hub::Position;
use wsevents::pubsub::PubsubServer;
use wsevents::pubsub::wire::{PROTOCOL, Reply, Request};
use wsevents::{
    Acceptor, ClientBuilder, MaybeTlsStream, Message, Server, ServerBuilder, WebSocketStream,
};

/// A server on 127.0.0.1 that speaks wsevents.v1 with `pubsub` to clients that offer
/// it, and subscribes the others to the topic "plain" as bare hub subscribers (what
/// serve's `/topic/NAME` is); its `/pubsub` URL.
pub(crate) async fn serve(pubsub: PubsubServer) -> String {
    serve_with(
        Server::builder(Acceptor::new().protocols(&[PROTOCOL])),
        pubsub,
    )
    .await
}

/// [`serve`] with a server of `builder`'s (whose acceptor offers wsevents.v1).
pub(crate) async fn serve_with(builder: ServerBuilder, pubsub: PubsubServer) -> String {
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/pubsub", server.local_addr());
    tokio::spawn(async move {
        while let Some(ws) = server.accept().await {
            if ws.protocol() == PROTOCOL {
                pubsub.serve(&ws);
            } else {
                let _ = pubsub.hub().subscribe(&ws, "plain");
            }
            tokio::spawn(async move { ws.run().await });
        }
    });
    url
}

pub(crate) struct Peer {
    pub(crate) ws: WebSocketStream<MaybeTlsStream>,
    next_id: u64,
}

impl Peer {
    /// Connect to a `/pubsub`-like URL, offering wsevents.v1.
    pub(crate) async fn connect(url: &str) -> Peer {
        Peer::connect_with(ClientBuilder::new(url).unwrap()).await
    }

    /// Connect with `builder`'s options, offering wsevents.v1.
    pub(crate) async fn connect_with(builder: ClientBuilder) -> Peer {
        let ws = builder
            .protocols(&[PROTOCOL])
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.protocol(), Some(PROTOCOL));
        Peer { ws, next_id: 1 }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    pub(crate) async fn send(&mut self, request: &Request) {
        self.ws
            .send(Message::text(request.to_json()))
            .await
            .unwrap();
    }

    pub(crate) async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    /// The next frame, parsed; `None` when the connection ended.
    pub(crate) async fn next(&mut self) -> Option<Reply> {
        let next = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
            .await
            .expect("no frame within 20 s");
        match next {
            Some(Ok(Message::Text(text))) => Some(Reply::parse(text.as_str()).unwrap()),
            Some(Ok(other)) => panic!("not a text frame: {other:?}"),
            Some(Err(_)) | None => None,
        }
    }

    pub(crate) async fn reply(&mut self) -> Reply {
        self.next().await.expect("the connection ended")
    }

    /// Subscribe and return the answer's (recovered, position).
    pub(crate) async fn subscribe(
        &mut self,
        topic: &str,
        since: Option<Position>,
    ) -> (bool, Position) {
        let id = self.id();
        self.send(&Request::Subscribe {
            id,
            topic: topic.into(),
            since,
        })
        .await;
        match self.reply().await {
            Reply::Subscribed {
                id: got,
                recovered,
                position,
                ..
            } if got == id => (recovered, position),
            other => panic!("not the answer to subscribe {id}: {other:?}"),
        }
    }

    /// Publish and return the position (the answer must come next).
    pub(crate) async fn publish(&mut self, topic: &str, text: &str, key: Option<&str>) -> Position {
        let id = self.publish_later(topic, text, key).await;
        match self.reply().await {
            Reply::Published {
                id: got, position, ..
            } if got == id => position,
            other => panic!("not the answer to publish {id}: {other:?}"),
        }
    }

    /// Send a publish without waiting for its answer; its id.
    pub(crate) async fn publish_later(
        &mut self,
        topic: &str,
        text: &str,
        key: Option<&str>,
    ) -> u64 {
        let id = self.id();
        self.send(&Request::Publish {
            id,
            topic: topic.into(),
            data: Message::text(text.to_owned()),
            key: key.map(Into::into),
        })
        .await;
        id
    }

    /// Publish `data` and return the answer (which must come next).
    pub(crate) async fn publish_data(&mut self, topic: &str, data: Message) -> Reply {
        let id = self.id();
        self.send(&Request::Publish {
            id,
            topic: topic.into(),
            data,
            key: None,
        })
        .await;
        let reply = self.reply().await;
        match &reply {
            Reply::Published { id: got, .. } | Reply::Error { id: Some(got), .. } if *got == id => {
            }
            other => panic!("not the answer to publish {id}: {other:?}"),
        }
        reply
    }

    /// The next `n` publications: (position, text).
    pub(crate) async fn pubs(&mut self, n: usize) -> Vec<(Position, String)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.reply().await {
                Reply::Pub { publication, .. } => {
                    let text = match publication.message {
                        Message::Text(t) => t.as_str().to_owned(),
                        Message::Binary(b) => format!("{b:?}"),
                    };
                    out.push((publication.position, text));
                }
                other => panic!("after {} publications: {other:?}", out.len()),
            }
        }
        out
    }

    /// Read frames until none comes for `quiet`.
    pub(crate) async fn drain(&mut self, quiet: Duration) {
        while let Ok(Some(_)) = tokio::time::timeout(quiet, self.ws.next()).await {}
    }

    pub(crate) async fn nothing_for(&mut self, wait: Duration) {
        if let Ok(Some(frame)) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("expected nothing, got {frame:?}");
        }
    }
}

/// Offsets of publications.
pub(crate) fn offsets(pubs: &[(Position, String)]) -> Vec<u64> {
    pubs.iter().map(|(p, _)| p.offset()).collect()
}
