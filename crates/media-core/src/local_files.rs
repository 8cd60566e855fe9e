//! Opening files below a folder the operator gave, without ever leaving it.
//!
//! A path below the root is resolved so that a symbolic link anywhere below the root (to
//! a file, or to a folder) is refused instead of followed: by the kernel in one call where
//! it can (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, Linux 5.6 and later),
//! else one component at a time (`openat` with `O_NOFOLLOW`). Both refuse the same paths
//! with the same errors; the first saves a system call and a descriptor per folder on the
//! way, which an import pays for every file it reads and every blob it places. The file
//! itself is opened with `O_NONBLOCK`, so that a FIFO or a device cannot block the open,
//! and then must be a regular file (`fstat`). The root itself is the operator's choice
//! and may be a link.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Opens the regular file at `relative` below `root`, following no link below `root`.
/// `folder` names the root in messages ("the media store", "the datastore").
///
/// Errors: [`io::ErrorKind::NotFound`] when a component is missing; otherwise an error
/// that names the path and says what is wrong (a link, a FIFO, a device, a folder).
pub fn open_regular_beneath(root: &Path, relative: &Path, folder: &str) -> io::Result<File> {
    open_regular_with(root, relative, folder, Resolution::available())
}

/// [`open_regular_beneath`], resolving the path as `resolution` says.
fn open_regular_with(
    root: &Path,
    relative: &Path,
    folder: &str,
    resolution: Resolution,
) -> io::Result<File> {
    let shown = || root.join(relative).display().to_string();
    let (file_name, folders) =
        split_plain(relative).map_err(|e| e.into_io(root, relative, folder))?;
    let root_fd =
        open_root(root).map_err(|errno| WalkError::Root(errno).into_io(root, relative, folder))?;
    let file_flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = open_below(root_fd.as_fd(), &folders, file_name, file_flags, resolution)
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

/// Why a path below a root could not be opened.
enum WalkError {
    /// The relative path is not a plain path of names.
    NotPlain,
    /// The relative path names no file.
    NoFileName,
    /// The root itself could not be opened.
    Root(Errno),
}

impl WalkError {
    /// The error for people, naming the path.
    fn into_io(self, root: &Path, relative: &Path, folder: &str) -> io::Error {
        let shown = root.join(relative).display().to_string();
        match self {
            Self::NotPlain => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{shown}: not a plain path below {folder}"),
            ),
            Self::NoFileName => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{shown}: names no file"),
            ),
            Self::Root(errno) => refused(errno, &root.display().to_string(), folder),
        }
    }
}

/// Opens the folder the operator gave (following a link there: it is the operator's).
fn open_root(root: &Path) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The file name of a plain relative path and the folders on the way to it.
fn split_plain(relative: &Path) -> Result<(&OsStr, Vec<&OsStr>), WalkError> {
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            _ => return Err(WalkError::NotPlain),
        }
    }
    let file_name = parts.pop().ok_or(WalkError::NoFileName)?;
    Ok((file_name, parts))
}

/// What a walk below a folder does with a folder on the way that is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Stop with `NOENT`.
    Refuse,
    /// Create it.
    Create,
}

/// How a path below a folder is resolved without following links (see the [module
/// documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    /// The whole path in one `openat2` call.
    Kernel,
    /// One `openat` per component.
    Components,
}

/// Set once `openat2` turned out to be missing or refused (an older kernel, or a seccomp
/// filter that does not know it): every later resolution walks the components.
static KERNEL_RESOLUTION_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

impl Resolution {
    /// The fastest resolution this system has.
    fn available() -> Self {
        if cfg!(target_os = "linux") && !KERNEL_RESOLUTION_UNAVAILABLE.load(Ordering::Relaxed) {
            Self::Kernel
        } else {
            Self::Components
        }
    }

    /// Whether to ask the kernel now: asked for, and not found missing since.
    fn asks_kernel(self) -> bool {
        self == Self::Kernel && !KERNEL_RESOLUTION_UNAVAILABLE.load(Ordering::Relaxed)
    }
}

/// Opens `folders`/`name` below `start` with `flags` (`O_NOFOLLOW` is added), following
/// no link on the way or at the end, as `resolution` says.
fn open_below(
    start: BorrowedFd<'_>,
    folders: &[&OsStr],
    name: &OsStr,
    flags: OFlags,
    resolution: Resolution,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::NOFOLLOW;
    if !folders.is_empty()
        && let Some(opened) = open_in_kernel(
            start,
            folders.iter().copied().chain([name]),
            flags,
            resolution,
        )
    {
        return opened;
    }
    let parent = open_folders_below(start, folders, Missing::Refuse, Resolution::Components)?;
    rustix::fs::openat(
        parent.as_ref().map_or(start, |fd| fd.as_fd()),
        name,
        flags,
        Mode::empty(),
    )
}

/// `parts` below `start` opened in one `openat2` call, when `resolution` asks the kernel
/// and the kernel has the call; `None` when the components are to be walked instead.
fn open_in_kernel<'a>(
    start: BorrowedFd<'_>,
    parts: impl IntoIterator<Item = &'a OsStr>,
    flags: OFlags,
    resolution: Resolution,
) -> Option<Result<OwnedFd, Errno>> {
    if !resolution.asks_kernel() {
        return None;
    }
    let path: PathBuf = parts.into_iter().collect();
    match openat2_beneath(start, &path, flags) {
        Err(errno) if kernel_resolution_missing(errno) => None,
        opened => Some(opened),
    }
}

/// One `openat2` call that refuses links and anything outside `start`.
#[cfg(target_os = "linux")]
fn openat2_beneath(start: BorrowedFd<'_>, path: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    use rustix::fs::ResolveFlags;
    rustix::fs::openat2(
        start,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// No `openat2` outside Linux: every resolution walks the components.
#[cfg(not(target_os = "linux"))]
fn openat2_beneath(_: BorrowedFd<'_>, _: &Path, _: OFlags) -> Result<OwnedFd, Errno> {
    Err(Errno::NOSYS)
}

/// Whether `errno` from `openat2` says the call itself is missing or refused, not the
/// path (and records it, so that later resolutions walk the components at once).
fn kernel_resolution_missing(errno: Errno) -> bool {
    // ENOSYS: before Linux 5.6; EPERM: a seccomp filter's answer to an unknown call;
    // E2BIG and EINVAL: a kernel that does not know these flags.
    let missing = matches!(
        errno,
        Errno::NOSYS | Errno::PERM | Errno::TOOBIG | Errno::INVAL
    );
    if missing {
        KERNEL_RESOLUTION_UNAVAILABLE.store(true, Ordering::Relaxed);
    }
    missing
}

/// Opens `folders` below `start`, following no link (creating a missing one when
/// `missing` says so), as `resolution` says; `None` when there are none (the parent is
/// `start` itself).
fn open_folders_below(
    start: BorrowedFd<'_>,
    folders: &[&OsStr],
    missing: Missing,
    resolution: Resolution,
) -> Result<Option<OwnedFd>, Errno> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // A single folder is one `openat` either way.
    if folders.len() > 1
        && let Some(opened) = open_in_kernel(start, folders.iter().copied(), dir_flags, resolution)
    {
        match opened {
            Ok(parent) => return Ok(Some(parent)),
            // Created one at a time below.
            Err(Errno::NOENT) if missing == Missing::Create => {}
            Err(errno) => return Err(errno),
        }
    }
    let mut opened: Option<OwnedFd> = None;
    for part in folders {
        let from = opened.as_ref().map_or(start, |fd| fd.as_fd());
        let next = match rustix::fs::openat(from, *part, dir_flags, Mode::empty()) {
            Err(Errno::NOENT) if missing == Missing::Create => {
                match rustix::fs::mkdirat(from, *part, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(errno) => return Err(errno),
                }
                rustix::fs::openat(from, *part, dir_flags, Mode::empty())?
            }
            next => next?,
        };
        opened = Some(next);
    }
    Ok(opened)
}

/// A folder the operator gave, opened once, to place or remove many files below it
/// without following any link below it (a link on the way is refused, not followed out
/// of it).
#[derive(Debug)]
pub struct RootFolder {
    fd: OwnedFd,
    path: PathBuf,
    folder: &'static str,
    resolution: Resolution,
}

impl RootFolder {
    /// Opens `root` (which may itself be a link: it is the operator's choice); `folder`
    /// names it in messages ("the datastore").
    pub fn open(root: &Path, folder: &'static str) -> io::Result<Self> {
        let fd =
            open_root(root).map_err(|errno| refused(errno, &root.display().to_string(), folder))?;
        Ok(Self {
            fd,
            path: root.to_path_buf(),
            folder,
            resolution: Resolution::available(),
        })
    }

    /// The length of the regular file at `relative` below the root, reached without
    /// following any link (as [`open_regular_beneath`] would open it), without opening it.
    /// `None` when there is no regular file there: a missing component, or a link, a
    /// folder, a FIFO or a device on the way or in its place.
    ///
    /// Errors: only what keeps the question from being answered (an unreadable folder, a
    /// path that is not plain).
    pub fn regular_file_len(&self, relative: &Path) -> io::Result<Option<u64>> {
        let (parent, file_name) = match self.parent_of(relative, Missing::Refuse)? {
            Ok(found) => found,
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR | Errno::MLINK) => return Ok(None),
            Err(errno) => return Err(self.refused_at(errno, relative)),
        };
        match rustix::fs::statat(&parent, file_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {
                Ok(Some(stat.st_size as u64))
            }
            Ok(_) | Err(Errno::NOENT) => Ok(None),
            Err(errno) => Err(self.refused_at(errno, relative)),
        }
    }

    /// Hard-links the file at `existing` (a path of the caller's own, on the same
    /// filesystem) to `relative` below the root, creating the missing folders on the way
    /// and following no link below the root. Returns the folder it is now linked in (to
    /// sync it), or `None` when an entry named `relative` exists already: nothing is
    /// replaced. On a filesystem without hard links the file is moved instead, which
    /// replaces an entry of that name (callers place the same bytes under one name).
    pub fn link_file(&self, existing: &Path, relative: &Path) -> io::Result<Option<File>> {
        let (parent, file_name) = self
            .parent_of(relative, Missing::Create)?
            .map_err(|errno| self.refused_at(errno, relative))?;
        let linked = rustix::fs::linkat(
            rustix::fs::CWD,
            existing,
            &parent,
            file_name,
            AtFlags::empty(),
        );
        let placed = match linked {
            Err(Errno::EXIST) => return Ok(None),
            Err(Errno::PERM | Errno::OPNOTSUPP) => {
                rustix::fs::renameat(rustix::fs::CWD, existing, &parent, file_name)
            }
            linked => linked,
        };
        placed.map_err(|errno| self.refused_at(errno, relative))?;
        Ok(Some(File::from(parent)))
    }

    /// Opens the folder that holds `relative` below the root, following no link (and
    /// creating the missing folders on the way when `missing` says so), and returns it
    /// with the file name left. The outer error is a path that is not plain; the inner
    /// one, what stopped the walk.
    fn parent_of<'a>(
        &self,
        relative: &'a Path,
        missing: Missing,
    ) -> io::Result<Result<(OwnedFd, &'a OsStr), Errno>> {
        let (file_name, folders) =
            split_plain(relative).map_err(|e| e.into_io(&self.path, relative, self.folder))?;
        Ok(
            match open_folders_below(self.fd.as_fd(), &folders, missing, self.resolution) {
                Ok(Some(parent)) => Ok((parent, file_name)),
                Ok(None) => Ok((self.fd.try_clone()?, file_name)),
                Err(errno) => Err(errno),
            },
        )
    }

    /// The error for `errno` met on the way to `relative`, naming it.
    fn refused_at(&self, errno: Errno, relative: &Path) -> io::Error {
        refused(
            errno,
            &self.path.join(relative).display().to_string(),
            self.folder,
        )
    }

    /// Removes the entry at `relative` below the root (a file, or a link itself, never
    /// what it points to), reached without following any link; `false` when nothing is
    /// there. A link (or a file) where a folder should be is an error naming it.
    pub fn remove_file(&self, relative: &Path) -> io::Result<bool> {
        let (parent, file_name) = match self.parent_of(relative, Missing::Refuse)? {
            Ok(found) => found,
            Err(Errno::NOENT) => return Ok(false),
            Err(errno) => return Err(self.refused_at(errno, relative)),
        };
        match rustix::fs::unlinkat(&parent, file_name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(errno) => Err(self.refused_at(errno, relative)),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A root with `a/file` (5 bytes), `a/link` → `a/file`, `linked` → `a`, `a/folder`,
    /// `a/folder/deep` (4 bytes) and `a/fifo`.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(a.join("folder")).unwrap();
        std::fs::write(a.join("file"), b"bytes").unwrap();
        std::fs::write(a.join("folder/deep"), b"deep").unwrap();
        symlink(a.join("file"), a.join("link")).unwrap();
        symlink(&a, dir.path().join("linked")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            a.join("fifo"),
            FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        dir
    }

    /// Both ways of resolving a path: each test runs with each, so the walk that older
    /// kernels get is held to the same answers as `openat2`.
    const RESOLUTIONS: [Resolution; 2] = [Resolution::Kernel, Resolution::Components];

    /// The test folder `dir`, opened to resolve paths as `resolution` says.
    fn root_folder(dir: &tempfile::TempDir, resolution: Resolution) -> RootFolder {
        RootFolder {
            resolution,
            ..RootFolder::open(dir.path(), "the test folder").unwrap()
        }
    }

    #[test]
    fn this_system_resolves_in_the_kernel() {
        // Else the tests below would run the component walk twice: a Linux without
        // `openat2` (before 5.6) is not what this toolkit is tested on.
        let dir = tree();
        let root = root_folder(&dir, Resolution::available());
        assert_eq!(root.regular_file_len(Path::new("a/file")).unwrap(), Some(5));
        if cfg!(target_os = "linux") {
            assert_eq!(Resolution::available(), Resolution::Kernel);
        }
    }

    #[test]
    fn only_a_regular_file_reached_without_links_has_a_length() {
        for resolution in RESOLUTIONS {
            a_length_only_for_a_regular_file_reached_without_links(resolution);
        }
    }

    fn a_length_only_for_a_regular_file_reached_without_links(resolution: Resolution) {
        let dir = tree();
        let root = root_folder(&dir, resolution);
        let len = |relative: &str| root.regular_file_len(Path::new(relative)).unwrap();
        assert_eq!(len("a/file"), Some(5));
        assert_eq!(len("./a/file"), Some(5));
        assert_eq!(len("a/folder/deep"), Some(4));
        for not_a_file in [
            "a/missing",
            "missing/file",
            "a/link",
            "linked/file",
            "a/folder",
            "linked/folder/deep",
            "a/missing/deep",
            "a/link/below/x",
        ] {
            assert_eq!(len(not_a_file), None, "{not_a_file}");
        }
        assert_eq!(len("a/fifo"), None);
        assert_eq!(len("a/file/below"), None, "a file on the way");
        let outside = root.regular_file_len(Path::new("../x"));
        assert!(
            outside
                .unwrap_err()
                .to_string()
                .contains("not a plain path")
        );
    }

    #[test]
    fn opening_refuses_links_and_anything_but_a_regular_file() {
        for resolution in RESOLUTIONS {
            opening_refuses_links_and_non_files(resolution);
        }
    }

    fn opening_refuses_links_and_non_files(resolution: Resolution) {
        let dir = tree();
        let open = |relative: &str| {
            open_regular_with(
                dir.path(),
                Path::new(relative),
                "the test folder",
                resolution,
            )
        };
        let mut bytes = String::new();
        std::io::Read::read_to_string(&mut open("a/file").unwrap(), &mut bytes).unwrap();
        assert_eq!(bytes, "bytes");
        assert!(open("a/folder/deep").is_ok());
        for link in ["a/link", "linked/file", "linked/folder/deep"] {
            let error = open(link).unwrap_err().to_string();
            assert!(error.contains("never followed"), "{link}: {error}");
        }
        for missing in ["a/missing", "missing/a/file"] {
            assert_eq!(open(missing).unwrap_err().kind(), io::ErrorKind::NotFound);
        }
        let error = open("a/fifo").unwrap_err().to_string();
        assert!(error.contains("a FIFO"), "{error}");
        let error = open("").unwrap_err().to_string();
        assert!(error.contains("names no file"), "{error}");
    }

    #[test]
    fn removal_follows_no_link_and_removes_a_link_itself_not_its_target() {
        for resolution in RESOLUTIONS {
            removal_follows_no_link(resolution);
        }
    }

    fn removal_follows_no_link(resolution: Resolution) {
        let dir = tree();
        let root = root_folder(&dir, resolution);
        for through_a_link in ["linked/file", "linked/folder/deep"] {
            let error = root.remove_file(Path::new(through_a_link)).unwrap_err();
            assert!(error.to_string().contains("never followed"), "{error}");
        }
        assert!(
            dir.path().join("a/file").exists() && dir.path().join("a/folder/deep").exists(),
            "removed through a linked folder"
        );
        assert!(root.remove_file(Path::new("a/link")).unwrap());
        assert!(
            dir.path().join("a/file").exists(),
            "a link's target removed"
        );
        assert!(!dir.path().join("a/link").exists());
        assert!(!root.remove_file(Path::new("a/missing")).unwrap());
        assert!(!root.remove_file(Path::new("missing/file")).unwrap());
        assert!(root.remove_file(Path::new("a/folder")).is_err());
        assert!(dir.path().join("a/folder").is_dir());
        let outside = root.remove_file(Path::new("../x")).unwrap_err();
        assert!(
            outside.to_string().contains("not a plain path"),
            "{outside}"
        );
        assert!(root.remove_file(Path::new("a/file")).unwrap());
        assert!(!dir.path().join("a/file").exists());
    }

    #[test]
    fn placing_creates_missing_folders_follows_no_link_and_replaces_nothing() {
        for resolution in RESOLUTIONS {
            placing_follows_no_link(resolution);
        }
    }

    fn placing_follows_no_link(resolution: Resolution) {
        let dir = tree();
        let root = root_folder(&dir, resolution);
        let source = dir.path().join("source");
        std::fs::write(&source, b"new").unwrap();
        assert!(
            root.link_file(&source, Path::new("b/c/linked"))
                .unwrap()
                .is_some()
        );
        assert_eq!(
            std::fs::read(dir.path().join("b/c/linked")).unwrap(),
            b"new"
        );
        assert!(
            root.link_file(&source, Path::new("a/file"))
                .unwrap()
                .is_none()
        );
        assert_eq!(std::fs::read(dir.path().join("a/file")).unwrap(), b"bytes");
        for through_a_link in ["linked/new", "linked/folder/new", "a/link/new"] {
            let error = root
                .link_file(&source, Path::new(through_a_link))
                .unwrap_err();
            assert!(error.to_string().contains("never followed"), "{error}");
        }
        assert!(!dir.path().join("a/new").exists(), "placed through a link");
        assert!(!dir.path().join("a/folder/new").exists());
    }
}
