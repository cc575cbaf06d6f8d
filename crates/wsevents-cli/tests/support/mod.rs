//! What the CLI's test files share: the binary, and a `wsevents serve` child on a free
//! 127.0.0.1 port that is killed when its guard drops. Each test file adds what only it
//! needs (signals, descriptor counts) in an `impl Serve` block of its own.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `wsevents` binary cargo built for these tests.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_wsevents");

/// A `wsevents serve` child; killed on drop.
pub(crate) struct Serve {
    pub(crate) child: Child,
    /// `127.0.0.1:PORT`, from its banner.
    pub(crate) addr: String,
    /// Standard output after the banner's first line, as it comes.
    stdout: Arc<Mutex<String>>,
    /// Standard error (its log), as it comes.
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    /// `wsevents serve --listen 127.0.0.1:0 ARGS`.
    pub(crate) fn start(args: &[&str]) -> Serve {
        Serve::spawn(Command::new(BIN), args)
    }

    /// `command serve --listen 127.0.0.1:0 ARGS` (`command` runs the binary, perhaps
    /// through a wrapper such as `prlimit`, or with a piped stdin for `--stdin`).
    pub(crate) fn spawn(mut command: Command, args: &[&str]) -> Serve {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = drain(BufReader::new(child.stderr.take().unwrap()));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let addr = first
            .trim()
            .strip_prefix("wsevents serve: listening on ")
            .unwrap_or_else(|| panic!("serve {args:?} did not start: {first:?}"))
            .to_owned();
        Serve {
            child,
            addr,
            stdout: drain(stdout),
            stderr,
        }
    }

    /// What the child printed after the banner's first line, once it exited.
    pub(crate) fn output(&self) -> String {
        // The reader thread may be a moment behind the exit.
        std::thread::sleep(Duration::from_millis(100));
        self.stdout.lock().unwrap().clone()
    }

    /// What the child logged so far (its standard error).
    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `ws://ADDR` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

/// Keep reading `from` on a thread of its own, so the child never blocks on a full
/// pipe; what it read so far is in the returned buffer.
fn drain(mut from: impl BufRead + Send + 'static) -> Arc<Mutex<String>> {
    let output = Arc::new(Mutex::new(String::new()));
    let collected = output.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while from.read_line(&mut line).is_ok_and(|n| n > 0) {
            collected.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    output
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The library's `redis-server` guard (a free loopback port, no persistence, killed
/// by PID), shared rather than written twice.
#[path = "../../../wsevents/tests/support/redis.rs"]
mod redis_server;
#[allow(unused_imports)]
pub(crate) use redis_server::RedisServer as Redis;
