//! `wsevents serve --config FILE`, end to end: the example file in docs/ starts a
//! server, a file's settings take effect and the command line overrides them, and a
//! bad file stops `serve` with its line and column and exit code 2.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

mod support;

use support::{BIN, Serve};

/// A file of the test's own, removed on drop.
struct File(std::path::PathBuf);

impl File {
    fn new(name: &str, text: &str) -> File {
        let path = std::env::temp_dir().join(format!("wsevents-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        File(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `GET path` with `key`; the status and the body.
fn get(addr: &str, path: &str, key: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn the_example_file_starts_serve() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/wsevents.example.toml"
    );
    // Its listen address is overridden by the command line's (port 0).
    let serve = Serve::start(&["--config", example]);
    assert!(serve.addr.starts_with("127.0.0.1:"), "{}", serve.addr);
    assert_eq!(get(&serve.addr, "/healthz", "").0, 200);
}

#[test]
fn the_file_sets_and_the_command_line_overrides() {
    let keys = File::new("config-keys", "config-test-key-0123456789\n");
    let config = File::new(
        "config.toml",
        &format!(
            "listen = \"127.0.0.1:1\"\napi-key-file = \"{}\"\nmax-publication = 10\n",
            keys.path()
        ),
    );
    let serve = Serve::start(&["--config", config.path(), "--max-publication", "20"]);
    // The file's key file is the API's; the command line's limit is the one.
    let (status, body) = get(&serve.addr, "/api/info", "config-test-key-0123456789");
    assert_eq!(status, 200, "{body}");
    let publish = |data: &str| {
        let body = format!(r#"{{"topic":"t","data":"{data}"}}"#);
        let mut stream = TcpStream::connect(&serve.addr).unwrap();
        write!(
            stream,
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer config-test-key-0123456789\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer.split(' ').nth(1).unwrap().parse::<u16>().unwrap()
    };
    assert_eq!(publish(&"x".repeat(20)), 200);
    assert_eq!(publish(&"x".repeat(21)), 413);
}

#[test]
fn a_bad_file_stops_serve_with_where_and_exit_code_2() {
    for (text, expected) in [
        (
            "listen = \"127.0.0.1:0\"\nmax-conections = 5\n",
            ":2:1: unknown key `max-conections`",
        ),
        ("listen = [\n", ":1:"),
        (
            "max-connections = 0\n",
            ":1:19: max-connections: invalid value '0'",
        ),
        ("echo = 1\n", ":1:8: echo: true or false, not an integer"),
    ] {
        let config = File::new("bad.toml", text);
        let output = Command::new(BIN)
            .args(["serve", "--config", config.path()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("wsevents: error: {}{expected}", config.path())),
            "{text:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // A file that is not there.
    let output = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/wsevents.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    // A bad command line with a good file is clap's usage error, exit 2 as always.
    let config = File::new("good.toml", "listen = \"127.0.0.1:0\"\n");
    let output = Command::new(BIN)
        .args(["serve", "--config", config.path(), "--no-such-flag"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}
