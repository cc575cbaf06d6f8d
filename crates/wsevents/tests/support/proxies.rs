//! Real proxies for the tests: Debian's tinyproxy (HTTP CONNECT) and microsocks
//! (SOCKS5), each started on a free 127.0.0.1 port and stopped by PID when its guard
//! drops; a TLS front for tinyproxy (an `https://` proxy); echo servers; a test CA.
//!
//! The binaries are installed by `scripts/proxies` (run by `scripts/test`); without them
//! the tests fail and say so.
#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use wsevents::{Acceptor, Server};

/// A proxy process, killed and waited for on drop.
pub struct Daemon {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    name: &'static str,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Daemon {
    /// What the proxy wrote so far (its log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// The path of a proxy binary, or a failure that says how to get it.
fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run scripts/proxies (it installs Debian's \
                 tinyproxy and microsocks; scripts/test runs it)"
            )
        })
}

/// A fresh directory for one proxy's files.
fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wsevents-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `program` and wait until it accepts on `port`.
fn spawn(name: &'static str, dir: PathBuf, port: u16, command: &mut Command) -> Daemon {
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let mut daemon = Daemon {
        child,
        port,
        dir,
        name,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if StdTcpStream::connect(daemon.addr()).is_ok() {
            return daemon;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("{name} exited with {status}: {}", daemon.log());
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {}: {}",
            daemon.port,
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// tinyproxy on a free port, allowing CONNECT to `ports` only, with basic auth when
/// `auth` is given.
pub fn tinyproxy(ports: &[u16], auth: Option<(&str, &str)>) -> Daemon {
    let program = binary("tinyproxy");
    let dir = scratch_dir("tinyproxy");
    let port = free_port();
    let mut conf = format!(
        "Listen 127.0.0.1\nPort {port}\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\n\
         LogLevel Connect\n"
    );
    for p in ports {
        conf.push_str(&format!("ConnectPort {p}\n"));
    }
    if let Some((user, password)) = auth {
        conf.push_str(&format!("BasicAuth {user} {password}\n"));
    }
    let conf_path = dir.join("tinyproxy.conf");
    std::fs::write(&conf_path, conf).unwrap();
    spawn(
        "tinyproxy",
        dir,
        port,
        Command::new(program).arg("-d").arg("-c").arg(&conf_path),
    )
}

/// microsocks on a free port, with user/password auth when `auth` is given.
pub fn microsocks(auth: Option<(&str, &str)>) -> Daemon {
    let program = binary("microsocks");
    let dir = scratch_dir("microsocks");
    let port = free_port();
    let mut command = Command::new(program);
    command.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((user, password)) = auth {
        command.args(["-u", user, "-P", password]);
    }
    spawn("microsocks", dir, port, &mut command)
}

/// A test CA and a certificate it signed for `localhost` and `127.0.0.1`.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let (cert_pem, key_pem) = sign(&issuer, vec!["localhost".into(), "127.0.0.1".into()]);
        Pki {
            ca_pem: ca.pem(),
            cert_pem,
            key_pem,
            issuer,
        }
    }

    /// Another certificate from this CA (PEM chain, PEM key).
    pub fn sign(&self, names: Vec<String>) -> (String, String) {
        sign(&self.issuer, names)
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        wsevents::tls::client_config_with_ca(self.ca_pem.as_bytes()).unwrap()
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        wsevents::tls::server_config_from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
            .unwrap()
    }
}

fn sign(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, names: Vec<String>) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// An echo server on 127.0.0.1 (TLS with `tls`); returns its port.
pub async fn echo_server(tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
    let mut builder = Server::builder(Acceptor::new());
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().port();
    tokio::spawn(async move {
        while let Some((mut ws, _)) = server.accept_stream().await {
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A TLS front for the proxy at `backend` (what stunnel does): TLS from clients, the
/// bytes inside passed to the proxy unchanged. Returns its port.
pub async fn tls_front(backend: SocketAddr, tls: Arc<rustls::ServerConfig>) -> u16 {
    tls_front_recording(backend, tls).await.0
}

/// [`tls_front`], recording for each client whether it presented a certificate.
pub async fn tls_front_recording(
    backend: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
) -> (u16, Arc<std::sync::Mutex<Vec<bool>>>) {
    let presented = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = presented.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let certificate = tls.get_ref().1.peer_certificates().is_some();
                record.lock().unwrap().push(certificate);
                let Ok(mut proxy) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut proxy).await;
            });
        }
    });
    (port, presented)
}

/// Send a text over `ws` and expect it back.
pub async fn echo<S>(ws: &mut wsevents::WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(wsevents::Message::text(text.to_owned()))
        .await
        .unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no echo within 10 s")
        .expect("the stream ended")
        .unwrap();
    assert_eq!(back, wsevents::Message::text(text.to_owned()));
}
