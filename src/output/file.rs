//! `--output PATH`: messages appended to a file that log rotation can move away.
//! SIGHUP reopens the path (logrotate's `postrotate`); besides, before each write
//! (and once a second when idle) the path is checked to still name the open file, so
//! a file removed or renamed is recreated rather than written into the void (one
//! `stat` per `writev` of up to a megabyte under load). A file that
//! cannot be opened (its directory removed) leaves the destination closed: writes
//! fail, the writer retries each second, and the queue's backpressure holds TCP.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::info;

use super::dest::Destination;

/// Mode of a file the server creates (less the umask); an existing file keeps its own.
const CREATE_MODE: u32 = 0o640;

/// The output file, open for appending, or closed until it can be opened again.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    open: Option<Opened>,
}

#[derive(Debug)]
struct Opened {
    file: File,
    /// Device and inode, to notice that the path now names another file (or none).
    id: (u64, u64),
}

impl OutputFile {
    /// Opens (creating if need be) `path` for appending. Failing here is a start-up
    /// error: the path is most likely wrong.
    pub fn open(path: &Path) -> io::Result<OutputFile> {
        let opened = open(path)?;
        Ok(OutputFile {
            path: path.to_path_buf(),
            open: Some(opened),
        })
    }

    fn file(&mut self) -> io::Result<&mut File> {
        if self.open.is_none() {
            self.open = Some(open(&self.path)?);
            info!("output {} opened again", self.path.display());
        }
        match &mut self.open {
            Some(opened) => Ok(&mut opened.file),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }
}

fn open(path: &Path) -> io::Result<Opened> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(CREATE_MODE)
        .open(path)?;
    let meta = file.metadata()?;
    Ok(Opened {
        file,
        id: (meta.dev(), meta.ino()),
    })
}

impl Destination for OutputFile {
    fn write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.check();
        self.file()?.write_vectored(bufs)
    }

    fn reopen(&mut self) -> io::Result<()> {
        // Close first: the old file may be in a directory that is gone, and keeping
        // it would write messages nobody can read.
        self.open = None;
        self.open = Some(open(&self.path)?);
        info!("output {} reopened", self.path.display());
        Ok(())
    }

    fn check(&mut self) {
        let Some(opened) = &self.open else { return };
        let now = std::fs::metadata(&self.path).map(|m| (m.dev(), m.ino()));
        if now.as_ref().ok() == Some(&opened.id) {
            return;
        }
        // Log rotation does this every time: not worth a warning.
        info!(
            "output {} was moved, removed or replaced; opening it anew",
            self.path.display()
        );
        self.open = None;
        // A failure is reported by the next write, which retries.
        if let Ok(opened) = open(&self.path) {
            self.open = Some(opened);
        }
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sockpool-file-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(out: &mut OutputFile, bytes: &[u8]) -> io::Result<usize> {
        out.write(&[IoSlice::new(bytes)])
    }

    #[test]
    fn appends_and_creates_0640_and_keeps_an_existing_mode() {
        let dir = temp_dir("mode");
        let new = dir.join("new.log");
        let mut out = OutputFile::open(&new).unwrap();
        write(&mut out, b"one\n").unwrap();
        let mode = std::fs::metadata(&new).unwrap().permissions().mode() & 0o777;
        let umask_ok = mode == CREATE_MODE & !0o022 || mode == CREATE_MODE & !0o077;
        assert!(mode == CREATE_MODE || umask_ok, "mode {mode:o}");
        let old = dir.join("old.log");
        std::fs::write(&old, b"before\n").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o604)).unwrap();
        let mut out = OutputFile::open(&old).unwrap();
        write(&mut out, b"after\n").unwrap();
        assert_eq!(std::fs::read(&old).unwrap(), b"before\nafter\n");
        let mode = std::fs::metadata(&old).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o604);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_moved_or_removed_file_is_recreated_and_reopen_follows_the_path() {
        let dir = temp_dir("rotate");
        let path = dir.join("out.log");
        let mut out = OutputFile::open(&path).unwrap();
        write(&mut out, b"a\n").unwrap();
        std::fs::rename(&path, dir.join("out.log.1")).unwrap();
        write(&mut out, b"b\n").unwrap();
        out.reopen().unwrap();
        write(&mut out, b"c\n").unwrap();
        // The write after the rename noticed it: nothing goes to the moved file.
        assert_eq!(std::fs::read(dir.join("out.log.1")).unwrap(), b"a\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"b\nc\n");
        std::fs::remove_file(&path).unwrap();
        out.check();
        write(&mut out, b"d\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"d\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_removed_directory_fails_writes_until_it_is_back() {
        let dir = temp_dir("gone");
        let path = dir.join("out.log");
        let mut out = OutputFile::open(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.reopen().is_err());
        assert!(write(&mut out, b"x\n").is_err());
        std::fs::create_dir_all(&dir).unwrap();
        write(&mut out, b"y\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"y\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
