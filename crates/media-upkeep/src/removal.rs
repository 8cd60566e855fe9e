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
    let content = OpenedPath::to_parent(root, &files.content)?;
    if let Some(bytes) = content.remove_file(mode)? {
        removed.content = true;
        removed.bytes += bytes;
    }
    let thumbnails = OpenedPath::to_entry(root, &files.thumbnails)?;
    let (count, bytes, folder_removed) = thumbnails.remove_folder_of_files(mode)?;
    removed.thumbnails = count;
    removed.bytes += bytes;
    removed.folders += u64::from(folder_removed);
    if mode.applies() {
        removed.folders += content.remove_empty_ancestors()?;
        removed.folders += thumbnails.remove_empty_ancestors()?;
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

/// A path below the media store root and the folders on the way to it, each opened once,
/// one level at a time, without following a link: a removal and the removal of the
/// folders it leaves empty then work on these folders instead of opening them again.
struct OpenedPath<'a> {
    root: &'a Path,
    relative: &'a Path,
    /// The path's names (at least one).
    names: Vec<&'a OsStr>,
    /// `folders[depth]` is the folder `names[..depth]` (`folders[0]` the root), as deep
    /// as asked; fewer when one on the way is missing.
    folders: Vec<OwnedFd>,
}

impl<'a> OpenedPath<'a> {
    /// `relative`, with the folders down to its parent opened.
    fn to_parent(root: &'a Path, relative: &'a Path) -> io::Result<Self> {
        Self::open(root, relative, 1)
    }

    /// `relative`, a folder, with the folders down to it opened.
    fn to_entry(root: &'a Path, relative: &'a Path) -> io::Result<Self> {
        Self::open(root, relative, 0)
    }

    /// Opens the root and the folders of `relative` but its last `short` names.
    fn open(root: &'a Path, relative: &'a Path, short: usize) -> io::Result<Self> {
        let names = names(relative)?;
        if names.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty path names nothing below the media store",
            ));
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut folders = vec![
            rustix::fs::open(root, flags, Mode::empty())
                .map_err(|e| error_at(e, root, "the media store root"))?,
        ];
        for (depth, name) in names[..names.len() - short].iter().enumerate() {
            let parent = folders.last().expect("the root is open");
            match rustix::fs::openat(parent, *name, flags | OFlags::NOFOLLOW, Mode::empty()) {
                Ok(fd) => folders.push(fd),
                Err(Errno::NOENT) => break,
                Err(e) => {
                    let shown: std::path::PathBuf = names[..=depth].iter().collect();
                    return Err(error_at(e, &root.join(shown), "a folder"));
                }
            }
        }
        Ok(Self {
            root,
            relative,
            names,
            folders,
        })
    }

    /// The last name, and the folder holding it when that exists.
    fn entry(&self) -> (&'a OsStr, Option<&OwnedFd>) {
        let depth = self.names.len() - 1;
        (self.names[depth], self.folders.get(depth))
    }

    /// The whole path, for messages.
    fn shown(&self) -> std::path::PathBuf {
        self.root.join(self.relative)
    }

    /// Removes the regular file this path names (in a dry run: sizes it); its size, or
    /// `None` when it is not there.
    fn remove_file(&self, mode: RunMode) -> io::Result<Option<u64>> {
        let (name, Some(dir)) = self.entry() else {
            return Ok(None);
        };
        let size = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {
                stat.st_size as u64
            }
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a regular file (a link, folder, FIFO or device): left alone",
                    self.shown().display()
                )));
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(error_at(e, &self.shown(), "a file")),
        };
        if mode.applies() {
            match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) => {}
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(error_at(e, &self.shown(), "a file")),
            }
        }
        Ok(Some(size))
    }

    /// Removes every regular file of the folder this path names and the folder itself
    /// (in a dry run: counts and sizes them); `(files, bytes, whether the folder was
    /// removed)`. Anything else in it (a sub-folder, a link, a FIFO) is an error, and the
    /// folder stays.
    fn remove_folder_of_files(&self, mode: RunMode) -> io::Result<(u64, u64, bool)> {
        let Some(folder) = self.folders.get(self.names.len()) else {
            return Ok((0, 0, false));
        };
        let shown = self.shown();
        let mut listing = Dir::read_from(folder).map_err(|e| error_at(e, &shown, "a folder"))?;
        let mut files = Vec::new();
        while let Some(entry) = listing.read() {
            let entry = entry.map_err(|e| error_at(e, &shown, "a folder"))?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let stat = match rustix::fs::statat(folder, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(error_at(e, &shown, "a thumbnail")),
            };
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                return Err(io::Error::other(format!(
                    "{} is not a thumbnail file (a link, folder, FIFO or device): its folder \
                     was left in place",
                    shown.join(name.to_string_lossy().as_ref()).display()
                )));
            }
            files.push((name.to_owned(), stat.st_size as u64));
        }
        drop(listing);
        let (mut count, mut bytes) = (0, 0);
        for (name, size) in files {
            if mode.applies() {
                match rustix::fs::unlinkat(folder, &name, AtFlags::empty()) {
                    Ok(()) => {}
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(error_at(e, &shown, "a thumbnail")),
                }
            }
            count += 1;
            bytes += size;
        }
        let mut folder_removed = false;
        if mode.applies()
            && let (name, Some(parent)) = self.entry()
        {
            match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
                Ok(()) => folder_removed = true,
                Err(Errno::NOENT) => {}
                // Synapse wrote a new thumbnail meanwhile: the folder is in use again.
                Err(Errno::NOTEMPTY | Errno::EXIST) => {}
                Err(e) => return Err(error_at(e, &shown, "a folder")),
            }
        }
        Ok((count, bytes, folder_removed))
    }

    /// Removes the empty folder this path names (never a top-level one); whether it was
    /// removed (not when gone, not empty, or top-level).
    fn remove_empty_folder(&self) -> io::Result<bool> {
        let (name, Some(parent)) = self.entry() else {
            return Ok(false);
        };
        if self.names.len() < 2 {
            return Ok(false);
        }
        match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST) => Ok(false),
            Err(e) => Err(error_at(e, &self.shown(), "a folder")),
        }
    }

    /// Removes the folders above this path that are empty, from the deepest up,
    /// stopping at the first one that is not empty and never removing the top-level
    /// folder; how many were removed.
    fn remove_empty_ancestors(&self) -> io::Result<u64> {
        let mut removed = 0;
        // names[..depth] is the folder to remove, through its parent folders[depth - 1];
        // depth 1 is the top-level folder.
        for depth in (2..self.names.len()).rev() {
            let Some(parent) = self.folders.get(depth - 1) else {
                continue;
            };
            match rustix::fs::unlinkat(parent, self.names[depth - 1], AtFlags::REMOVEDIR) {
                Ok(()) => removed += 1,
                Err(Errno::NOENT) => {}
                Err(Errno::NOTEMPTY | Errno::EXIST) => break,
                Err(e) => {
                    let shown: std::path::PathBuf = self.names[..depth].iter().collect();
                    return Err(error_at(e, &self.root.join(shown), "a folder"));
                }
            }
        }
        Ok(removed)
    }
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
    OpenedPath::to_parent(root, relative)?.remove_file(mode)
}

/// Removes every regular file of the folder at `relative` and the folder itself (in a
/// dry run: counts and sizes them); `(files, bytes, whether the folder was removed)`.
/// Anything else in it (a sub-folder, a link, a FIFO) is an error, and the folder stays.
pub(crate) fn remove_folder_of_files(
    root: &Path,
    relative: &Path,
    mode: RunMode,
) -> io::Result<(u64, u64, bool)> {
    OpenedPath::to_entry(root, relative)?.remove_folder_of_files(mode)
}

/// Removes the folders above `relative` that are empty, from the deepest up, stopping at
/// the first one that is not empty and never removing the top-level folder; how many
/// were removed.
pub(crate) fn remove_empty_ancestors(root: &Path, relative: &Path) -> io::Result<u64> {
    OpenedPath::to_parent(root, relative)?.remove_empty_ancestors()
}

/// Removes the empty folder at `relative`, then the folders this left empty (never a
/// top-level one); how many were removed. A folder that is no longer empty stays (0).
pub(crate) fn remove_empty_folder(root: &Path, relative: &Path) -> io::Result<u64> {
    let opened = OpenedPath::to_parent(root, relative)?;
    Ok(if opened.remove_empty_folder()? {
        1 + opened.remove_empty_ancestors()?
    } else {
        0
    })
}

/// When the file or folder at `relative` last changed, in Unix milliseconds (not
/// following a link); `None` when it is gone.
pub(crate) fn changed_ms(root: &Path, relative: &Path) -> io::Result<Option<i64>> {
    let opened = OpenedPath::to_parent(root, relative)?;
    let (name, Some(dir)) = opened.entry() else {
        return Ok(None);
    };
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(
            stat.st_mtime * 1000 + stat.st_mtime_nsec as i64 / 1_000_000,
        )),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(error_at(e, &opened.shown(), "an entry")),
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
