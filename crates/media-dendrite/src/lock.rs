//! One run at a time per media folder: an exclusive `flock` on the media folder itself
//! (no lock file is written into Dendrite's folder, and a dry run can take it too). The
//! kernel drops it when the run ends, however it ends. A second run waits for the
//! first, and says which process it waits for (from `/proc/locks`).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FlockOperation, OFlags};
use rustix::io::Errno;

use crate::error::CleanError;

/// The lock on a media folder, held until dropped.
#[derive(Debug)]
pub struct FolderLock {
    _fd: OwnedFd,
}

/// Takes the exclusive lock on the folder `base`, waiting (blocking the thread) while
/// another run holds it; `waiting` is called once, with a description of the holder,
/// before the wait.
pub fn lock_folder(base: &Path, waiting: impl FnOnce(&str)) -> Result<FolderLock, CleanError> {
    let io = |e: Errno| CleanError::Io {
        path: base.to_owned(),
        source: e.into(),
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(base, flags, rustix::fs::Mode::empty()).map_err(io)?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => return Ok(FolderLock { _fd: fd }),
        Err(Errno::WOULDBLOCK) => {}
        Err(e) => return Err(io(e)),
    }
    waiting(&holder(fd.as_fd()).unwrap_or_else(|| "another process".to_owned()));
    rustix::fs::flock(&fd, FlockOperation::LockExclusive).map_err(io)?;
    Ok(FolderLock { _fd: fd })
}

/// The process holding a `flock` on the file `fd` is open on, as "pid N (command
/// line)", from `/proc/locks`.
fn holder(fd: std::os::fd::BorrowedFd<'_>) -> Option<String> {
    let stat = rustix::fs::fstat(fd).ok()?;
    let (major, minor) = (
        rustix::fs::major(stat.st_dev),
        rustix::fs::minor(stat.st_dev),
    );
    let key = format!("{major:02x}:{minor:02x}:{}", stat.st_ino);
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5679550 0 EOF"; waiters have "->".
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&key.as_str()))
            .then(|| fields[4].to_owned())
    })?;
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            let words: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            words.join(" ")
        })
        .unwrap_or_default();
    Some(if command.is_empty() {
        format!("pid {pid}")
    } else {
        format!("pid {pid} ({command})")
    })
}
