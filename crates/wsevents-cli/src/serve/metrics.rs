//! `serve --metrics ADDR`: the library's metrics (`wsevents::metrics`: connections,
//! refused and failed handshakes, messages, bytes, close codes) in Prometheus' text
//! format, on a port of their own, from `metrics-exporter-prometheus`'s HTTP listener.
//! Any path answers (`/metrics` is the usual one to scrape).

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

/// Install the Prometheus recorder and start its listener on `addr` (on the current
/// tokio runtime). Call it before the server accepts anything: the library takes its
/// metric handles on the first connection.
pub(crate) fn install(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    wsevents::metrics::describe();
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    Ok(())
}
