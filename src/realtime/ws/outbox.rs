//! The bytes on their way to one peer of a WebSocket bridge. An outbox holds a relayed frame
//! as it comes in (its head first, then its payload, read by read) and the control frames we
//! owe the peer, which wait while a relayed frame is open: frames cannot interleave. Once
//! everything in it is written it frees its memory, so an idle bridge holds no buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio::time::Instant;

use super::frame::{self, Head};

/// Bytes waiting to be written to one peer. Emptied, it frees its memory.
#[derive(Default)]
pub(super) struct Outbox {
    buf: Vec<u8>,
    /// How much of `buf` has been written.
    sent: usize,
    /// A relayed frame not yet complete in `buf`: where its head starts, or `OnTheWire` once
    /// part of it has been written. Control frames must wait for it (`deferred`).
    open: Option<OpenFrame>,
    deferred: Vec<u8>,
    /// Written but not yet flushed (a TLS stream holds bytes until flushed).
    unflushed: bool,
    /// Since when this outbox has held `max_buffered` bytes or more.
    pub(super) full_since: Option<Instant>,
}

#[derive(Clone, Copy)]
pub(super) enum OpenFrame {
    Unsent(usize),
    OnTheWire,
}

impl Outbox {
    /// Writes what it holds to `io`. True when anything was written.
    pub(super) fn write_to<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> io::Result<bool> {
        let mut progress = false;
        while self.sent < self.buf.len() {
            match Pin::new(&mut *io).poll_write(cx, &self.buf[self.sent..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.sent += n;
                    self.unflushed = true;
                    progress = true;
                    // A peer that takes bytes is slow, not stalled.
                    self.full_since = None;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        self.compact();
        if self.unflushed {
            match Pin::new(&mut *io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// Everything written and flushed.
    pub(super) fn is_drained(&self) -> bool {
        self.pending() == 0 && !self.unflushed
    }

    /// A relayed frame is still coming in: control frames wait for it.
    pub(super) fn has_open_frame(&self) -> bool {
        self.open.is_some()
    }

    /// Bytes waiting for the peer, including control frames waiting for the open frame.
    pub(super) fn pending(&self) -> usize {
        self.buf.len() - self.sent + self.deferred.len()
    }

    /// Starts a relayed frame.
    pub(super) fn open_frame(&mut self, head: Head) {
        self.open = Some(OpenFrame::Unsent(self.buf.len()));
        frame::write_head(&mut self.buf, head);
    }

    /// Appends payload bytes of the open frame; returns them for (un)masking in place.
    pub(super) fn append(&mut self, chunk: &[u8]) -> &mut [u8] {
        let start = self.buf.len();
        self.buf.extend_from_slice(chunk);
        &mut self.buf[start..]
    }

    /// The open frame is complete: control frames that waited for it follow.
    pub(super) fn close_frame(&mut self) {
        self.open = None;
        if !self.deferred.is_empty() {
            let deferred = std::mem::take(&mut self.deferred);
            self.buf.extend_from_slice(&deferred);
        }
    }

    /// A control frame: now, or after the open frame.
    pub(super) fn push_control(&mut self, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
        let out = if self.open.is_some() {
            &mut self.deferred
        } else {
            &mut self.buf
        };
        frame::control(out, opcode, payload, mask);
    }

    /// Removes an open frame none of which has been written. False when part of one has:
    /// nothing else can follow it on this connection then.
    pub(super) fn drop_unsent_open_frame(&mut self) -> bool {
        match self.open {
            None => true,
            Some(OpenFrame::Unsent(start)) if start >= self.sent => {
                self.buf.truncate(start);
                self.open = None;
                self.deferred = Vec::new();
                true
            }
            Some(_) => false,
        }
    }

    /// Frees the buffer once everything in it is written: an idle bridge holds none.
    fn compact(&mut self) {
        if self.sent < self.buf.len() || self.sent == 0 {
            return;
        }
        if let Some(OpenFrame::Unsent(_)) = self.open {
            self.open = Some(OpenFrame::OnTheWire);
        }
        self.buf = Vec::new();
        self.sent = 0;
    }
}
