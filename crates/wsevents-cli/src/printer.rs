//! What `wsevents connect` writes, in one of three styles:
//!
//! - **plain** (stdout not a terminal, no `--prefix`): events as `open`, `close …`; text
//!   messages as they are; binary as `binary HEX`. Sent messages are not repeated. This
//!   is what scripts read, and it stays as it was.
//! - **prefixed** (stdout a terminal, or `--prefix`): every line says what it is, so a
//!   message can never be read as an event: `< ` a text message received, `<b ` a binary
//!   one (hex), `> ` / `>b ` a message sent, `* ` an event. A text message of several
//!   lines continues on lines indented by two spaces (no other line starts with a
//!   space), and control characters other than tab are escaped (`\r`, `\u{1b}`), so a
//!   message cannot draw an event line either (nor can a close reason draw a message
//!   line: events are escaped the same way).
//! - **raw** (`--binary`): stdout carries the payloads received and nothing else, byte
//!   for byte; events go to stderr with their `* `.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use crate::hex;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    Prefixed,
    Raw,
}

/// Writes events and messages in a [`Style`]; shared by the handlers.
pub(crate) struct Printer {
    style: Style,
    /// `--binary-file`: received binary messages are appended here (and the file named).
    binary_file: Mutex<Option<(File, String)>>,
}

impl Printer {
    pub(crate) fn new(style: Style, binary_file: Option<(File, String)>) -> Printer {
        Printer {
            style,
            binary_file: Mutex::new(binary_file),
        }
    }

    /// An event (`open`, `close 1000  true`, `pong hi 0.2ms`). Its text may come from
    /// the peer (a close reason, an error), so when prefixed it is escaped like a
    /// message: a reason cannot draw a line of its own.
    pub(crate) fn event(&self, line: &str) {
        match self.style {
            Style::Plain => say(line),
            Style::Prefixed => say(&prefixed("* ", line)),
            Style::Raw => eprintln!("{}", prefixed("* ", line)),
        }
    }

    /// A text message received.
    pub(crate) fn received_text(&self, text: &str) {
        match self.style {
            Style::Plain => say(text),
            Style::Prefixed => say(&prefixed("< ", text)),
            Style::Raw => raw(text.as_bytes()),
        }
    }

    /// A binary message received.
    pub(crate) fn received_binary(&self, bytes: &[u8]) {
        if self.style == Style::Raw {
            return raw(bytes);
        }
        let mut file = self.binary_file.lock().unwrap_or_else(|e| e.into_inner());
        let shown = match file.as_mut() {
            None => hex::encode(bytes),
            Some((file, name)) => match file.write_all(bytes) {
                Ok(()) => format!("{} bytes to {name}", bytes.len()),
                Err(error) => {
                    eprintln!("wsevents: cannot write to {name}: {error}");
                    return;
                }
            },
        };
        match self.style {
            Style::Prefixed => say(&format!("<b {shown}")),
            _ => say(&format!("binary {shown}")),
        }
    }

    /// A text message sent (shown only when prefixed).
    pub(crate) fn sent_text(&self, text: &str) {
        if self.style == Style::Prefixed {
            say(&prefixed("> ", text));
        }
    }

    /// A binary message sent (shown only when prefixed).
    pub(crate) fn sent_binary(&self, bytes: &[u8]) {
        if self.style == Style::Prefixed {
            say(&format!(">b {}", hex::encode(bytes)));
        }
    }
}

/// `text` after `first`, its further lines indented to match, control characters
/// (but tab) escaped.
fn prefixed(first: &str, text: &str) -> String {
    let mut out = String::with_capacity(first.len() + text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i == 0 {
            out.push_str(first);
        } else {
            out.push('\n');
            out.push_str(&" ".repeat(first.len()));
        }
        for c in line.chars() {
            if c.is_control() && c != '\t' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// Print one line on stdout; a closed stdout is not worth a panic.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Write bytes to stdout as they are.
fn raw(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_lines_continue_indented_and_escape_control_characters() {
        assert_eq!(prefixed("< ", "hello"), "< hello");
        assert_eq!(prefixed("< ", ""), "< ");
        assert_eq!(
            prefixed("< ", "one\n* close 1000  true"),
            "< one\n  * close 1000  true"
        );
        assert_eq!(prefixed("> ", "a\r\x1b[2Kb\tc"), "> a\\r\\u{1b}[2Kb\tc");
    }
}
