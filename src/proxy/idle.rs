//! An idle timer for streams: it fires only after `timeout` with no progress, however long
//! the stream runs. Shared by the request body (a client that stops sending mid-upload) and
//! the response body (an upstream that goes silent mid-stream).
//!
//! Cheap on the hot path: nothing is allocated until the stream first has to wait, and a
//! stream that keeps flowing only moves the deadline when it next waits.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct IdleTimer {
    timeout: Duration,
    /// Created the first time the stream waits; reset when frames flowed since.
    sleep: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

impl IdleTimer {
    pub fn new(timeout: Duration) -> Self {
        IdleTimer {
            timeout,
            sleep: None,
            progressed: false,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The stream produced a frame.
    pub fn progress(&mut self) {
        self.progressed = true;
    }

    /// Call when the stream is pending: true once it has been idle for the whole timeout.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if std::mem::take(&mut self.progressed) {
            sleep.as_mut().reset(deadline);
        }
        matches!(sleep.as_mut().poll(cx), Poll::Ready(()))
    }
}
