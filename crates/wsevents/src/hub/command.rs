//! Commands to every node of a hub, and their answers: what a server API needs to act
//! on connections wherever they are ("disconnect user X", "how many connections").
//!
//! ```text
//!  Hub::command ─► Backend::send_command (Redis: SPUBLISH on the control channel)
//!       ▲                 │ every node, this one too
//!       │                 ▼
//!       │          Inbound::command ─► the node's handler (no lock held) ─► its answer
//!       │                                                                    │
//!       └──── the answers, until as many as the command reached, or the wait ┘
//! ```
//!
//! The hub carries commands and answers as JSON values and knows nothing of what they
//! mean: the handler ([`Hub::on_command`]) does. On the in-process backend there is
//! one node, and the handler runs at once.
//!
//! Bounds: at most [`MAX_COMMANDS`] commands of one node wait for answers at once
//! (past it [`Error::Capacity`]); a command waits for at most [`MAX_ANSWERS`] answers
//! (the others are not counted); a message (command or answer) is at most
//! [`MAX_COMMAND_BYTES`] (a larger command is refused with [`Error::Capacity`], a
//! larger message from Redis is dropped).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use super::Hub;
use super::backend::Inbound;
use crate::error::{Error, Result};

/// The most commands of one node waiting for their answers at once: 64.
pub const MAX_COMMANDS: usize = 64;

/// The most answers one command collects: 1,024 (nodes).
pub const MAX_ANSWERS: usize = 1024;

/// The largest command or answer, in bytes of JSON: 64 KiB.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// What a node does with a command: its answer (user code: run with no lock held, on
/// the backend's task, so keep it quick).
pub type CommandHandler = Arc<dyn Fn(&Hub, &Value) -> Value + Send + Sync>;

/// What a command got ([`Hub::command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answers {
    /// The nodes it reached (as the backend counts them: on Redis, the nodes
    /// subscribed to the control channel; 1 in process).
    pub reached: usize,
    /// The answers that came within the wait, in the order they came: fewer than
    /// `reached` when some node did not answer in time.
    pub answers: Vec<Value>,
}

/// The commands a hub has sent and waits for answers to, and its handler.
pub(super) struct Commands {
    handler: Mutex<Option<CommandHandler>>,
    waiting: Mutex<HashMap<String, mpsc::Sender<Value>>>,
    /// This hub's part of every command id.
    node: u64,
}

impl Commands {
    pub(super) fn new() -> Commands {
        Commands {
            handler: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
            node: wsevents_proto::random::u64(),
        }
    }

    fn handler(&self) -> Option<CommandHandler> {
        lock(&self.handler).clone()
    }

    /// Run the handler on `command` (no lock held); `Null` without one.
    fn run(&self, hub: &Hub, command: &Value) -> Value {
        match self.handler() {
            Some(handler) => handler(hub, command),
            None => Value::Null,
        }
    }
}

/// A command or an answer, as it travels between nodes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Message {
    Command { id: String, command: Value },
    Answer { id: String, answer: Value },
}

impl Message {
    fn encode(&self) -> Result<Bytes> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| Error::InvalidAccess(format!("a command that is not JSON: {e}")))?;
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(Error::Capacity(format!(
                "a command or answer is at most {MAX_COMMAND_BYTES} bytes, not {}",
                bytes.len()
            )));
        }
        Ok(Bytes::from(bytes))
    }
}

/// Removes a command from the waiting ones when it is done or dropped.
struct Waiting<'a> {
    commands: &'a Commands,
    id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.commands.waiting).remove(&self.id);
    }
}

impl Hub {
    /// What this node does with the commands of [`command`](Self::command) (its own
    /// and other nodes'): the handler's answer goes back to the node that sent it. It
    /// is given the hub (so it need not keep a clone, which would keep the hub alive).
    /// Replaces the handler before; without one, a node answers `null`. The handler
    /// runs with no lock of the hub held, on the backend's task: keep it quick.
    ///
    /// ```
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use std::time::Duration;
    /// use serde_json::json;
    /// let hub = wsevents::hub::Hub::new();
    /// hub.on_command(|_, command| json!({ "echo": command.clone() }));
    /// let got = hub.command(json!("ping"), Duration::from_secs(1)).await?;
    /// assert_eq!((got.reached, got.answers), (1, vec![json!({ "echo": "ping" })]));
    /// # Ok(()) }
    /// ```
    pub fn on_command(&self, handler: impl Fn(&Hub, &Value) -> Value + Send + Sync + 'static) {
        *lock(&self.inner.commands.handler) = Some(Arc::new(handler));
    }

    /// Send `command` to every node of the hub, this one included, and collect their
    /// answers for at most `wait` (or until every node it reached has answered).
    ///
    /// Errors: [`Error::Unavailable`] when the backend cannot send it (Redis
    /// unreachable: no node got it); [`Error::Capacity`] past [`MAX_COMMANDS`]
    /// waiting or [`MAX_COMMAND_BYTES`].
    pub async fn command(&self, command: Value, wait: Duration) -> Result<Answers> {
        let commands = &self.inner.commands;
        let id = format!(
            "{:016x}-{}",
            commands.node,
            self.inner.next_command.fetch_add(1, Ordering::Relaxed)
        );
        let encoded = Message::Command {
            id: id.clone(),
            command: command.clone(),
        }
        .encode()?;
        let (answers_in, mut answers_out) = mpsc::channel(MAX_ANSWERS);
        let waiting = {
            let mut waiting = lock(&commands.waiting);
            if waiting.len() >= MAX_COMMANDS {
                return Err(Error::Capacity(format!(
                    "{MAX_COMMANDS} commands wait for their answers already"
                )));
            }
            waiting.insert(id.clone(), answers_in);
            Waiting { commands, id }
        };
        let Some(sent) = self.inner.backend.send_command(encoded) else {
            // One process: this node is every node.
            drop(waiting);
            return Ok(Answers {
                reached: 1,
                answers: vec![commands.run(self, &command)],
            });
        };
        let reached = tokio::time::timeout(wait, sent).await.map_err(|_| {
            Error::Unavailable(format!("the command was not sent within {wait:?}"))
        })??;
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while answers.len() < reached.min(MAX_ANSWERS) {
            match tokio::time::timeout_at(deadline, answers_out.recv()).await {
                Ok(Some(answer)) => answers.push(answer),
                Ok(None) | Err(_) => break,
            }
        }
        drop(waiting);
        Ok(Answers { reached, answers })
    }
}

impl Inbound {
    /// A message a node sent with [`Backend::send_command`](super::Backend::send_command)
    /// (this node's own too): a command is run by the hub's handler (with no lock
    /// held) and its answer returned, for the backend to send to every node in turn;
    /// an answer goes to the command here that waits for it. `None` when there is
    /// nothing to send: an answer, a command of a hub that is gone, or a message that
    /// is not one (dropped).
    pub fn command(&self, message: &[u8]) -> Option<Bytes> {
        let hub = self.hub.upgrade()?;
        if message.len() > MAX_COMMAND_BYTES {
            tracing::warn!(
                bytes = message.len(),
                "a command message too large: dropped"
            );
            return None;
        }
        match serde_json::from_slice::<Message>(message) {
            Ok(Message::Command { id, command }) => {
                let answer = hub.commands.run(&Hub { inner: hub.clone() }, &command);
                match (Message::Answer { id, answer }).encode() {
                    Ok(encoded) => Some(encoded),
                    Err(error) => {
                        tracing::warn!(%error, "a command's answer not sent");
                        None
                    }
                }
            }
            Ok(Message::Answer { id, answer }) => {
                let to = lock(&hub.commands.waiting).get(&id).cloned();
                if let Some(to) = to {
                    // Full: more answers than MAX_ANSWERS, not counted.
                    let _ = to.try_send(answer);
                }
                None
            }
            Err(error) => {
                tracing::warn!(%error, "a command message that is not one: dropped");
                None
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one read, insert, remove or assignment.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn one_process_is_every_node() {
        let hub = Hub::new();
        let none = hub
            .command(json!({"op": "x"}), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!((none.reached, none.answers), (1, vec![Value::Null]));
        hub.on_command(|_, c| json!({"got": c["op"]}));
        let got = hub
            .command(json!({"op": "x"}), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(got.answers, vec![json!({"got": "x"})]);
        assert!(lock(&hub.inner.commands.waiting).is_empty());
    }

    #[tokio::test]
    async fn a_command_too_large_is_refused() {
        let hub = Hub::new();
        let big = json!("x".repeat(MAX_COMMAND_BYTES));
        let refused = hub.command(big, Duration::from_secs(1)).await;
        assert!(matches!(refused, Err(Error::Capacity(_))), "{refused:?}");
    }

    #[test]
    fn inbound_runs_commands_and_routes_answers() {
        let hub = Hub::new();
        hub.on_command(|_, c| json!(c.as_u64().unwrap_or(0) + 1));
        let inbound = Inbound {
            hub: Arc::downgrade(&hub.inner),
        };
        let answer = inbound
            .command(br#"{"t":"command","id":"a-1","command":41}"#)
            .unwrap();
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer, json!({"t": "answer", "id": "a-1", "answer": 42}));
        // An answer for a command that waits here goes to it; others are dropped.
        let (to, mut got) = mpsc::channel(1);
        lock(&hub.inner.commands.waiting).insert("b-2".into(), to);
        assert!(
            inbound
                .command(br#"{"t":"answer","id":"b-2","answer":7}"#)
                .is_none()
        );
        assert_eq!(got.try_recv().unwrap(), json!(7));
        assert!(
            inbound
                .command(br#"{"t":"answer","id":"zz","answer":7}"#)
                .is_none()
        );
        for junk in [
            &b"not json"[..],
            br#"{"t":"other"}"#,
            &vec![b' '; MAX_COMMAND_BYTES + 1],
        ] {
            assert!(inbound.command(junk).is_none());
        }
    }
}
