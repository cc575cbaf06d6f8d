//! `wsevents connect` through real proxies (`--proxy`, the proxy variables,
//! `--no-proxy`) and with a client certificate (`--cert`, `--key`), and `wsevents serve
//! --client-ca`, which requires one. The proxies are Debian's tinyproxy and microsocks
//! (installed by `scripts/proxies`), started on free loopback ports and stopped by PID.

#![allow(clippy::unwrap_used)]

#[path = "../../wsevents/tests/support/proxies.rs"]
mod proxies;
mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use proxies::{Pki, echo_server, microsocks, tinyproxy};

use support::{BIN, Serve};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `wsevents ARGS` with `input` on stdin and the environment changed by `env`
/// (`None` removes the variable), off the runtime's threads.
async fn run(args: &[&str], input: &str, env: &[(&str, Option<&str>)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let input = input.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("wsevents runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// The plain transcript of one text echoed and a clean close.
fn echoed(line: &str) -> String {
    format!("open\n{line}\nclose 1000  true\n")
}

/// Without the proxy variables (the project's `.cargo/config.toml` sets a loopback
/// NO_PROXY for test processes; these tests choose their own).
const NO_PROXY_VARS: [(&str, Option<&str>); 8] = [
    ("NO_PROXY", None),
    ("no_proxy", None),
    ("HTTP_PROXY", None),
    ("http_proxy", None),
    ("HTTPS_PROXY", None),
    ("https_proxy", None),
    ("ALL_PROXY", None),
    ("all_proxy", None),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_proxy_goes_through_http_connect_and_socks5() {
    let echo = echo_server(None).await;
    let url = format!("ws://127.0.0.1:{echo}/");
    let http = tinyproxy(&[echo], None);
    let socks = microsocks(Some(("user", "secret")));

    let proxy = format!("http://127.0.0.1:{}", http.port);
    let out = run(
        &["connect", &url, "--proxy", &proxy],
        "via connect\n",
        &NO_PROXY_VARS,
    )
    .await;
    assert_eq!(
        text(&out.stdout),
        echoed("via connect"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        http.log().contains(&format!("127.0.0.1:{echo}")) || http.log().contains(&echo.to_string()),
        "tinyproxy did not carry the connection: {}",
        http.log()
    );

    let proxy = format!("socks5h://user:secret@127.0.0.1:{}", socks.port);
    let out = run(
        &["connect", &url, "--proxy", &proxy],
        "via socks\n",
        &NO_PROXY_VARS,
    )
    .await;
    assert_eq!(
        text(&out.stdout),
        echoed("via socks"),
        "{}",
        text(&out.stderr)
    );

    // Wrong credentials: the proxy hop fails, the error says so; exit 1.
    let proxy = format!("socks5h://user:wrong@127.0.0.1:{}", socks.port);
    let out = run(&["connect", &url, "--proxy", &proxy], "", &NO_PROXY_VARS).await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("error ")
            && stdout.contains("proxy")
            && stdout.ends_with("close 1006  false\n"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1));

    // A bad proxy URL is a usage error naming the flag.
    let out = run(
        &["connect", &url, "--proxy", "ftp://127.0.0.1:1"],
        "",
        &NO_PROXY_VARS,
    )
    .await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("--proxy"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_takes_the_proxy_from_the_environment_unless_no_proxy() {
    let echo = echo_server(None).await;
    let url = format!("ws://127.0.0.1:{echo}/");
    let http = tinyproxy(&[echo], None);
    let proxy = format!("http://127.0.0.1:{}", http.port);
    let mut env = NO_PROXY_VARS.to_vec();
    env.push(("HTTP_PROXY", Some(&proxy)));

    let out = run(&["connect", &url], "from the environment\n", &env).await;
    assert_eq!(
        text(&out.stdout),
        echoed("from the environment"),
        "{}",
        text(&out.stderr)
    );
    let carried = http.log();
    assert!(
        carried.contains(&echo.to_string()),
        "tinyproxy did not carry it: {carried}"
    );

    // --no-proxy: straight to the server, even with the variable pointing nowhere.
    let dead = format!("http://127.0.0.1:{}", proxies::free_port());
    let mut env = NO_PROXY_VARS.to_vec();
    env.push(("HTTP_PROXY", Some(&dead)));
    let out = run(&["connect", &url, "--no-proxy"], "direct\n", &env).await;
    assert_eq!(text(&out.stdout), echoed("direct"), "{}", text(&out.stderr));
    // Without it, the dead proxy is tried and its hop named.
    let out = run(&["connect", &url], "", &env).await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("error ") && stdout.contains("proxy"),
        "{stdout}"
    );
}

/// PEM files in a fresh directory; their paths.
fn write_files(files: &[(&str, &str)]) -> (std::path::PathBuf, Vec<String>) {
    let dir = std::env::temp_dir().join(format!(
        "wsevents-cli-mtls-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let paths = files
        .iter()
        .map(|(name, pem)| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path.display().to_string()
        })
        .collect();
    (dir, paths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_client_ca_requires_the_certificate_connect_cert_presents() {
    let pki = Pki::new();
    let (client_cert, client_key) = pki.sign(vec!["client".into()]);
    let other = Pki::new();
    let (stranger_cert, stranger_key) = other.sign(vec!["stranger".into()]);
    let (dir, paths) = write_files(&[
        ("ca.pem", &pki.ca_pem),
        ("cert.pem", &pki.cert_pem),
        ("key.pem", &pki.key_pem),
        ("client.pem", &client_cert),
        ("client.key", &client_key),
        ("stranger.pem", &stranger_cert),
        ("stranger.key", &stranger_key),
    ]);
    let [ca, cert, key, client, client_key, stranger, stranger_key] = &paths[..] else {
        unreachable!()
    };
    let serve = Serve::start(&["--tls-cert", cert, "--tls-key", key, "--client-ca", ca]);
    let url = format!("wss://{}/ws", serve.addr);

    let args = [
        "connect", &url, "--ca", ca, "--cert", client, "--key", client_key,
    ];
    let out = run(&args, "mutual\n", &NO_PROXY_VARS).await;
    assert_eq!(text(&out.stdout), echoed("mutual"), "{}", text(&out.stderr));

    // No certificate, or one from another CA: the TLS handshake fails.
    for args in [
        &["connect", &url, "--ca", ca][..],
        &[
            "connect",
            &url,
            "--ca",
            ca,
            "--cert",
            stranger,
            "--key",
            stranger_key,
        ][..],
    ] {
        let out = run(args, "", &NO_PROXY_VARS).await;
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with("error ") && stdout.ends_with("close 1006  false\n"),
            "{args:?}: {stdout}"
        );
        assert_eq!(out.status.code(), Some(1));
    }

    // --cert needs --key, --client-ca needs --tls-cert: usage errors.
    let out = run(&["connect", &url, "--cert", client], "", &NO_PROXY_VARS).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["serve", "--client-ca", ca], "", &NO_PROXY_VARS).await;
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}
