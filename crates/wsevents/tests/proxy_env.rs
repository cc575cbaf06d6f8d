//! The builder's default: the proxy from the process environment (ALL_PROXY, NO_PROXY),
//! and `no_proxy()` ignoring it. The only test of this binary, so that changing the
//! process environment races with nothing (cargo's `[env]` gives test processes a
//! NO_PROXY of loopback; this test replaces it).
#![allow(clippy::unwrap_used)]
// Edition 2024: changing the environment is `unsafe`, sound while no other thread reads
// it; see the SAFETY comments.
#![allow(unsafe_code)]

#[path = "support/proxies.rs"]
mod proxies;

use proxies::{echo, echo_server, free_port, tinyproxy};
use wsevents::{ClientBuilder, Error, ProxyError};

fn set(name: &str, value: &str) {
    // SAFETY: this binary has one test, run on one thread with a current-thread
    // runtime; no other thread of this process reads or writes the environment.
    unsafe { std::env::set_var(name, value) }
}

fn unset(name: &str) {
    // SAFETY: as in `set`.
    unsafe { std::env::remove_var(name) }
}

#[test]
fn the_default_proxy_comes_from_the_environment() {
    for name in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "no_proxy",
        "NO_PROXY",
    ] {
        unset(name);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ws_port = echo_server(None).await;
        let proxy = tinyproxy(&[ws_port], None);
        let url = format!("ws://127.0.0.1:{ws_port}/");

        set("ALL_PROXY", &format!("127.0.0.1:{}", proxy.port));
        let mut ws = wsevents::connect(&url).await.unwrap();
        assert_eq!(ws.get_ref().tcp().peer_addr().unwrap(), proxy.addr());
        echo(&mut ws, "through ALL_PROXY").await;

        set("NO_PROXY", "example.com, 127.0.0.1");
        let ws = wsevents::connect(&url).await.unwrap();
        assert_eq!(ws.get_ref().tcp().peer_addr().unwrap().port(), ws_port);
        unset("NO_PROXY");

        set("ALL_PROXY", &format!("http://127.0.0.1:{}", free_port()));
        let failed = wsevents::connect(&url).await;
        assert!(
            matches!(failed, Err(Error::Proxy(ProxyError::Connect { .. }))),
            "{failed:?}"
        );
        let ws = ClientBuilder::new(&url)
            .unwrap()
            .no_proxy()
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.get_ref().tcp().peer_addr().unwrap().port(), ws_port);

        set("ALL_PROXY", "ftp://127.0.0.1:1");
        let bad = wsevents::connect(&url).await;
        assert!(
            matches!(&bad, Err(Error::Syntax(why)) if why.starts_with("ALL_PROXY: ")),
            "{bad:?}"
        );
    });
}
