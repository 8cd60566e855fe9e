//! Dendrite's media folder: `<base>/<h0>/<h1>/<h2…>/file` and `thumbnail-*` beside it,
//! `<base>/tmp/<random>/` for uploads in progress. Every hash is validated before it
//! becomes a path, so nothing outside `base_path` is ever touched.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use media_core::run::RunMode;
use rustix::fs::{AtFlags, Dir, FileType, OFlags};
use rustix::io::Errno;

/// The base64hash of a content: exactly 43 characters of base64url (SHA-256 without
/// padding), the only strings this module turns into paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(String);

impl ContentHash {
    /// The length of a base64url SHA-256 without padding.
    pub const LEN: usize = 43;

    /// Validates a base64hash as Dendrite stores it.
    pub fn parse(hash: &str) -> Result<Self, String> {
        let alphabet_only = hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if hash.len() == Self::LEN && alphabet_only {
            Ok(Self(hash.to_owned()))
        } else {
            Err(format!(
                "base64hash {hash:?} is not {} characters of base64url; its directory is not \
                 touched",
                Self::LEN
            ))
        }
    }

    /// The hash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The names of the fan-out folders `<h0>` and `<h1>`.
    fn fanout_names(&self) -> (&str, &str) {
        (&self.0[..1], &self.0[1..2])
    }

    /// The content directory's name inside its fan-out folder.
    fn name_in_fanout(&self) -> &str {
        &self.0[2..]
    }
}

/// A Dendrite media folder (`media_api.base_path`).
#[derive(Debug, Clone)]
pub struct MediaFolder {
    base: PathBuf,
}

/// Files of one content directory, removed or (in a dry run) to be removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemovedFiles {
    /// Whether the directory itself is (or would be) gone.
    pub directory_removed: bool,
    /// Bytes of the files removed.
    pub bytes: u64,
    /// The directory changed after the database was checked, so it was left alone.
    pub changed_since_check: bool,
}

/// File times come from a coarse clock: a change this long before a check may carry a
/// time after it.
const FILE_CLOCK_SLACK: Duration = Duration::from_secs(1);

/// The time to pass to [`MediaFolder::remove_contents`], taken right before the database
/// check that found the directories unused: now, less the coarseness of file times.
pub fn check_time() -> SystemTime {
    SystemTime::now() - FILE_CLOCK_SLACK
}

/// Threads removing content directories at once.
pub const REMOVAL_THREADS: usize = 8;

/// The age below which a tmp or content directory without rows is left alone: an upload
/// may still be writing it, or about to insert its row.
pub const UPLOAD_GRACE: Duration = Duration::from_secs(3600);

/// The age from which a `tmp/` staging directory counts as stale.
pub const STALE_TMP_AGE: Duration = Duration::from_secs(24 * 3600);

impl MediaFolder {
    /// The media folder at `base`.
    pub fn new(base: PathBuf) -> Self {
        Self { base }
    }

    /// The base folder.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The directory of a content: `<base>/<h0>/<h1>/<h2…>`.
    pub fn content_dir(&self, hash: &ContentHash) -> PathBuf {
        self.fanout_dir(hash).join(hash.name_in_fanout())
    }

    /// The fan-out folder of a content: `<base>/<h0>/<h1>`.
    fn fanout_dir(&self, hash: &ContentHash) -> PathBuf {
        let (h0, h1) = hash.fanout_names();
        self.base.join(h0).join(h1)
    }

    /// Whether a content's `file` exists.
    pub fn has_file(&self, hash: &ContentHash) -> bool {
        self.content_dir(hash).join("file").is_file()
    }

    /// Removes content directories: each one's `file` and every `thumbnail-*`, the
    /// directory, then its fan-out parents when empty. A directory already gone is fine.
    /// A directory changed after `checked_at` (when the database said no row uses it;
    /// see [`check_time`]) is left alone: Dendrite is storing those bytes again.
    /// Anything else inside is never removed: the media files go, the foreign entry and
    /// its directory stay, and the result is an error naming it. A directory reached
    /// through a link is left alone (an error too). A dry run only adds up the sizes.
    /// Runs on [`REMOVAL_THREADS`] threads (removing files mostly waits for the disk),
    /// one fan-out folder at a time each, so each folder is opened once. Results come
    /// back in the order of `hashes`.
    pub fn remove_contents(
        &self,
        hashes: &[ContentHash],
        mode: RunMode,
        checked_at: SystemTime,
    ) -> Vec<io::Result<RemovedFiles>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let base = match rustix::fs::open(&self.base, flags, rustix::fs::Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                let error = |_| Err(open_error(e, &self.base));
                return hashes.iter().map(error).collect();
            }
        };
        let base = base.as_fd();
        let mut order: Vec<usize> = (0..hashes.len()).collect();
        order.sort_unstable_by(|&a, &b| hashes[a].cmp(&hashes[b]));
        let groups: Vec<&[usize]> = order
            .chunk_by(|&a, &b| hashes[a].fanout_names() == hashes[b].fanout_names())
            .collect();
        // Each thread takes one stretch of the hash space (threads taking neighbouring
        // fan-out folders instead measured no better on ext4).
        let per_thread = groups.len().div_ceil(REMOVAL_THREADS).max(1);
        let done: Vec<Vec<(usize, io::Result<RemovedFiles>)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = groups
                .chunks(per_thread)
                .map(|stretch| {
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        for group in stretch {
                            let contents: Vec<&ContentHash> =
                                group.iter().map(|&i| &hashes[i]).collect();
                            let results = self.remove_in_fanout(base, &contents, mode, checked_at);
                            done.extend(group.iter().copied().zip(results));
                        }
                        done
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("a removal thread panicked"))
                .collect()
        });
        let mut done: Vec<_> = done.into_iter().flatten().collect();
        done.sort_unstable_by_key(|&(i, _)| i);
        done.into_iter().map(|(_, result)| result).collect()
    }

    /// Removes `contents`, which all lie in one fan-out folder `<h0>/<h1>` of the media
    /// folder `base`: the folder is opened once, each level from the one above without
    /// following links (a linked folder would lead outside the media folder), and every
    /// path below it is resolved from it. Then the folder and `<h0>` go when empty
    /// (another content may still use them).
    fn remove_in_fanout(
        &self,
        base: BorrowedFd<'_>,
        contents: &[&ContentHash],
        mode: RunMode,
        checked_at: SystemTime,
    ) -> Vec<io::Result<RemovedFiles>> {
        let Some(first) = contents.first() else {
            return Vec::new();
        };
        let fanout_path = self.fanout_dir(first);
        let (h0, h1) = first.fanout_names();
        let opened = open_subdir(base, h0)
            .and_then(|first_level| Ok((open_subdir(first_level.as_fd(), h1)?, first_level)));
        let (fanout, first_level) = match opened {
            Ok(fds) => fds,
            Err(Errno::NOENT) => return contents.iter().map(|_| Ok(Default::default())).collect(),
            Err(e) => {
                return contents
                    .iter()
                    .map(|_| Err(open_error(e, &fanout_path)))
                    .collect();
            }
        };
        let results: Vec<_> = contents
            .iter()
            .map(|hash| remove_content_at(fanout.as_fd(), &fanout_path, hash, mode, checked_at))
            .collect();
        let removed_one = results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|r| r.directory_removed));
        if mode == RunMode::Apply && removed_one {
            drop(fanout);
            // Fails while another content (or fan-out folder) is left in it, which is fine.
            if rustix::fs::unlinkat(&first_level, h1, AtFlags::REMOVEDIR).is_ok() {
                rustix::fs::unlinkat(base, h0, AtFlags::REMOVEDIR).ok();
            }
        }
        results
    }

    /// The fan-out folders `<h0>/<h1>` that may hold content directories (at most
    /// 64 × 64 of them), in name order.
    pub fn fanout_dirs(&self) -> io::Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        for (first, _) in subdirectories(&self.base, 1)? {
            for (second, _) in subdirectories(&self.base.join(&first), 1)? {
                pairs.push((first.clone(), second));
            }
        }
        Ok(pairs)
    }

    /// The hashes of the content directories in one fan-out folder that are older than
    /// [`UPLOAD_GRACE`]. Names that do not fit the layout are skipped.
    pub fn content_dirs_in(&self, fanout: &(String, String)) -> io::Result<Vec<ContentHash>> {
        let (first, second) = fanout;
        let parent = self.base.join(first).join(second);
        let now = SystemTime::now();
        let mut hashes = Vec::new();
        for (rest, entry) in subdirectories(&parent, ContentHash::LEN - 2)? {
            if let Ok(hash) = ContentHash::parse(&format!("{first}{second}{rest}"))
                && older_than(entry.metadata(), now, UPLOAD_GRACE)
            {
                hashes.push(hash);
            }
        }
        Ok(hashes)
    }

    /// The names of the staging directories under `tmp/` older than [`STALE_TMP_AGE`].
    /// Only names Dendrite gives them (see [`is_dendrite_tmp_name`]) that are
    /// directories count; anything else there is not Dendrite's and is never listed.
    /// `tmp` itself is opened without following a link: a linked `tmp` is an error
    /// (nothing behind it is listed or removed).
    pub fn stale_tmp_dirs(&self) -> io::Result<Vec<String>> {
        let Some(tmp) = self.open_tmp()? else {
            return Ok(Vec::new());
        };
        let now = SystemTime::now();
        let mut entries = Dir::new(tmp)?;
        let mut stale = Vec::new();
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let Some(name) = entry
                .file_name()
                .to_str()
                .ok()
                .filter(|n| is_dendrite_tmp_name(n))
            else {
                continue;
            };
            let stat = match rustix::fs::statat(entries.fd()?, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory
                && stat_older_than(&stat, now, STALE_TMP_AGE)
            {
                stale.push(name.to_owned());
            }
        }
        stale.sort();
        Ok(stale)
    }

    /// The path of the staging directory `name`, for messages.
    pub fn tmp_path(&self, name: &str) -> PathBuf {
        self.base.join(TMP).join(name)
    }

    /// Removes the stale staging directory `name` (one of [`MediaFolder::stale_tmp_dirs`]):
    /// its `content` file, then the directory. Nothing is followed as a link (neither
    /// `tmp` nor the directory), and a directory holding anything but `content` is left
    /// in place (an error naming the entry). A dry run checks the same and removes
    /// nothing. A directory already gone is fine.
    pub fn remove_tmp_dir(&self, name: &str, mode: RunMode) -> io::Result<()> {
        let path = self.tmp_path(name);
        if !is_dendrite_tmp_name(name) {
            return Err(io::Error::other(format!(
                "{} is not a Dendrite staging directory; left alone",
                path.display()
            )));
        }
        let Some(tmp) = self.open_tmp()? else {
            return Ok(());
        };
        let dir = match open_subdir(tmp.as_fd(), name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(open_error(e, &path)),
        };
        let mut entries = Dir::new(dir)?;
        let mut content = false;
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let file = entry.file_name();
            if file == c"." || file == c".." {
                continue;
            }
            let stat = rustix::fs::statat(entries.fd()?, file, AtFlags::SYMLINK_NOFOLLOW)?;
            if file != c"content" || FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                return Err(io::Error::other(format!(
                    "{} is not a Dendrite staging file; its directory {} is left in place",
                    path.join(file.to_string_lossy().as_ref()).display(),
                    path.display()
                )));
            }
            content = true;
        }
        if mode == RunMode::Apply {
            if content {
                rustix::fs::unlinkat(entries.fd()?, "content", AtFlags::empty())?;
            }
            drop(entries);
            rustix::fs::unlinkat(&tmp, name, AtFlags::REMOVEDIR)?;
        }
        Ok(())
    }

    /// Opens `<base>/tmp` without following a link; `None` when there is none.
    fn open_tmp(&self) -> io::Result<Option<OwnedFd>> {
        let base = self.open_base()?;
        match open_subdir(base.as_fd(), TMP) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(open_error(e, &self.base.join(TMP))),
        }
    }

    /// Opens the base folder (the operator's path: the one path that may be a link).
    fn open_base(&self) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::open(&self.base, flags, rustix::fs::Mode::empty())
            .map_err(|e| open_error(e, &self.base))
    }

    /// What the base folder holds at its top level, by Dendrite's layout: fan-out
    /// folders, `tmp`, a file system's `lost+found`, and anything else (foreign): other
    /// names, and links or files where Dendrite keeps those folders (nothing under the
    /// base folder is followed as a link).
    pub fn top_level(&self) -> io::Result<TopLevel> {
        let mut found = TopLevel::default();
        let mut entries = Dir::new(self.open_base()?)?;
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let kind = match rustix::fs::statat(entries.fd()?, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let dendrites = name
                .to_str()
                .is_ok_and(|n| is_fanout_name(n) || n == TMP || n == LOST_AND_FOUND);
            let shown = name.to_string_lossy();
            match kind {
                FileType::Directory if dendrites && name != c"tmp" && name != c"lost+found" => {
                    found.fanout_folders += 1;
                }
                FileType::Directory if dendrites => {}
                FileType::Symlink => found.foreign.push(format!("{shown} (a link)")),
                _ if dendrites => found.foreign.push(format!("{shown} (not a folder)")),
                _ => found.foreign.push(shown.into_owned()),
            }
        }
        found.foreign.sort();
        Ok(found)
    }
}

/// What the top level of a media folder holds (see [`MediaFolder::top_level`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopLevel {
    /// Fan-out folders `<h0>` (directories named by one base64url character).
    pub fanout_folders: usize,
    /// Entries that are not Dendrite's: other names, or files and links where Dendrite
    /// keeps directories. Sorted.
    pub foreign: Vec<String>,
}

/// The staging folder's name.
const TMP: &str = "tmp";

/// What `mkfs` leaves at the root of ext2/3/4 and similar file systems (a media folder
/// may be the root of its own volume).
const LOST_AND_FOUND: &str = "lost+found";

/// Whether `name` is a fan-out folder's: one base64url character.
fn is_fanout_name(name: &str) -> bool {
    name.len() == 1
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `name` is one Dendrite gives staging directories in `tmp/`: Go's
/// `os.MkdirTemp(dir, "")` names them with a random unsigned number in decimal.
pub fn is_dendrite_tmp_name(name: &str) -> bool {
    (1..=20).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a stat's modification time is more than `age` before `now` (a time in the
/// future, or one that cannot be read, is not old).
fn stat_older_than(stat: &rustix::fs::Stat, now: SystemTime, age: Duration) -> bool {
    let Ok(secs) = u64::try_from(stat.st_mtime) else {
        return false;
    };
    let modified = SystemTime::UNIX_EPOCH + Duration::new(secs, stat.st_mtime_nsec as u32);
    now.duration_since(modified)
        .is_ok_and(|elapsed| elapsed > age)
}

/// Removes one content directory of the fan-out folder `fanout` (at `fanout_path`, for
/// messages): see [`MediaFolder::remove_contents`].
fn remove_content_at(
    fanout: BorrowedFd<'_>,
    fanout_path: &Path,
    hash: &ContentHash,
    mode: RunMode,
    checked_at: SystemTime,
) -> io::Result<RemovedFiles> {
    let name = hash.name_in_fanout();
    let dir = match open_subdir(fanout, name) {
        Ok(fd) => std::fs::File::from(fd),
        Err(Errno::NOENT) => return Ok(RemovedFiles::default()),
        Err(e) => return Err(open_error(e, &fanout_path.join(name))),
    };
    if dir.metadata()?.modified()? > checked_at {
        return Ok(RemovedFiles {
            changed_since_check: true,
            ..RemovedFiles::default()
        });
    }
    let mut entries = Dir::new(OwnedFd::from(dir))?;
    let mut removed = RemovedFiles::default();
    let mut unexpected = None;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let file = entry.file_name();
        if file == c"." || file == c".." {
            continue;
        }
        let stat = rustix::fs::statat(entries.fd()?, file, AtFlags::SYMLINK_NOFOLLOW)?;
        let ours = file
            .to_str()
            .is_ok_and(|f| f == "file" || f.starts_with("thumbnail-"));
        if !ours || FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            unexpected = Some(file.to_string_lossy().into_owned());
            continue;
        }
        removed.bytes += u64::try_from(stat.st_size).unwrap_or(0);
        if mode == RunMode::Apply {
            rustix::fs::unlinkat(entries.fd()?, file, AtFlags::empty())?;
        }
    }
    if let Some(file) = unexpected {
        let dir = fanout_path.join(name);
        return Err(io::Error::other(format!(
            "{} is not a Dendrite media file; its directory {} is left in place",
            dir.join(file).display(),
            dir.display()
        )));
    }
    removed.directory_removed = true;
    if mode == RunMode::Apply {
        drop(entries);
        rustix::fs::unlinkat(fanout, name, AtFlags::REMOVEDIR)?;
    }
    Ok(removed)
}

/// Opens the directory `name` in `dir`, never through a link.
fn open_subdir(dir: BorrowedFd<'_>, name: &str) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, rustix::fs::Mode::empty())
}

/// The error for a directory at `path` that could not be opened.
fn open_error(errno: Errno, path: &Path) -> io::Error {
    match errno {
        Errno::NOTDIR | Errno::LOOP => io::Error::other(format!(
            "{} is not a directory (or is a link); left alone",
            path.display()
        )),
        e => io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())),
    }
}

/// `dir`'s subdirectories whose names are `len` bytes long, by name (none when `dir` is
/// missing).
fn subdirectories(dir: &Path, len: usize) -> io::Result<Vec<(String, std::fs::DirEntry)>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str().filter(|n| n.len() == len) {
            found.push((name.to_owned(), entry));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Whether an entry (its metadata, not following links) was last modified more than
/// `age` before `now`. An entry that cannot be read is not old: it is left alone.
fn older_than(metadata: io::Result<std::fs::Metadata>, now: SystemTime, age: Duration) -> bool {
    metadata
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| now.duration_since(modified).ok())
        .is_some_and(|elapsed| elapsed > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDF-_1";

    /// A database check made after the test wrote its files (file times are coarse).
    fn checked() -> SystemTime {
        check_time() + Duration::from_secs(60)
    }

    fn remove_one(
        folder: &MediaFolder,
        hash: &ContentHash,
        mode: RunMode,
    ) -> io::Result<RemovedFiles> {
        let mut results = folder.remove_contents(std::slice::from_ref(hash), mode, checked());
        results.pop().unwrap()
    }

    fn folder() -> (tempfile::TempDir, MediaFolder) {
        let dir = tempfile::tempdir().unwrap();
        let folder = MediaFolder::new(dir.path().to_owned());
        (dir, folder)
    }

    #[test]
    fn hashes_must_be_43_base64url_characters() {
        assert!(ContentHash::parse(HASH).is_ok());
        for bad in [
            "",
            "../../../../etc/passwd",
            &HASH[1..],
            &format!("{HASH}x"),
            "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASD/../",
            "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDF+/=",
        ] {
            assert!(ContentHash::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn content_directories_fan_out_on_the_first_two_characters() {
        let (_dir, folder) = folder();
        let hash = ContentHash::parse(HASH).unwrap();
        assert_eq!(
            folder.content_dir(&hash),
            folder
                .base()
                .join("q/w/ertyuiopasdfghjklzxcvbnmQWERTYUIOPASDF-_1")
        );
    }

    #[test]
    fn removal_takes_file_thumbnails_directory_and_empty_parents() {
        let (_dir, folder) = folder();
        let hash = ContentHash::parse(HASH).unwrap();
        let content = folder.content_dir(&hash);
        std::fs::create_dir_all(&content).unwrap();
        std::fs::write(content.join("file"), b"12345").unwrap();
        std::fs::write(content.join("thumbnail-32x32-crop"), b"123").unwrap();
        let neighbour = folder.base().join("q/z");
        std::fs::create_dir_all(&neighbour).unwrap();

        let dry = remove_one(&folder, &hash, RunMode::DryRun).unwrap();
        assert_eq!(
            dry,
            RemovedFiles {
                directory_removed: true,
                bytes: 8,
                changed_since_check: false,
            }
        );
        assert!(content.join("file").exists(), "a dry run removed a file");

        let real = folder.remove_contents(std::slice::from_ref(&hash), RunMode::Apply, checked());
        assert_eq!(real.into_iter().next().unwrap().unwrap(), dry);
        assert!(!folder.base().join("q/w").exists());
        assert!(neighbour.exists(), "a parent still in use was removed");
        let again = remove_one(&folder, &hash, RunMode::Apply).unwrap();
        assert_eq!(again, RemovedFiles::default());
    }

    #[test]
    fn foreign_files_keep_their_directory() {
        let (_dir, folder) = folder();
        let hash = ContentHash::parse(HASH).unwrap();
        let content = folder.content_dir(&hash);
        std::fs::create_dir_all(&content).unwrap();
        std::fs::write(content.join("file"), b"1").unwrap();
        std::fs::write(content.join("notes.txt"), b"mine").unwrap();
        let err = remove_one(&folder, &hash, RunMode::Apply).unwrap_err();
        assert!(err.to_string().contains("notes.txt"), "{err}");
        assert!(content.join("notes.txt").exists());
    }

    #[test]
    fn results_follow_the_hashes_across_fanout_folders() {
        let (_dir, folder) = folder();
        let write = |hash: &str, files: &[&str]| {
            let hash = ContentHash::parse(hash).unwrap();
            let content = folder.content_dir(&hash);
            std::fs::create_dir_all(&content).unwrap();
            for file in files {
                std::fs::write(content.join(file), file.as_bytes()).unwrap();
            }
            hash
        };
        let rest = &HASH[2..];
        let hashes = [
            write(&format!("zz{rest}"), &["file", "thumbnail-1x1-crop"]),
            write(&format!("aa{rest}"), &["file", "mine.txt"]),
            ContentHash::parse(&format!("ab{rest}")).unwrap(),
            write(&format!("az{rest}"), &["file"]),
        ];
        let linked = ContentHash::parse(&format!("zy{rest}")).unwrap();
        std::fs::create_dir_all(folder.base().join("z/y")).unwrap();
        std::os::unix::fs::symlink(folder.content_dir(&hashes[0]), folder.content_dir(&linked))
            .unwrap();

        let mut results = folder.remove_contents(
            &[&hashes[..], std::slice::from_ref(&linked)].concat(),
            RunMode::Apply,
            checked(),
        );
        let of_link = results.pop().unwrap().unwrap_err().to_string();
        assert!(of_link.contains("is not a directory"), "{of_link}");
        assert!(folder.content_dir(&linked).is_symlink());
        let results: Vec<_> = results
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect();
        let removed = |bytes| {
            Ok(RemovedFiles {
                directory_removed: true,
                bytes,
                changed_since_check: false,
            })
        };
        assert_eq!(results[0], removed(22));
        assert!(results[1].as_ref().unwrap_err().contains("mine.txt"));
        assert_eq!(results[2], Ok(RemovedFiles::default()));
        assert_eq!(results[3], removed(4));
        assert!(folder.content_dir(&hashes[1]).join("mine.txt").exists());
        assert!(!folder.base().join("a/z").exists());
        assert!(folder.base().join("z/y").exists(), "the link's folder went");
    }

    #[test]
    fn a_directory_changed_after_the_check_is_left_alone() {
        let (_dir, folder) = folder();
        let hash = ContentHash::parse(HASH).unwrap();
        let content = folder.content_dir(&hash);
        std::fs::create_dir_all(&content).unwrap();
        let checked_at = check_time() - Duration::from_secs(60);
        // Dendrite stores the same bytes again after the check.
        std::fs::write(content.join("file"), b"again").unwrap();
        for mode in [RunMode::DryRun, RunMode::Apply] {
            let results = folder.remove_contents(std::slice::from_ref(&hash), mode, checked_at);
            let left = results.into_iter().next().unwrap().unwrap();
            assert!(left.changed_since_check && !left.directory_removed);
            assert_eq!(left.bytes, 0);
        }
        assert_eq!(std::fs::read(content.join("file")).unwrap(), b"again");
    }

    #[test]
    fn a_linked_fanout_folder_is_not_followed() {
        let (_dir, folder) = folder();
        let outside = tempfile::tempdir().unwrap();
        let hash = ContentHash::parse(HASH).unwrap();
        let target = outside.path().join("w").join(hash.name_in_fanout());
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("file"), b"not yours").unwrap();
        std::os::unix::fs::symlink(outside.path(), folder.base().join("q")).unwrap();

        for mode in [RunMode::DryRun, RunMode::Apply] {
            let err = remove_one(&folder, &hash, mode).unwrap_err().to_string();
            assert!(err.contains("is a link"), "{err}");
        }
        assert_eq!(std::fs::read(target.join("file")).unwrap(), b"not yours");
    }

    #[test]
    fn fresh_directories_and_odd_names_are_not_listed() {
        let (_dir, folder) = folder();
        let hash = ContentHash::parse(HASH).unwrap();
        std::fs::create_dir_all(folder.content_dir(&hash)).unwrap();
        std::fs::create_dir_all(folder.base().join("tmp/abc")).unwrap();
        std::fs::create_dir_all(folder.base().join("q/w/short")).unwrap();
        let fanouts = folder.fanout_dirs().unwrap();
        assert_eq!(
            fanouts,
            [("q".to_owned(), "w".to_owned())],
            "tmp is no fan-out folder"
        );
        let seen = folder.content_dirs_in(&fanouts[0]).unwrap();
        assert!(
            seen.is_empty(),
            "a directory younger than the grace period was listed"
        );
        assert!(folder.stale_tmp_dirs().unwrap().is_empty());
        assert!(folder.remove_tmp_dir("q", RunMode::Apply).is_err());
        assert!(folder.base().join("q").exists());
    }

    /// A stale staging directory is removed without following anything: a `tmp` that
    /// is a link is an error (what it points to stays), a link inside `tmp/` is never
    /// listed, and a staging directory holding more than `content` is left in place.
    #[test]
    fn staging_directories_are_removed_without_following_links() {
        let (_dir, folder) = folder();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("1234");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("content"), b"x").unwrap();
        let old = SystemTime::now() - 2 * STALE_TMP_AGE;
        let age = |path: &Path| {
            std::fs::File::open(path)
                .unwrap()
                .set_modified(old)
                .unwrap()
        };
        age(&victim);
        let tmp = folder.base().join("tmp");
        std::os::unix::fs::symlink(outside.path(), &tmp).unwrap();
        let err = folder.stale_tmp_dirs().unwrap_err().to_string();
        assert!(err.contains("is a link"), "{err}");
        for mode in [RunMode::DryRun, RunMode::Apply] {
            assert!(folder.remove_tmp_dir("1234", mode).is_err());
        }
        assert!(victim.join("content").exists());

        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir(&tmp).unwrap();
        std::os::unix::fs::symlink(&victim, tmp.join("5678")).unwrap();
        for (name, files) in [("11", &["content"][..]), ("22", &["content", "extra"])] {
            std::fs::create_dir(tmp.join(name)).unwrap();
            for file in files {
                std::fs::write(tmp.join(name).join(file), b"x").unwrap();
            }
            age(&tmp.join(name));
        }
        std::fs::create_dir(tmp.join("not-dendrites")).unwrap();
        age(&tmp.join("not-dendrites"));
        assert_eq!(folder.stale_tmp_dirs().unwrap(), ["11", "22"]);
        assert!(folder.remove_tmp_dir("5678", RunMode::Apply).is_err());
        folder.remove_tmp_dir("11", RunMode::Apply).unwrap();
        let err = folder
            .remove_tmp_dir("22", RunMode::DryRun)
            .unwrap_err()
            .to_string();
        assert!(err.contains("extra"), "{err}");
        assert!(folder.remove_tmp_dir("22", RunMode::Apply).is_err());
        assert!(!tmp.join("11").exists());
        assert!(tmp.join("22/extra").exists() && tmp.join("not-dendrites").exists());
        assert!(victim.join("content").exists());
    }
}
