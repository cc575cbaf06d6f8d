//! A `redis-server` of the test's own on a free loopback port (`scripts/redis
//! install` puts it on the machine), without persistence, killed by PID.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` of the test's own, stopped by PID when dropped.
pub(crate) struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    pub(crate) fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        RedisServer {
            port,
            child: spawn(port),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill it (SIGKILL: no goodbye to the clients) and wait until it is gone.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop it in its tracks (SIGSTOP): connections stay open, nothing is answered,
    /// until [`resume`](Self::resume).
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Let a paused server go on (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Start it again on the same port.
    pub(crate) fn restart(&mut self) {
        self.child = spawn(self.port);
    }

    pub(crate) async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        for _ in 0..500 {
            if let Ok(conn) = client.get_multiplexed_async_connection().await {
                return conn;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server on port {} never answered", self.port);
    }

    /// `PUBSUB CHANNELS`, sorted.
    pub(crate) async fn channels(&self) -> Vec<String> {
        let mut conn = self.connection().await;
        let mut channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query_async(&mut conn)
            .await
            .unwrap();
        channels.sort();
        channels
    }

    /// `PUBSUB NUMSUB channel`.
    pub(crate) async fn numsub(&self, channel: &str) -> u64 {
        let mut conn = self.connection().await;
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .unwrap();
        n
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(port: u16) -> Child {
    let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    Command::new(&binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary} ({e}): run scripts/redis install"))
}
