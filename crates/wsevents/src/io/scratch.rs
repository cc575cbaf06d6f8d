//! A receive buffer per thread, for connections that have nothing buffered.
//!
//! A read needs room before it knows whether anything has arrived. Giving every
//! connection its own 64 KiB for that would cost 640 MB at 10,000 idle connections;
//! allocating it for each read and freeing it when the read finds nothing costs two
//! large allocations per message in a request/response exchange. Instead, a connection
//! with no partial frame reads into this buffer, shared by every connection its thread
//! drives, and the core copies only what arrived (an exact-size allocation, which
//! usually becomes the message itself). A connection in the middle of a frame reads
//! straight into its own buffer, sized for the rest of the frame.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

/// The size of the per-thread buffer: the most one read takes in.
pub(crate) const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Read once into this thread's buffer and hand what arrived to `take` (not called at
/// EOF). `None` when the buffer is in use further up this thread's stack (a transport
/// that itself drives a connection), so the caller reads into its own buffer instead.
pub(crate) fn poll_read<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    take: impl FnOnce(&[u8]),
) -> Option<Poll<io::Result<usize>>> {
    SCRATCH
        .try_with(|cell| {
            let mut buf = cell.try_borrow_mut().ok()?;
            Some(read_into(io, cx, &mut buf, take))
        })
        .ok()
        .flatten()
}

fn read_into<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut [u8],
    take: impl FnOnce(&[u8]),
) -> Poll<io::Result<usize>> {
    let mut read = ReadBuf::new(buf);
    ready!(Pin::new(io).poll_read(cx, &mut read))?;
    let data = read.filled();
    if !data.is_empty() {
        take(data);
    }
    Poll::Ready(Ok(data.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn hands_over_what_arrived_and_reports_eof_as_zero() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut io: &[u8] = b"hello";
        let mut got = Vec::new();
        let n = poll_read(&mut io, &mut cx, |data| got.extend_from_slice(data));
        assert!(matches!(n, Some(Poll::Ready(Ok(5)))));
        assert_eq!(got, b"hello");
        let n = poll_read(&mut io, &mut cx, |_| panic!("nothing to take at EOF"));
        assert!(matches!(n, Some(Poll::Ready(Ok(0)))));
    }

    #[test]
    fn a_nested_read_on_the_same_thread_is_refused_not_a_panic() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut outer: &[u8] = b"outer";
        let mut nested = None;
        let _ = poll_read(&mut outer, &mut cx, |_| {
            let mut inner: &[u8] = b"inner";
            let mut cx = Context::from_waker(Waker::noop());
            nested = Some(poll_read(&mut inner, &mut cx, |_| {}).is_none());
        });
        assert_eq!(nested, Some(true));
    }
}
