//! A server with routes: a handler per path, a path parameter, a fallback, and a
//! route with a policy of its own, on the library's `Server`.
//!
//! ```text
//! cargo run -p wsevents --example routed_server              # serve ws://127.0.0.1:9200/
//! cargo run -p wsevents --example routed_server -- --check   # serve on a free port, try every route, exit
//! ```
//!
//! - `/echo`: every message back;
//! - `/topic/{name}`: a room on the hub per name (read from the connection with
//!   `ws.param("name")`, matched and percent-decoded once, in the handshake); what a
//!   member says goes to every member;
//! - `/admin`: its own acceptor, whose accept hook wants a token (else 401);
//! - anything else: the fallback, which says where to go and closes with 4404.
//!
//! Each connection runs its route's handler in its own task, counted under the
//! server's connection cap, and closes with 1001 when the server shuts down.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use wsevents::hub::Hub;
use wsevents::{Accept, Acceptor, ClientBuilder, CloseCode, Message, Server, WebSocket};

async fn echo(ws: WebSocket) {
    let echo = ws.clone();
    ws.on_message(move |e| {
        let _ = echo.send(&e.data);
    });
    ws.run().await;
}

async fn topic(ws: WebSocket, hub: Hub) {
    let name = ws.param("name").unwrap_or_default().to_owned();
    if hub.subscribe(&ws, &name).is_err() {
        return;
    }
    ws.on_message(move |e| {
        hub.publish(&name, &e.data);
    });
    ws.run().await;
}

async fn admin(ws: WebSocket) {
    let _ = ws.send("welcome, admin");
    ws.run().await;
}

async fn elsewhere(ws: WebSocket) {
    let path = ws.path().unwrap_or_default().to_owned();
    let _ = ws.send(format!("nothing at {path}: try /echo or /topic/NAME"));
    let _ = ws.close_with(4404, "no such endpoint");
    ws.run().await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let check = std::env::args().any(|a| a == "--check");
    let hub = Hub::new();
    let admins = Acceptor::new().on_request(|request| async move {
        match request.header("authorization") {
            Some("Bearer let-me-in") => Ok(Accept::new()),
            _ => Err(http::Response::builder()
                .status(http::StatusCode::UNAUTHORIZED)
                .header(http::header::WWW_AUTHENTICATE, "Bearer")
                .body("a token, please\n".to_owned())
                .expect("a valid response")),
        }
    });
    let server = Server::route("/echo", echo)
        .route("/topic/{name}", move |ws| topic(ws, hub.clone()))
        .route_with("/admin", admins, admin)
        .fallback(elsewhere)
        .bind(if check {
            "127.0.0.1:0"
        } else {
            "127.0.0.1:9200"
        })
        .await?;
    let addr = server.local_addr();
    println!("routes on ws://{addr}: /echo, /topic/{{name}}, /admin; anything else: the fallback");
    if !check {
        tokio::signal::ctrl_c().await?;
        println!("{}", server.shutdown(Duration::from_secs(5)).await);
        return Ok(());
    }

    let url = |path: &str| format!("ws://{addr}{path}");
    let mut echo = wsevents::connect(&url("/echo")).await?;
    echo.send(Message::text("hello")).await?;
    assert_eq!(next_text(&mut echo).await?, "hello");

    // A member once it has heard its own hello; the earlier members hear it too.
    let mut ann = joined(&url("/topic/caf%C3%A9"), "ann here").await?;
    let mut bob = joined(&url("/topic/caf%C3%A9"), "bob here").await?;
    assert_eq!(next_text(&mut ann).await?, "bob here");

    let refused = wsevents::connect(&url("/admin")).await;
    assert!(refused.is_err(), "no token: 401");
    let mut admin = ClientBuilder::new(&url("/admin"))?
        .header("Authorization", "Bearer let-me-in")
        .connect()
        .await?;
    assert_eq!(next_text(&mut admin).await?, "welcome, admin");

    let mut lost = wsevents::connect(&url("/nowhere")).await?;
    assert_eq!(
        next_text(&mut lost).await?,
        "nothing at /nowhere: try /echo or /topic/NAME"
    );
    while let Some(Ok(_)) = lost.next().await {}
    assert_eq!(lost.closure().map(|c| c.code().as_u16()), Some(4404));

    // The clients read on while the server shuts down, so they answer its 1001.
    let (report, ()) = tokio::join!(server.shutdown(Duration::from_secs(5)), async {
        for ws in [&mut echo, &mut ann, &mut bob, &mut admin] {
            while let Some(Ok(_)) = ws.next().await {}
        }
    });
    for ws in [&echo, &ann, &bob, &admin] {
        assert_eq!(ws.closure().map(|c| c.code()), Some(CloseCode::GOING_AWAY));
    }
    assert_eq!(report.forced, 0, "{report}");
    println!("every route answered; shutdown: {report}");
    Ok(())
}

async fn joined(
    url: &str,
    hello: &str,
) -> Result<wsevents::WebSocketStream<wsevents::MaybeTlsStream>, Box<dyn std::error::Error>> {
    let mut ws = wsevents::connect(url).await?;
    ws.send(Message::text(hello.to_owned())).await?;
    assert_eq!(next_text(&mut ws).await?, hello);
    Ok(ws)
}

async fn next_text(
    ws: &mut wsevents::WebSocketStream<wsevents::MaybeTlsStream>,
) -> Result<String, Box<dyn std::error::Error>> {
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
        Some(Ok(Message::Text(text))) => Ok(text.as_str().to_owned()),
        other => Err(format!("expected a text message, got {other:?}").into()),
    }
}
