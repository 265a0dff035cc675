//! The one writer behind every log line: lines are appended to a buffer in memory and a
//! background thread writes them to stdout in batches.
//!
//! This replaced tracing-appender's non-blocking writer, which sends each line through a
//! channel as an allocation of its own, wakes its thread for it and makes one `write` call per
//! line: with the access log on, that was the largest cost of a proxied request (see
//! BENCHMARKS.md, `sluice-all`). Here a line costs one copy under a lock nobody else holds
//! for long; the thread writes whatever has gathered every [`FLUSH_EVERY`], or at once when
//! [`FLUSH_AT`] bytes wait, as nginx's `access_log … buffer=` does. Both tracing's lines and
//! the access log's go through the same buffer, each appended whole, so lines never interleave.
//!
//! Nothing here can stall a request: when stdout stops taking lines (a full pipe, a stopped
//! terminal) and [`MAX_PENDING`] bytes wait, new lines are dropped and counted, and a warning
//! saying how many goes out once stdout takes lines again.

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest a line waits in memory before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Write at once when this much waits.
const FLUSH_AT: usize = 64 * 1024;
/// Past this much waiting, lines are dropped rather than held.
const MAX_PENDING: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn lock(shared: &Shared) -> MutexGuard<'_, Pending> {
    // Nothing panics while holding the lock; a poisoned one still holds whole lines.
    shared
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Appends whole lines to the log. A no-op until [`start`] (an in-process gateway in a test
/// logs nothing, as with no tracing subscriber).
pub fn append(lines: &[u8]) {
    let Some(shared) = SHARED.get() else { return };
    let mut pending = lock(shared);
    if pending.bytes.len() + lines.len() > MAX_PENDING {
        pending.dropped += 1;
        return;
    }
    let before = pending.bytes.len();
    pending.bytes.extend_from_slice(lines);
    // Wake the writer only when the threshold is crossed: a wake-up is a system call.
    if before < FLUSH_AT && pending.bytes.len() >= FLUSH_AT {
        drop(pending);
        shared.wake.notify_one();
    }
}

/// Whether [`start`] has run: the access log writes its lines only then.
pub fn is_started() -> bool {
    SHARED.get().is_some()
}

/// tracing-subscriber's writer: each formatted event arrives in one `write` and is appended
/// whole.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogLines;

impl Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes what is left and stops the writer thread when dropped: keep it until exit.
pub struct FlushOnDrop {
    thread: Option<JoinHandle<()>>,
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Some(shared) = SHARED.get() {
            lock(shared).closing = true;
            shared.wake.notify_one();
        }
        let _ = thread.join();
    }
}

/// Starts the writer thread (once per process; later calls return a guard that does nothing).
pub fn start() -> Result<FlushOnDrop, String> {
    if SHARED.set(Shared::default()).is_err() {
        return Ok(FlushOnDrop { thread: None });
    }
    let thread = std::thread::Builder::new()
        .name("sluice-log".into())
        .spawn(write_batches)
        .map_err(|e| format!("cannot start the log writer: {e}"))?;
    Ok(FlushOnDrop {
        thread: Some(thread),
    })
}

fn write_batches() {
    let Some(shared) = SHARED.get() else { return };
    let mut batch = Vec::with_capacity(FLUSH_AT * 2);
    loop {
        let (closing, dropped) = {
            let mut pending = lock(shared);
            if pending.bytes.len() < FLUSH_AT && !pending.closing {
                pending = shared
                    .wake
                    .wait_timeout(pending, FLUSH_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut batch);
            (pending.closing, std::mem::take(&mut pending.dropped))
        };
        if !batch.is_empty() {
            // stdout gone (a closed pipe) loses the lines; there is nowhere else to put them.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            // A burst may have grown the batch: don't keep megabytes for the quiet that follows.
            batch.shrink_to(FLUSH_AT * 2);
        }
        if dropped > 0 {
            // Through the log like any line (the lock is free here): written with the next batch.
            tracing::warn!("{dropped} log lines dropped: stdout was not taking them");
        }
        // Closing: done once nothing is left (the warning above may have added a line).
        if closing && lock(shared).bytes.is_empty() {
            return;
        }
    }
}
