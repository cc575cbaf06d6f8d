//! The outgoing byte queue: frames waiting to be written to the transport.
//!
//! Small frames are coalesced into one growing buffer, so that a burst of small
//! messages leaves in one `write`; a large payload handed over as owned [`Bytes`] is
//! queued as its own chunk behind its header, never copied. The buffer is given back
//! whenever the connection goes idle (an idle connection holds no memory but its own
//! state), so in a request/response exchange it would be allocated and freed once per
//! message; instead, while nothing else is queued, up to `INLINE_CAPACITY` bytes of
//! frames (a short reply, a pong, a close frame) are kept in the queue itself. The
//! queue implements [`bytes::Buf`], so an I/O layer writes it with `write_buf`
//! (vectored when the transport supports it) and the bytes still queued are
//! `remaining()`.
//!
//! The browser's `bufferedAmount` is a different count: application bytes (text as
//! UTF-8, binary as is) of messages not yet transmitted, without framing and before
//! compression. The queue keeps it beside the wire bytes, as a list of marks (where a
//! message's last wire byte lies, and how much application data it carried) that
//! `advance` pops as the writes pass them. Consecutive small messages share a mark (up
//! to 16 KiB of data), so the count is exact to within 16 KiB and a burst of tiny
//! messages does not grow the list.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::event::{Message, MessageKind};
use crate::frame::{FIN, FrameHeader, MASK_BIT, MAX_HEADER_LEN, MAX_SHORT_PAYLOAD, OpCode};
use crate::mask;

/// Payloads at least this long are queued as their own chunk instead of being copied
/// into the coalescing buffer (when they need no masking).
/// Below it, copying costs less than the allocation and the extra iovec a chunk of its
/// own needs.
pub(crate) const OWN_CHUNK_THRESHOLD: usize = 4 * 1024;

/// The least the coalescing buffer starts with once it has been given back: room for
/// a burst of small frames without regrowing, and still a small allocation.
const FIRST_TAIL_CAPACITY: usize = 1024;

/// How many bytes of frames the queue holds in itself, without allocating, while nothing
/// else is queued.
pub(crate) const INLINE_CAPACITY: usize = 128;

/// Messages are tracked for `bufferedAmount` in groups of about this many application
/// bytes: the count drops when a group's last byte is written, so it is exact to within
/// one group.
const MARK_GRANULE: usize = 16 * 1024;

/// Frames waiting to be written, as a [`Buf`].
///
/// ```
/// use bytes::Buf;
/// use wsevents_proto::{Config, Connection, Role};
/// let mut conn = Connection::open(Role::Server, Config::default());
/// conn.send_text("hi").unwrap();
/// let out = conn.poll_transmit().unwrap();
/// assert_eq!(out.chunk(), b"\x81\x02hi");
/// out.advance(4);
/// assert!(!out.has_remaining());
/// ```
#[derive(Debug)]
pub struct TransmitQueue {
    /// Small frames queued while nothing else was: the bytes `inline_start..inline_end`
    /// are written before anything else, and while they are there `chunks` and `tail`
    /// are empty.
    inline: [u8; INLINE_CAPACITY],
    inline_start: usize,
    inline_end: usize,
    /// Frozen chunks, written before `tail`.
    chunks: VecDeque<Bytes>,
    /// The coalescing buffer, written last.
    tail: BytesMut,
    /// Bytes in `chunks` plus `tail`.
    len: usize,
    /// Wire bytes ever queued and ever written: positions for `marks`.
    pushed: u64,
    written: u64,
    /// Per data frame still (partly) queued: the wire position after its last byte and
    /// the application bytes it carries.
    marks: VecDeque<(u64, usize)>,
    /// Sum of the application bytes in `marks`.
    app_pending: usize,
}

/// A whole server-to-client message framed once, to be queued on many connections
/// with [`Connection::send_prepared`](crate::Connection::send_prepared): the frame
/// (header and payload, unmasked, no RSV bit, so never compressed) is one [`Bytes`], and
/// every connection it is sent on queues that same allocation, not a copy
/// (uWebSockets' `PreparedMessage`, its `publish`).
///
/// ```
/// use bytes::Buf;
/// use wsevents_proto::{Config, Connection, Message, PreparedMessage, Role};
/// let prepared = PreparedMessage::new(&Message::text("hi"));
/// assert_eq!(&prepared.frame()[..], b"\x81\x02hi");
/// let mut a = Connection::open(Role::Server, Config::default());
/// let mut b = Connection::open(Role::Server, Config::default());
/// a.send_prepared(&prepared).unwrap();
/// b.send_prepared(&prepared).unwrap();
/// let out = b.poll_transmit().unwrap();
/// assert_eq!(out.chunk().as_ptr(), prepared.frame().as_ptr(), "the same bytes");
/// assert_eq!(a.buffered_amount(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedMessage {
    frame: Bytes,
    payload_len: usize,
    kind: MessageKind,
}

impl PreparedMessage {
    /// Frame `message` once: a final, unmasked frame, its payload copied once behind
    /// its header.
    pub fn new(message: &Message) -> PreparedMessage {
        let (kind, payload) = match message {
            Message::Text(text) => (MessageKind::Text, text.as_bytes()),
            Message::Binary(data) => (MessageKind::Binary, data),
        };
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        let header = FrameHeader::new(opcode, payload.len() as u64);
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        let mut frame = BytesMut::with_capacity(head_len + payload.len());
        frame.extend_from_slice(&head[..head_len]);
        frame.extend_from_slice(payload);
        PreparedMessage {
            frame: frame.freeze(),
            payload_len: payload.len(),
            kind,
        }
    }

    /// A text message whose payload `write` appends to the string it is handed
    /// (empty, with room for `capacity` bytes): written once, straight behind room for
    /// the frame's header, and framed with no copy afterwards. [`new`](Self::new)
    /// copies a finished message's payload behind its header; a protocol that builds
    /// each publication's frame (wsevents' hub framings) writes it here instead.
    ///
    /// ```
    /// use std::fmt::Write;
    /// use wsevents_proto::{Message, PreparedMessage};
    /// let direct = PreparedMessage::text_with(16, |out| {
    ///     let _ = write!(out, r#"{{"offset":{}}}"#, 41);
    /// });
    /// assert_eq!(direct, PreparedMessage::new(&Message::text(r#"{"offset":41}"#)));
    /// ```
    pub fn text_with(capacity: usize, write: impl FnOnce(&mut String)) -> PreparedMessage {
        // Room for the longest header, as text, in front of the payload.
        let mut text = String::with_capacity(MAX_HEADER_LEN + capacity);
        text.push_str(&"\0".repeat(MAX_HEADER_LEN));
        write(&mut text);
        let payload_len = text.len() - MAX_HEADER_LEN;
        let header = FrameHeader::new(OpCode::Text, payload_len as u64);
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        // The header goes right before the payload; what is left of the room in front
        // is sliced off (no copy of the payload).
        let mut frame = Vec::from(text);
        let start = MAX_HEADER_LEN - head_len;
        frame[start..MAX_HEADER_LEN].copy_from_slice(&head[..head_len]);
        let mut frame = Bytes::from(frame);
        frame.advance(start);
        PreparedMessage {
            frame,
            payload_len,
            kind: MessageKind::Text,
        }
    }

    /// The frame as it goes on the wire.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The message's payload (what `bufferedAmount` counts).
    pub fn payload(&self) -> Bytes {
        self.frame.slice(self.frame.len() - self.payload_len..)
    }

    /// The payload's length in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }
}

impl Default for TransmitQueue {
    fn default() -> Self {
        TransmitQueue {
            inline: [0; INLINE_CAPACITY],
            inline_start: 0,
            inline_end: 0,
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            len: 0,
            pushed: 0,
            written: 0,
            marks: VecDeque::new(),
            app_pending: 0,
        }
    }
}

impl TransmitQueue {
    /// Queue one data frame carrying `app_len` bytes of application data (its
    /// payload's length before an extension transformed it).
    pub(crate) fn push_data_frame(&mut self, header: &FrameHeader, payload: Bytes, app_len: usize) {
        self.push_frame(header, payload);
        self.mark_data(app_len);
    }

    /// Queue one data frame whose payload (shorter than [`OWN_CHUNK_THRESHOLD`]) is
    /// copied in, masked if the header has a key: what
    /// [`push_data_frame`](Self::push_data_frame) does with such a payload, from a
    /// borrowed one.
    pub(crate) fn push_copied_data_frame(&mut self, header: &FrameHeader, payload: &[u8]) {
        debug_assert!(payload.len() < OWN_CHUNK_THRESHOLD);
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        self.push_copied(&head[..head_len], payload, header.mask);
        self.mark_data(payload.len());
    }

    /// Queue a whole data message of at most [`MAX_SHORT_PAYLOAD`] bytes as one frame
    /// (FIN, no RSV bits, the two-byte length form), masked with `mask` if given: what
    /// [`push_data_frame`](Self::push_data_frame) does, without the general header.
    pub(crate) fn push_short_data_frame(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        mask: Option<[u8; 4]>,
    ) {
        debug_assert!(payload.len() <= MAX_SHORT_PAYLOAD);
        let mut head = [FIN | opcode.as_u8(), payload.len() as u8, 0, 0, 0, 0];
        let head_len = match mask {
            Some(key) => {
                head[1] |= MASK_BIT;
                head[2..].copy_from_slice(&key);
                6
            }
            None => 2,
        };
        self.push_copied(&head[..head_len], payload, mask);
        self.mark_data(payload.len());
    }

    /// Queue a frame made of the encoded `head` and a copy of `payload`, masked with
    /// `mask` if given: in the inline bytes when they take it, else at the end of the
    /// coalescing buffer. Inlined: on the short-frame path a call costs as much as the
    /// copy.
    #[inline(always)]
    fn push_copied(&mut self, head: &[u8], payload: &[u8], mask: Option<[u8; 4]>) {
        let frame_len = head.len() + payload.len();
        let body = match self.reserve_inline(frame_len) {
            Some(frame) => {
                frame[..head.len()].copy_from_slice(head);
                frame[head.len()..].copy_from_slice(payload);
                &mut frame[head.len()..]
            }
            None => {
                self.reserve_tail(frame_len);
                self.tail.extend_from_slice(head);
                let start = self.tail.len();
                self.tail.extend_from_slice(payload);
                &mut self.tail[start..]
            }
        };
        if let Some(key) = mask {
            mask::apply_mask(body, key, 0);
        }
    }

    /// Count a frame of `frame_len` bytes as queued, and give room for it in the inline
    /// bytes if it fits there and nothing else is queued. `None`: it goes at the end of
    /// the coalescing buffer (where the inline bytes have been moved).
    #[inline]
    fn reserve_inline(&mut self, frame_len: usize) -> Option<&mut [u8]> {
        if self.len == 0 {
            // Nothing else is queued: start the inline bytes afresh.
            self.inline_start = 0;
            self.inline_end = 0;
        }
        let inline_only = self.len == self.inline_len();
        self.len += frame_len;
        self.pushed += frame_len as u64;
        if !inline_only {
            return None;
        }
        let start = self.inline_end;
        if start + frame_len > INLINE_CAPACITY {
            self.spill_inline(frame_len);
            return None;
        }
        self.inline_end += frame_len;
        Some(&mut self.inline[start..start + frame_len])
    }

    /// Count `app_len` bytes of application data for a data frame just queued.
    fn mark_data(&mut self, app_len: usize) {
        if app_len == 0 {
            return;
        }
        self.app_pending += app_len;
        // Small messages in a row share a mark, up to MARK_GRANULE bytes: a burst of
        // them costs an addition each, not a queue entry each.
        match self.marks.back_mut() {
            Some((end, app)) if *app < MARK_GRANULE => {
                *end = self.pushed;
                *app += app_len;
            }
            _ => self.marks.push_back((self.pushed, app_len)),
        }
    }

    /// Queue one frame: `header` with `payload`, masking it if the header has a key.
    pub(crate) fn push_frame(&mut self, header: &FrameHeader, payload: Bytes) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        if payload.len() < OWN_CHUNK_THRESHOLD {
            self.push_copied(&head[..head_len], &payload, header.mask);
            return;
        }
        // Counted, and the inline bytes moved out: a long frame never fits among them.
        let spilled = self.reserve_inline(head_len + payload.len()).is_none();
        debug_assert!(spilled);
        match header.mask {
            // Masked in one pass on its way in (see `extend_masked`).
            Some(key) => {
                self.reserve_tail(head_len + payload.len());
                self.tail.extend_from_slice(&head[..head_len]);
                mask::extend_masked(&mut self.tail, &payload, key);
            }
            // Its own chunk behind its header, never copied.
            None => {
                self.reserve_tail(head_len);
                self.tail.extend_from_slice(&head[..head_len]);
                self.chunks.push_back(self.tail.split().freeze());
                self.chunks.push_back(payload);
            }
        }
    }

    /// Queue a whole frame shared with other queues (a [`PreparedMessage`]) as its own
    /// chunk, never copied: what is queued before it is moved ahead of it (the inline
    /// bytes into the coalescing buffer, which is frozen into a chunk), so the order
    /// of the wire bytes is the order of the calls.
    pub(crate) fn push_shared_frame(&mut self, frame: Bytes, app_len: usize) {
        if self.len == 0 {
            self.inline_start = 0;
            self.inline_end = 0;
        }
        self.spill_inline(0);
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.len += frame.len();
        self.pushed += frame.len() as u64;
        self.chunks.push_back(frame);
        self.mark_data(app_len);
    }

    /// Unwritten inline bytes.
    fn inline_len(&self) -> usize {
        self.inline_end - self.inline_start
    }

    /// Move the inline bytes into the coalescing buffer, with room for `more` after
    /// them, so that what is queued next follows them.
    fn spill_inline(&mut self, more: usize) {
        if self.inline_len() > 0 {
            // The tail is empty while there are inline bytes; it may still have room.
            self.reserve_tail(self.inline_len() + more);
            self.tail
                .extend_from_slice(&self.inline[self.inline_start..self.inline_end]);
        }
        self.inline_start = 0;
        self.inline_end = 0;
    }

    /// Make room for `needed` more bytes in the coalescing buffer: a fresh one (at least
    /// `FIRST_TAIL_CAPACITY`) if it was given back, else grown in place.
    #[inline]
    fn reserve_tail(&mut self, needed: usize) {
        if self.tail.capacity() == 0 {
            self.tail = BytesMut::with_capacity(needed.max(FIRST_TAIL_CAPACITY));
        } else {
            self.tail.reserve(needed);
        }
    }

    /// Queue bytes as they are (an HTTP head).
    pub(crate) fn push_raw(&mut self, bytes: &[u8]) {
        self.spill_inline(bytes.len());
        self.len += bytes.len();
        self.pushed += bytes.len() as u64;
        self.tail.extend_from_slice(bytes);
    }

    /// Drop everything queued.
    pub(crate) fn clear(&mut self) {
        self.inline_start = 0;
        self.inline_end = 0;
        self.chunks.clear();
        self.tail.clear();
        self.written = self.pushed;
        self.len = 0;
        self.marks.clear();
        self.app_pending = 0;
    }

    /// Free the coalescing buffer if nothing is queued.
    pub(crate) fn release_if_empty(&mut self) {
        if self.len == 0 && self.tail.capacity() > 0 {
            self.tail = BytesMut::new();
        }
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes are queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Application bytes of the data frames not yet completely written: the
    /// browser's `bufferedAmount`.
    pub fn application_bytes(&self) -> usize {
        self.app_pending
    }
}

impl Buf for TransmitQueue {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        if self.inline_start < self.inline_end {
            return &self.inline[self.inline_start..self.inline_end];
        }
        match self.chunks.front() {
            Some(chunk) => chunk,
            None => &self.tail,
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let inline = &self.inline[self.inline_start..self.inline_end];
        let all = [inline]
            .into_iter()
            .chain(self.chunks.iter().map(|c| &c[..]))
            .chain([&self.tail[..]]);
        for (slot, chunk) in dst.iter_mut().zip(all.filter(|c| !c.is_empty())) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(
            cnt <= self.len,
            "advance past the end of the transmit queue"
        );
        self.len -= cnt;
        self.written += cnt as u64;
        while let Some(&(end, app_len)) = self.marks.front() {
            if end > self.written {
                break;
            }
            self.app_pending -= app_len;
            self.marks.pop_front();
        }
        let from_inline = cnt.min(self.inline_len());
        self.inline_start += from_inline;
        cnt -= from_inline;
        while cnt > 0 {
            match self.chunks.front_mut() {
                Some(chunk) if chunk.len() <= cnt => {
                    cnt -= chunk.len();
                    self.chunks.pop_front();
                }
                Some(chunk) => {
                    chunk.advance(cnt);
                    cnt = 0;
                }
                None => {
                    self.tail.advance(cnt);
                    cnt = 0;
                }
            }
        }
        if self.chunks.front().is_some_and(|c| c.is_empty()) {
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    #[test]
    fn a_text_written_in_place_frames_as_a_finished_one_at_every_header_length() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let text = "é".repeat(len / 2) + &"a".repeat(len % 2);
            let direct = PreparedMessage::text_with(4, |out| out.push_str(&text));
            let copied = PreparedMessage::new(&Message::text(text.clone()));
            assert_eq!(direct, copied, "{len} bytes");
            assert_eq!(direct.payload_len(), text.len());
            assert_eq!(&direct.payload()[..], text.as_bytes());
        }
    }

    fn drain(queue: &mut TransmitQueue) -> Vec<u8> {
        let mut out = Vec::new();
        while queue.has_remaining() {
            let chunk = queue.chunk().to_vec();
            queue.advance(chunk.len());
            out.extend(chunk);
        }
        out
    }

    #[test]
    fn large_payload_is_queued_without_a_copy() {
        let mut queue = TransmitQueue::default();
        let payload = Bytes::from(vec![7u8; 4096]);
        let ptr = payload.as_ptr();
        queue.push_frame(&FrameHeader::new(OpCode::Binary, 4096), payload);
        assert_eq!(queue.chunk().len(), 4, "header chunk first");
        queue.advance(4);
        assert_eq!(
            queue.chunk().as_ptr(),
            ptr,
            "payload chunk is the caller's bytes"
        );
        assert_eq!(queue.remaining(), 4096);
    }

    #[test]
    fn small_frames_coalesce_into_one_chunk() {
        let mut queue = TransmitQueue::default();
        for _ in 0..3 {
            queue.push_frame(
                &FrameHeader::new(OpCode::Text, 2),
                Bytes::from_static(b"hi"),
            );
        }
        assert_eq!(queue.chunk().len(), 12);
        assert_eq!(drain(&mut queue), b"\x81\x02hi\x81\x02hi\x81\x02hi");
    }

    #[test]
    fn vectored_chunks_cover_everything_in_order() {
        let mut queue = TransmitQueue::default();
        queue.push_frame(
            &FrameHeader::new(OpCode::Binary, 8000),
            Bytes::from(vec![1u8; 8000]),
        );
        queue.push_frame(&FrameHeader::new(OpCode::Text, 1), Bytes::from_static(b"x"));
        let mut slices = [IoSlice::new(&[]); 8];
        let n = queue.chunks_vectored(&mut slices);
        let total: usize = slices[..n].iter().map(|s| s.len()).sum();
        assert_eq!(total, queue.remaining());
        queue.advance(1000);
        assert_eq!(queue.remaining(), 4 + 8000 + 3 - 1000);
    }

    #[test]
    fn application_bytes_count_payloads_until_their_last_byte_is_written() {
        let mut queue = TransmitQueue::default();
        // A 2 B compressed frame carrying 20,000 B of text (a mark of its own, being
        // over the granule), then a ping, then two small frames that share a mark.
        queue.push_data_frame(
            &FrameHeader::new(OpCode::Text, 2),
            Bytes::from_static(b"zz"),
            20_000,
        );
        queue.push_frame(&FrameHeader::new(OpCode::Ping, 0), Bytes::new());
        for _ in 0..2 {
            queue.push_data_frame(
                &FrameHeader::new(OpCode::Binary, 3),
                Bytes::from_static(b"abc"),
                3,
            );
        }
        assert_eq!(queue.application_bytes(), 20_006);
        queue.advance(3);
        assert_eq!(
            queue.application_bytes(),
            20_006,
            "first frame not complete"
        );
        queue.advance(1);
        assert_eq!(queue.application_bytes(), 6);
        queue.advance(2 + 5);
        assert_eq!(
            queue.application_bytes(),
            6,
            "the group ends with the last frame"
        );
        queue.advance(5);
        assert_eq!(queue.application_bytes(), 0);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_short_reply_needs_no_allocation_and_longer_ones_follow_it() {
        let mut queue = TransmitQueue::default();
        queue.push_frame(
            &FrameHeader::new(OpCode::Text, 2),
            Bytes::from_static(b"hi"),
        );
        assert_eq!(queue.tail.capacity(), 0, "held inline");
        assert_eq!(queue.chunk(), b"\x81\x02hi");
        queue.advance(1);
        // Too much for the inline room: the rest of the first frame moves ahead of it.
        let big = vec![b'x'; INLINE_CAPACITY];
        queue.push_frame(
            &FrameHeader::new(OpCode::Binary, big.len() as u64),
            Bytes::from(big.clone()),
        );
        queue.push_frame(&FrameHeader::new(OpCode::Text, 1), Bytes::from_static(b"!"));
        let mut expected = b"\x02hi\x82\x7e\x00\x80".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"\x81\x01!");
        assert_eq!(drain(&mut queue), expected);
        // Empty again: the inline room is used from its start.
        for _ in 0..2 {
            queue.push_frame(&FrameHeader::new(OpCode::Pong, 0), Bytes::new());
        }
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(queue.chunks_vectored(&mut slices), 1);
        assert_eq!(&*slices[0], b"\x8a\x00\x8a\x00");
        queue.clear();
        assert!(queue.is_empty() && queue.chunk().is_empty());
    }

    /// What is queued, as `chunks_vectored` shows it.
    fn vectored(queue: &TransmitQueue) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = queue.chunks_vectored(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    proptest::proptest! {
        /// Any mix of frames (inline, coalesced, own chunks, masked, short ones by
        /// either path, shared ones), raw bytes, partial writes and releases comes out as the bytes
        /// pushed, in order.
        #[test]
        fn writes_in_any_pieces_give_the_bytes_pushed_in_order(
            ops in proptest::collection::vec(
                (0u8..7, 0usize..5000, proptest::prelude::any::<proptest::sample::Index>()),
                1..40),
        ) {
            let mut queue = TransmitQueue::default();
            let mut expected = Vec::new();
            let mut written = Vec::new();
            for (i, (op, size, at)) in ops.into_iter().enumerate() {
                // Mostly small frames, so that the inline room fills and spills.
                let size = if i % 3 == 0 { size } else { size % 40 };
                // 4 and 5: the short-frame path, for what fits it.
                let short = op >= 4;
                let size = if short { size % (MAX_SHORT_PAYLOAD + 1) } else { size };
                match op {
                    0 | 1 | 4 | 5 => {
                        let payload: Vec<u8> = (0..size).map(|b| b as u8).collect();
                        let mut header = FrameHeader::new(OpCode::Binary, size as u64);
                        if op % 2 == 1 {
                            header.mask = Some([1, 2, 3, 4]);
                        }
                        let mut head = [0u8; MAX_HEADER_LEN];
                        let n = header.encode(&mut head);
                        expected.extend_from_slice(&head[..n]);
                        let mut body = payload.clone();
                        if let Some(key) = header.mask {
                            mask::apply_mask(&mut body, key, 0);
                        }
                        expected.extend_from_slice(&body);
                        if short {
                            queue.push_short_data_frame(OpCode::Binary, &payload, header.mask);
                        } else {
                            queue.push_data_frame(&header, Bytes::from(payload), size);
                        }
                    }
                    2 => {
                        let n = at.index(queue.remaining() + 1);
                        let mut left = n;
                        while left > 0 {
                            let chunk = queue.chunk();
                            let k = chunk.len().min(left);
                            written.extend_from_slice(&chunk[..k]);
                            queue.advance(k);
                            left -= k;
                        }
                    }
                    6 => {
                        // A frame shared with other queues (a prepared message).
                        let payload: Vec<u8> = (0..size).map(|b| b as u8).collect();
                        let frame = PreparedMessage::new(&Message::binary(payload));
                        expected.extend_from_slice(frame.frame());
                        queue.push_shared_frame(frame.frame().clone(), size);
                    }
                    _ => {
                        queue.release_if_empty();
                        if queue.is_empty() {
                            queue.push_raw(b"raw");
                            expected.extend_from_slice(b"raw");
                        }
                    }
                }
                let pending = vectored(&queue);
                proptest::prop_assert_eq!(pending.len(), queue.remaining());
                proptest::prop_assert_eq!(&pending[..], &expected[written.len()..]);
            }
            written.extend(drain(&mut queue));
            proptest::prop_assert_eq!(written, expected);
            proptest::prop_assert_eq!(queue.application_bytes(), 0);
        }
    }

    #[test]
    fn shared_frames_keep_the_order_of_the_calls_and_are_not_copied() {
        let mut queue = TransmitQueue::default();
        let shared = PreparedMessage::new(&Message::text("shared"));
        let one = FrameHeader::new(OpCode::Text, 1);
        queue.push_data_frame(&one, Bytes::from_static(b"a"), 1);
        queue.push_shared_frame(shared.frame().clone(), 6);
        queue.push_data_frame(&one, Bytes::from_static(b"b"), 1);
        queue.push_shared_frame(shared.frame().clone(), 6);
        assert_eq!(queue.application_bytes(), 14);
        let mut slices = [IoSlice::new(&[]); 8];
        let n = queue.chunks_vectored(&mut slices);
        assert_eq!(n, 4, "a, shared, b, shared: one write");
        assert_eq!(slices[1].as_ptr(), shared.frame().as_ptr());
        assert_eq!(slices[3].as_ptr(), shared.frame().as_ptr());
        assert_eq!(
            drain(&mut queue),
            b"\x81\x01a\x81\x06shared\x81\x01b\x81\x06shared"
        );
        assert_eq!(queue.application_bytes(), 0);
    }

    #[test]
    fn masked_frames_are_masked_in_the_queue() {
        let mut queue = TransmitQueue::default();
        let mut header = FrameHeader::new(OpCode::Text, 5);
        header.mask = Some([0x37, 0xfa, 0x21, 0x3d]);
        queue.push_frame(&header, Bytes::from_static(b"Hello"));
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        assert_eq!(
            drain(&mut queue),
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }
}
