//! Removing a media's files from Synapse's media store without ever leaving it, and the
//! folders its removal leaves empty.
//!
//! Every folder below the media store root is opened with `O_NOFOLLOW`, one level at a
//! time, so a symbolic link anywhere on the way is refused, never followed. Only regular
//! files are removed: a link, FIFO, device or folder where a file or a thumbnail should
//! be is an error naming it, and its folder stays. The top-level folders
//! (`local_content/`, `remote_content/`, …) are never removed: Synapse expects them.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use media_core::run::RunMode;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::plan::MediaFiles;

/// What removing one media's files did (in a dry run: would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Whether its content file was there (and removed).
    pub content: bool,
    /// Thumbnail files removed.
    pub thumbnails: u64,
    /// Bytes of the files removed, measured on disk.
    pub bytes: u64,
    /// Folders removed: the thumbnail folder and those the removal left empty (0 in a
    /// dry run).
    pub folders: u64,
}

impl Removed {
    /// Files removed: the content and the thumbnails.
    pub fn files(&self) -> u64 {
        u64::from(self.content) + self.thumbnails
    }
}

/// Removes (in a dry run: sizes) the content file and every thumbnail file of one media,
/// then the folders this left empty, up to but not including the top-level folder.
/// A missing file or folder is no error (it is already gone).
pub fn remove_media_files(root: &Path, files: &MediaFiles, mode: RunMode) -> io::Result<Removed> {
    let mut removed = Removed::default();
    if let Some(bytes) = remove_file(root, &files.content, mode)? {
        removed.content = true;
        removed.bytes += bytes;
    }
    let (thumbnails, bytes, folder_removed) =
        remove_folder_of_files(root, &files.thumbnails, mode)?;
    removed.thumbnails = thumbnails;
    removed.bytes += bytes;
    removed.folders += u64::from(folder_removed);
    if mode.applies() {
        removed.folders += remove_empty_ancestors(root, &files.content)?;
        removed.folders += remove_empty_ancestors(root, &files.thumbnails)?;
    }
    Ok(removed)
}

/// The plain names of a relative path; an error for `..`, `/` or a prefix.
fn names(relative: &Path) -> io::Result<Vec<&OsStr>> {
    relative
        .components()
        .map(|component| match component {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: not a plain path below the media store",
                    relative.display()
                ),
            )),
        })
        .collect()
}

/// Opens the folder `root/folders…` without following a link below `root`; `None` when
/// a folder on the way is missing.
fn open_folder(root: &Path, folders: &[&OsStr]) -> io::Result<Option<OwnedFd>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(root, flags, Mode::empty())
        .map_err(|e| error_at(e, root, "the media store root"))?;
    for (depth, name) in folders.iter().enumerate() {
        dir = match rustix::fs::openat(&dir, *name, flags | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => {
                let shown: std::path::PathBuf = folders[..=depth].iter().collect();
                return Err(error_at(e, &root.join(shown), "a folder"));
            }
        };
    }
    Ok(Some(dir))
}

/// The error for a path that could not be opened or removed, saying what to do about a
/// link.
fn error_at(errno: Errno, path: &Path, what: &str) -> io::Error {
    match errno {
        Errno::LOOP | Errno::NOTDIR | Errno::MLINK => io::Error::other(format!(
            "{}: a symbolic link or a non-folder is where {what} should be; links in the \
             media store are never followed, so it was left alone",
            path.display()
        )),
        errno => {
            let error = io::Error::from(errno);
            io::Error::new(error.kind(), format!("{}: {error}", path.display()))
        }
    }
}

/// Removes the regular file at `relative` (in a dry run: sizes it); its size, or `None`
/// when it is not there.
pub(crate) fn remove_file(root: &Path, relative: &Path, mode: RunMode) -> io::Result<Option<u64>> {
    let parts = names(relative)?;
    let Some((name, folders)) = parts.split_last() else {
        return Ok(None);
    };
    let Some(dir) = open_folder(root, folders)? else {
        return Ok(None);
    };
    let size = match rustix::fs::statat(&dir, *name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {
            stat.st_size as u64
        }
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} is not a regular file (a link, folder, FIFO or device): left alone",
                root.join(relative).display()
            )));
        }
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(error_at(e, &root.join(relative), "a file")),
    };
    if mode.applies() {
        match rustix::fs::unlinkat(&dir, *name, AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(error_at(e, &root.join(relative), "a file")),
        }
    }
    Ok(Some(size))
}

/// Removes every regular file of the folder at `relative` and the folder itself (in a
/// dry run: counts and sizes them); `(files, bytes, whether the folder was removed)`.
/// Anything else in it (a sub-folder,
/// a link, a FIFO) is an error, and the folder stays.
pub(crate) fn remove_folder_of_files(
    root: &Path,
    relative: &Path,
    mode: RunMode,
) -> io::Result<(u64, u64, bool)> {
    let parts = names(relative)?;
    let Some(folder) = open_folder(root, &parts)? else {
        return Ok((0, 0, false));
    };
    let shown = root.join(relative);
    let mut listing = Dir::read_from(&folder).map_err(|e| error_at(e, &shown, "a folder"))?;
    let mut files = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry.map_err(|e| error_at(e, &shown, "a folder"))?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let stat = match rustix::fs::statat(&folder, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(error_at(e, &shown, "a thumbnail")),
        };
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(io::Error::other(format!(
                "{} is not a thumbnail file (a link, folder, FIFO or device): its folder was \
                 left in place",
                shown.join(name.to_string_lossy().as_ref()).display()
            )));
        }
        files.push((name.to_owned(), stat.st_size as u64));
    }
    drop(listing);
    let (mut count, mut bytes) = (0, 0);
    for (name, size) in files {
        if mode.applies() {
            match rustix::fs::unlinkat(&folder, &name, AtFlags::empty()) {
                Ok(()) => {}
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(error_at(e, &shown, "a thumbnail")),
            }
        }
        count += 1;
        bytes += size;
    }
    let mut folder_removed = false;
    if mode.applies() {
        let (name, folders) = parts.split_last().expect("a folder path has a name");
        if let Some(parent) = open_folder(root, folders)? {
            match rustix::fs::unlinkat(&parent, *name, AtFlags::REMOVEDIR) {
                Ok(()) => folder_removed = true,
                Err(Errno::NOENT) => {}
                // Synapse wrote a new thumbnail meanwhile: the folder is in use again.
                Err(Errno::NOTEMPTY | Errno::EXIST) => {}
                Err(e) => return Err(error_at(e, &shown, "a folder")),
            }
        }
    }
    Ok((count, bytes, folder_removed))
}

/// Removes the folders above `relative` that are empty, from the deepest up, stopping at
/// the first one that is not empty and never removing the top-level folder; how many
/// were removed.
pub(crate) fn remove_empty_ancestors(root: &Path, relative: &Path) -> io::Result<u64> {
    let parts = names(relative)?;
    let mut removed = 0;
    // parts[..depth] is the folder to remove; depth 1 is the top-level folder.
    for depth in (2..parts.len()).rev() {
        let (name, folders) = parts[..depth].split_last().expect("depth ≥ 2");
        let Some(parent) = open_folder(root, folders)? else {
            continue;
        };
        match rustix::fs::unlinkat(&parent, *name, AtFlags::REMOVEDIR) {
            Ok(()) => removed += 1,
            Err(Errno::NOENT) => {}
            Err(Errno::NOTEMPTY | Errno::EXIST) => break,
            Err(e) => {
                let shown: std::path::PathBuf = parts[..depth].iter().collect();
                return Err(error_at(e, &root.join(shown), "a folder"));
            }
        }
    }
    Ok(removed)
}

/// Removes the empty folder at `relative`, then the folders this left empty (never a
/// top-level one); how many were removed. A folder that is no longer empty stays (0).
pub(crate) fn remove_empty_folder(root: &Path, relative: &Path) -> io::Result<u64> {
    let parts = names(relative)?;
    let Some((name, folders)) = parts.split_last() else {
        return Ok(0);
    };
    if folders.is_empty() {
        return Ok(0);
    }
    let Some(parent) = open_folder(root, folders)? else {
        return Ok(0);
    };
    match rustix::fs::unlinkat(&parent, *name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(1 + remove_empty_ancestors(root, relative)?),
        Err(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST) => Ok(0),
        Err(e) => Err(error_at(e, &root.join(relative), "a folder")),
    }
}

/// When the file or folder at `relative` last changed, in Unix milliseconds (not
/// following a link); `None` when it is gone.
pub(crate) fn changed_ms(root: &Path, relative: &Path) -> io::Result<Option<i64>> {
    let parts = names(relative)?;
    let Some((name, folders)) = parts.split_last() else {
        return Ok(None);
    };
    let Some(dir) = open_folder(root, folders)? else {
        return Ok(None);
    };
    match rustix::fs::statat(&dir, *name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(
            stat.st_mtime * 1000 + stat.st_mtime_nsec as i64 / 1_000_000,
        )),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(error_at(e, &root.join(relative), "an entry")),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::*;

    fn media_files() -> MediaFiles {
        MediaFiles {
            content: PathBuf::from("local_content/ab/cd/efgh"),
            thumbnails: PathBuf::from("local_thumbnails/ab/cd/efgh"),
        }
    }

    fn store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("local_content/ab/cd")).unwrap();
        std::fs::create_dir_all(root.join("local_content/ab/zz")).unwrap();
        std::fs::write(root.join("local_content/ab/zz/other"), b"kept").unwrap();
        std::fs::write(root.join("local_content/ab/cd/efgh"), b"12345").unwrap();
        std::fs::create_dir_all(root.join("local_thumbnails/ab/cd/efgh")).unwrap();
        std::fs::write(
            root.join("local_thumbnails/ab/cd/efgh/32-32-image-png-crop"),
            b"123",
        )
        .unwrap();
        std::fs::write(
            root.join("local_thumbnails/ab/cd/efgh/96-96-image-png-crop"),
            b"1",
        )
        .unwrap();
        dir
    }

    #[test]
    fn files_and_the_folders_they_leave_empty_go_but_not_the_top_level_ones() {
        let dir = store();
        let root = dir.path();
        let dry = remove_media_files(root, &media_files(), RunMode::DryRun).unwrap();
        assert_eq!(
            dry,
            Removed {
                content: true,
                thumbnails: 2,
                bytes: 9,
                folders: 0
            }
        );
        assert!(root.join("local_content/ab/cd/efgh").exists(), "dry run");
        let done = remove_media_files(root, &media_files(), RunMode::Apply).unwrap();
        // local_content/ab/cd; the thumbnail folder, local_thumbnails/ab/cd and
        // local_thumbnails/ab.
        assert_eq!((done.files(), done.bytes, done.folders), (3, 9, 4));
        assert!(!root.join("local_content/ab/cd").exists());
        assert!(root.join("local_content/ab/zz/other").exists());
        assert!(root.join("local_thumbnails").is_dir());
        assert!(!root.join("local_thumbnails/ab").exists());
        let again = remove_media_files(root, &media_files(), RunMode::Apply).unwrap();
        assert_eq!(again, Removed::default(), "a second removal finds nothing");
    }

    #[test]
    fn links_are_never_followed() {
        let dir = store();
        let root = dir.path();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("cd")).unwrap();
        std::fs::write(outside.path().join("cd/efgh"), b"not Synapse's").unwrap();
        std::fs::remove_dir_all(root.join("local_content/ab")).unwrap();
        symlink(outside.path(), root.join("local_content/ab")).unwrap();
        let error = remove_media_files(root, &media_files(), RunMode::Apply).unwrap_err();
        assert!(error.to_string().contains("never followed"), "{error}");
        assert!(outside.path().join("cd/efgh").exists());

        let dir = store();
        let root = dir.path();
        let thumbnail = root.join("local_thumbnails/ab/cd/efgh/32-32-image-png-crop");
        std::fs::remove_file(&thumbnail).unwrap();
        symlink(outside.path().join("cd/efgh"), &thumbnail).unwrap();
        let error = remove_media_files(root, &media_files(), RunMode::Apply).unwrap_err();
        assert!(
            error.to_string().contains("not a thumbnail file"),
            "{error}"
        );
        assert!(outside.path().join("cd/efgh").exists());
    }
}
