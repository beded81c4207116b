//! Where the sink's writer thread puts the batches: one trait, several destinations
//! (stdout, a file, NATS). The writer owns the retry loop and the backpressure, so a
//! destination only has to say how far a write got or why it failed; a batch the
//! writer has not finished stays queued, the queue fills, and workers stop reading TCP,
//! whichever destination is slow or failing.

use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

/// Wakes a writer that waits in [`Destination::idle`]; called after each batch is
/// queued.
pub type WriterWake = Arc<dyn Fn() + Send + Sync>;

/// A failure no retry can heal (a NATS stream that never acknowledges): the writer
/// reports it and the server exits 1.
#[derive(Debug)]
pub struct Fatal(pub String);

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// An I/O error carrying [`Fatal`].
pub fn fatal(message: impl Into<String>) -> io::Error {
    io::Error::other(Fatal(message.into()))
}

/// Whether `err` is one no retry can heal.
pub fn is_fatal(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::BrokenPipe || err.get_ref().is_some_and(|e| e.is::<Fatal>())
}

/// A place the writer thread delivers formatted output to.
pub trait Destination: Send + fmt::Debug {
    /// Called first, on the writer's thread (a client library's runtime lives there);
    /// an error stops the server at start-up.
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// For a destination with work of its own between batches (NATS: reading
    /// acknowledgements, answering pings): how to wake it from [`Destination::idle`].
    /// `None` (the default): the writer simply blocks on the queue.
    fn waker(&self) -> Option<WriterWake> {
        None
    }

    /// With a [`Destination::waker`]: called when the queue is empty, to do that work
    /// until woken or until `timeout` passes.
    fn idle(&mut self, timeout: Duration) {
        std::thread::sleep(timeout);
    }

    /// Delivers bytes from the front of `bufs` (in order) and says how many. An error
    /// delivered none of them: the writer retries the same bytes later, so nothing
    /// is lost or written twice.
    fn write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Called when the queue is empty: push out anything held back.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// SIGHUP: reopen (after log rotation). A failure leaves the destination closed;
    /// the next write tries again.
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Called about once a second: a chance to notice that the destination went
    /// away underneath (a removed file) and set things right.
    fn check(&mut self) {}

    /// After the last batch: wait until everything written has been delivered
    /// (NATS acknowledgements). Errors are retried like a write's.
    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }

    /// How warnings name it: `stdout`, the file's path, the NATS subject.
    fn name(&self) -> String;
}

/// Any `Write` as a destination (tests, and anything that needs no reopening).
pub struct Plain<W>(pub W);

impl<W> fmt::Debug for Plain<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plain")
    }
}

impl<W: Write + Send> Destination for Plain<W> {
    fn write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }

    fn name(&self) -> String {
        "output".into()
    }
}

/// Standard output, written through its own descriptor (no `LineWriter` in front:
/// the writer already batches, and a failed write must not leave bytes half-buffered).
#[derive(Debug)]
pub struct Stdout(File);

impl Stdout {
    /// Takes a duplicate of descriptor 1; grows its buffer when it is a pipe.
    pub fn open() -> io::Result<Stdout> {
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        let file = File::from(fd);
        super::pipe::grow(&file);
        Ok(Stdout(file))
    }
}

impl Destination for Stdout {
    fn write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn name(&self) -> String {
        "stdout".into()
    }
}
