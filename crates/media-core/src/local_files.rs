//! Opening files below a folder the operator gave, without ever leaving it.
//!
//! Every component below the root is opened with `O_NOFOLLOW`, one level at a time
//! (`openat`), so that a symbolic link anywhere below the root (to a file, or to a
//! folder) is refused instead of followed. The file itself is opened with `O_NONBLOCK`,
//! so that a FIFO or a device cannot block the open, and then must be a regular file
//! (`fstat`). The root itself is the operator's choice and may be a link.

use std::fs::File;
use std::io;
use std::path::{Component, Path};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

/// Opens the regular file at `relative` below `root`, following no link below `root`.
/// `folder` names the root in messages ("the media store", "the datastore").
///
/// Errors: [`io::ErrorKind::NotFound`] when a component is missing; otherwise an error
/// that names the path and says what is wrong (a link, a FIFO, a device, a folder).
pub fn open_regular_beneath(root: &Path, relative: &Path, folder: &str) -> io::Result<File> {
    let shown = || root.join(relative).display().to_string();
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: not a plain path below {folder}", shown()),
                ));
            }
        }
    }
    let Some((file_name, folders)) = parts.split_last() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: names no file", shown()),
        ));
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(root, dir_flags, Mode::empty())
        .map_err(|e| refused(e, &root.display().to_string(), folder))?;
    for part in folders {
        dir = rustix::fs::openat(&dir, *part, dir_flags | OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| refused(e, &shown(), folder))?;
    }
    let file_flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir, *file_name, file_flags, Mode::empty())
        .map_err(|e| refused(e, &shown(), folder))?;
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
    if kind != FileType::RegularFile {
        return Err(io::Error::other(format!(
            "{} is {}, not a regular file: only regular files are read from {folder}",
            shown(),
            describe(kind)
        )));
    }
    // Regular files ignore O_NONBLOCK; clear it anyway so readers see a plain file.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

/// The error for a path component that could not be opened.
fn refused(errno: Errno, shown: &str, folder: &str) -> io::Error {
    match errno {
        // O_NOFOLLOW on a link fails with ELOOP; O_DIRECTORY on a link to a file, or on
        // a file, with ENOTDIR.
        Errno::LOOP | Errno::NOTDIR | Errno::MLINK => io::Error::other(format!(
            "{shown}: a symbolic link (or a non-folder) is on the way; links inside \
             {folder} are never followed: replace the link with the file it points to"
        )),
        errno => {
            let error = io::Error::from(errno);
            io::Error::new(error.kind(), format!("{shown}: {error}"))
        }
    }
}

/// What a file type is, for messages.
fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Directory => "a folder",
        FileType::Symlink => "a symbolic link",
        _ => "not a file",
    }
}
