//! The log writer: a line is appended to a bounded buffer in memory, and a thread of its
//! own writes the buffer out a batch at a time — every [`WRITE_EVERY`], or as soon as
//! the buffer is half full — with one system call per batch. Nothing on the request path
//! waits for it or wakes it per line: at tens of thousands of lines a second, waking a
//! writer thread for each would cost more than formatting them. When the buffer is full,
//! a line is dropped and counted, never waited for.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The longest a line waits in the buffer.
pub(crate) const WRITE_EVERY: Duration = Duration::from_millis(100);

/// What the request path and the writer thread share.
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer early: the buffer is half full, or the process is stopping.
    wake: Condvar,
    /// Lines beyond which new ones are dropped.
    limit: usize,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    stopping: bool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where the subscriber writes its lines (one `write` is one line).
#[derive(Clone)]
pub(crate) struct BatchWriter(Arc<Shared>);

impl BatchWriter {
    /// A writer holding at most `limit` lines for `out`, and the guard that keeps its
    /// thread running.
    pub(crate) fn new(
        out: impl Write + Send + 'static,
        limit: usize,
    ) -> std::io::Result<(Self, WriterGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            wake: Condvar::new(),
            limit: limit.max(1),
            dropped: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("tm-log-writer".into())
            .spawn({
                let shared = shared.clone();
                move || write_out(&shared, out)
            })?;
        let guard = WriterGuard {
            shared: shared.clone(),
            thread: Some(thread),
        };
        Ok((Self(shared), guard))
    }

    /// Lines dropped so far, the buffer being full.
    pub(crate) fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let shared = &self.0;
        let mut pending = shared.pending();
        if pending.lines >= shared.limit {
            drop(pending);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.bytes.extend_from_slice(line);
            pending.lines += 1;
            if pending.lines == shared.limit.div_ceil(2) {
                shared.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The writer thread: takes the whole buffer at each turn and writes it out, until the
/// process stops (and what is left is written).
fn write_out(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let stopping = {
            let mut pending = shared.pending();
            if !pending.stopping && pending.lines < shared.limit.div_ceil(2) {
                pending = shared
                    .wake
                    .wait_timeout(pending, WRITE_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut batch, &mut pending.bytes);
            pending.lines = 0;
            pending.stopping
        };
        if !batch.is_empty() {
            // Nowhere to report a failure to write the log: the lines are lost.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
        }
        if stopping {
            return;
        }
    }
}

/// Keeps the writer thread running; dropped, it has the thread write out what is
/// buffered, and waits for it.
pub(crate) struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.pending().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// What the writer thread wrote, kept for the test to read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("not poisoned").clone()).expect("text")
        }
    }

    #[test]
    fn lines_are_written_in_order_within_the_interval_and_at_the_end() {
        let sink = Sink::default();
        let (mut writer, guard) = BatchWriter::new(sink.clone(), 1000).expect("a thread");
        writer.write_all(b"first\n").expect("buffered");
        let started = Instant::now();
        while sink.text().is_empty() {
            assert!(started.elapsed() < 10 * WRITE_EVERY, "not written in time");
            std::thread::sleep(Duration::from_millis(5));
        }
        for i in 0..100 {
            writer
                .write_all(format!("{i}\n").as_bytes())
                .expect("buffered");
        }
        drop(guard);
        let expected: String = std::iter::once("first\n".to_owned())
            .chain((0..100).map(|i| format!("{i}\n")))
            .collect();
        assert_eq!(sink.text(), expected);
        assert_eq!(writer.dropped(), 0);
    }

    /// A sink that blocks until told to go on, as a stalled stdout does.
    struct Stalled(Arc<(Mutex<bool>, Condvar)>, Sink);

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let (go, cv) = &*self.0;
            let mut go = go.lock().expect("not poisoned");
            while !*go {
                go = cv.wait(go).expect("not poisoned");
            }
            self.1.write(bytes)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn beyond_the_limit_lines_are_dropped_and_counted_without_waiting() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let (mut writer, guard) =
            BatchWriter::new(Stalled(gate.clone(), sink.clone()), 10).expect("a thread");
        // The first batch leaves the buffer and stalls in the write; the buffer then
        // fills up and the rest are dropped.
        writer.write_all(b"stalls\n").expect("buffered");
        std::thread::sleep(3 * WRITE_EVERY);
        let started = Instant::now();
        for i in 0..50 {
            writer
                .write_all(format!("{i}\n").as_bytes())
                .expect("never fails");
        }
        assert!(started.elapsed() < WRITE_EVERY, "a write waited");
        assert_eq!(writer.dropped(), 40);
        *gate.0.lock().expect("not poisoned") = true;
        gate.1.notify_all();
        drop(guard);
        let expected: String = std::iter::once("stalls\n".to_owned())
            .chain((0..10).map(|i| format!("{i}\n")))
            .collect();
        assert_eq!(sink.text(), expected);
    }
}
