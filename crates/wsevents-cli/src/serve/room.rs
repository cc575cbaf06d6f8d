//! The chat room: every member's [`WebSocket`] (a cheap clone), and `publish`, which
//! sends a message to each of them, the sender included.
//!
//! The message is built once and cloned per member (a reference count, not a copy of
//! the payload). Publishing never waits: `send` only queues. The rule for a slow
//! member, who would otherwise make the server hold an ever longer queue for it: once
//! more than [`SLOW_MEMBER_LIMIT`] bytes are queued and unsent to it, it is closed
//! with 1008 and gets nothing more (a browser tab that stopped reading must not grow
//! the server's memory; the others are not held back).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use wsevents::{CloseCode, Data, Message, WebSocket};

/// Queued, unsent bytes past which a member is dropped from the room (1 MiB).
pub(super) const SLOW_MEMBER_LIMIT: u64 = 1 << 20;

/// The members of the room, by connection.
#[derive(Debug, Default)]
pub(super) struct Room {
    members: Mutex<Members>,
}

#[derive(Debug, Default)]
struct Members {
    next: u64,
    sockets: HashMap<u64, WebSocket>,
}

impl Room {
    /// Add a member; the id is for [`leave`](Room::leave).
    pub(super) fn join(&self, ws: WebSocket) -> u64 {
        let mut members = self.members();
        members.next += 1;
        let id = members.next;
        members.sockets.insert(id, ws);
        id
    }

    /// Remove a member.
    pub(super) fn leave(&self, id: u64) {
        self.members().sockets.remove(&id);
    }

    /// How many members there are.
    pub(super) fn len(&self) -> usize {
        self.members().sockets.len()
    }

    /// Send `data` to every member, as text or binary as it came.
    pub(super) fn publish(&self, data: &Data) {
        let message = match data {
            Data::Text(text) => Message::text(text.clone()),
            Data::Blob(blob) => Message::binary(blob.bytes()),
            other => Message::binary(other.as_bytes().to_vec()),
        };
        let members: Vec<WebSocket> = self.members().sockets.values().cloned().collect();
        for member in members {
            if member.buffered_amount() > SLOW_MEMBER_LIMIT {
                tracing::info!(url = member.url(), "dropping a slow chat member");
                let _ = member.close_with_code(CloseCode::POLICY_VIOLATION, "too slow");
                continue;
            }
            // A member that is closing refuses with InvalidState: nothing to do.
            let _ = member.send(message.clone());
        }
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        // Never held across a panic-prone call; a poisoned lock still has a consistent
        // map.
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }
}
