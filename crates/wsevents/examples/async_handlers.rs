//! A server whose message handler awaits (a lookup in another service, 50 ms) before
//! it answers, with the event API: `on_message_async` under `run`.
//!
//! ```text
//! cargo run -p wsevents --example async_handlers              # serve ws://127.0.0.1:9100/
//! cargo run -p wsevents --example async_handlers -- --check   # serve on a free port, ask five questions at once, check, exit
//! ```
//!
//! What the pattern keeps, which `tokio::spawn` in a sync handler loses:
//! - **order**: the answers come back in the order of the questions; the next message
//!   is handled once the previous handler's work is done;
//! - **liveness**: while a handler awaits, the connection is driven: pings are
//!   answered, keepalive deadlines kept, what other tasks send (the ticker below) goes
//!   out at once, and a client's close is answered;
//! - **backpressure**: at most `max_queue` (16) messages wait for the handler; then
//!   the socket is not read, so a client that asks faster than the answers come is
//!   slowed down by TCP instead of growing the server's memory.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use wsevents::{Acceptor, Message, Server, WebSocket};

/// The other service: 50 ms per question.
async fn lookup(question: &str) -> String {
    tokio::time::sleep(Duration::from_millis(50)).await;
    format!("answer to {question}")
}

/// One connection: answers each question after its lookup, in order; meanwhile a
/// ticker task sends the time every second on a clone of the socket.
async fn serve(ws: WebSocket) {
    let reply = ws.clone();
    ws.on_message_async(move |e| {
        let reply = reply.clone();
        async move {
            let question = e.data.as_text().unwrap_or_default().to_owned();
            let answer = lookup(&question).await;
            // Fails only once the socket is closing or closed: nobody to answer.
            let _ = reply.send(answer);
        }
    });
    ws.on_error(|e| eprintln!("error: {}", e.message()));
    let ticker = ws.clone();
    let ticks = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.tick().await;
        loop {
            interval.tick().await;
            if ticker.send("tick").is_err() {
                break;
            }
        }
    });
    let closed = ws.run().await;
    ticks.abort();
    println!(
        "closed: {} {:?} clean={}",
        closed.code, closed.reason, closed.was_clean
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let check = std::env::args().any(|a| a == "--check");
    let addr = if check {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:9100"
    };
    // At most 8 questions wait per connection before it is no longer read.
    let server = Server::builder(Acceptor::new().max_queue(8))
        .bind(addr)
        .await?;
    let url = format!("ws://{}/", server.local_addr());
    println!("answering questions on {url}");
    let serving = tokio::spawn(async move {
        while let Some(ws) = server.accept().await {
            tokio::spawn(serve(ws));
        }
    });
    if !check {
        serving.await?;
        return Ok(());
    }

    let mut client = wsevents::connect(&url).await?;
    let start = Instant::now();
    for n in 0..5 {
        client.feed(Message::text(format!("q{n}"))).await?;
    }
    client.flush().await?;
    let mut answers = Vec::new();
    while answers.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(10), client.next()).await? {
            Some(Ok(Message::Text(text))) if text.as_str() != "tick" => {
                answers.push(text.as_str().to_owned());
            }
            Some(Ok(_)) => {}
            other => return Err(format!("no answer: {other:?}").into()),
        }
    }
    let took = start.elapsed();
    let expected: Vec<String> = (0..5).map(|n| format!("answer to q{n}")).collect();
    assert_eq!(answers, expected, "in order");
    assert!(
        took >= Duration::from_millis(250),
        "one at a time: {took:?}"
    );
    client.close(wsevents::CloseCode::NORMAL, "thanks").await?;
    println!("five answers, in order, in {took:?} (five lookups of 50 ms one after the other)");
    Ok(())
}
