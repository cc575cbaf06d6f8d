//! The `metrics` feature on connections upgraded by another HTTP server (axum, on
//! hyper): they count as open from the upgrade, their messages and close codes count,
//! and the refusals the shared negotiation answers count by status. One test: the
//! recorder is process-wide.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Response;
use axum::routing::any;
use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use wsevents::axum::WebSocketUpgrade;
use wsevents::{Acceptor, CloseCode, Message};

/// `/echo`: the stream API, echoing; only for clients that send no `Origin` (else 403).
async fn echo(ws: WebSocketUpgrade) -> Response {
    ws.acceptor(Acceptor::new().allow_origin(|origin| origin.is_none()))
        .await
        .on_upgrade_stream(|mut ws| async move {
            while let Some(Ok(message)) = ws.next().await {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        })
}

/// The series `name{labels}` (labels in the order the library registers them).
fn value(handle: &PrometheusHandle, series: &str) -> Option<f64> {
    handle.render().lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

async fn until(handle: &PrometheusHandle, series: &str, wanted: f64) {
    let start = Instant::now();
    while value(handle, series) != Some(wanted) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{series} never reached {wanted}:\n{}",
            handle.render()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn connections_upgraded_by_axum_count_like_the_servers_own() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/echo", any(echo));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let url = format!("ws://{addr}/echo");

    let mut ws = wsevents::connect(&url).await.unwrap();
    for i in 0..3 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }
    until(&handle, r#"wsevents_connections_open{role="server"}"#, 1.0).await;
    // An origin the acceptor refuses: 403, from the negotiation axum's handler ran.
    let refused = wsevents::ClientBuilder::new(&url)
        .unwrap()
        .origin("https://elsewhere.example")
        .connect()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    ws.close(CloseCode::from(4001), "done").await.unwrap();

    until(&handle, r#"wsevents_connections_open{role="server"}"#, 0.0).await;
    let series = [
        (r#"wsevents_connections_total{role="server"}"#, 1.0),
        (r#"wsevents_messages_received_total{role="server"}"#, 3.0),
        (r#"wsevents_messages_sent_total{role="server"}"#, 3.0),
        (r#"wsevents_handshakes_refused_total{status="403"}"#, 1.0),
        (
            r#"wsevents_close_codes_total{role="server",code="4001",initiator="remote"}"#,
            1.0,
        ),
    ];
    for (name, wanted) in series {
        until(&handle, name, wanted).await;
    }
    // After the upgrade, the driver sees only frames: wire bytes, both ways.
    assert!(value(&handle, r#"wsevents_bytes_received_total{role="server"}"#).unwrap() > 0.0);
    assert!(value(&handle, r#"wsevents_bytes_sent_total{role="server"}"#).unwrap() > 0.0);
}
