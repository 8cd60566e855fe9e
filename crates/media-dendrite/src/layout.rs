//! Dendrite's media folder: `<base>/<h0>/<h1>/<h2…>/file` and `thumbnail-*` beside it,
//! `<base>/tmp/<random>/` for uploads in progress. Every hash is validated before it
//! becomes a path, so nothing outside `base_path` is ever touched.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Whether a destructive step changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Look and count only.
    DryRun,
    /// Change the files and rows.
    Apply,
}

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
        let h = hash.as_str();
        self.base.join(&h[0..1]).join(&h[1..2]).join(&h[2..])
    }

    /// Whether a content's `file` exists.
    pub fn has_file(&self, hash: &ContentHash) -> bool {
        self.content_dir(hash).join("file").is_file()
    }

    /// Removes a content directory: its `file`, every `thumbnail-*`, the directory, then
    /// its parents when empty. A directory already gone is fine. Anything else inside
    /// (or a directory that is a link) is never removed: that is an error naming it. A
    /// dry run only adds up the sizes.
    pub fn remove_content(&self, hash: &ContentHash, mode: Mode) -> io::Result<RemovedFiles> {
        let dir = self.content_dir(hash);
        let meta = match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RemovedFiles::default()),
            other => other?,
        };
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory; left alone",
                dir.display()
            )));
        }
        let mut removed = RemovedFiles::default();
        let mut unexpected = None;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let ours = name
                .to_str()
                .is_some_and(|n| n == "file" || n.starts_with("thumbnail-"));
            let meta = entry.metadata()?;
            if !ours || meta.is_dir() {
                unexpected = Some(entry.path());
                continue;
            }
            removed.bytes += meta.len();
            if mode == Mode::Apply {
                std::fs::remove_file(entry.path())?;
            }
        }
        if let Some(path) = unexpected {
            return Err(io::Error::other(format!(
                "{} is not a Dendrite media file; its directory {} is left in place",
                path.display(),
                dir.display()
            )));
        }
        removed.directory_removed = true;
        if mode == Mode::Apply {
            std::fs::remove_dir(&dir)?;
            // The two fan-out levels go when empty; another content may still use them.
            for parent in dir.ancestors().skip(1).take(2) {
                if std::fs::remove_dir(parent).is_err() {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// [`remove_content`](Self::remove_content) for many contents, on
    /// [`REMOVAL_THREADS`] threads (removing files mostly waits for the disk). Results
    /// come back in the order of `hashes`.
    pub fn remove_contents(
        &self,
        hashes: &[ContentHash],
        mode: Mode,
    ) -> Vec<io::Result<RemovedFiles>> {
        let per_thread = hashes.len().div_ceil(REMOVAL_THREADS).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = hashes
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|hash| self.remove_content(hash, mode))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("a removal thread panicked"))
                .collect()
        })
    }

    /// The fan-out folders `<h0>/<h1>` that may hold content directories (at most
    /// 64 × 64 of them), in name order.
    pub fn fanout_dirs(&self) -> io::Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        for first in read_names(&self.base, 1)? {
            for second in read_names(&self.base.join(&first), 1)? {
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
        for rest in read_names(&parent, ContentHash::LEN - 2)? {
            if let Ok(hash) = ContentHash::parse(&format!("{first}{second}{rest}"))
                && older_than(&parent.join(&rest), now, UPLOAD_GRACE)
            {
                hashes.push(hash);
            }
        }
        Ok(hashes)
    }

    /// The staging directories under `tmp/` older than [`STALE_TMP_AGE`].
    pub fn stale_tmp_dirs(&self) -> io::Result<Vec<PathBuf>> {
        let tmp = self.base.join("tmp");
        let entries = match std::fs::read_dir(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other?,
        };
        let now = SystemTime::now();
        let mut stale = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if older_than(&path, now, STALE_TMP_AGE) {
                stale.push(path);
            }
        }
        Ok(stale)
    }

    /// Removes a stale staging directory (a link is removed, not followed). Only direct
    /// children of `<base>/tmp` are accepted.
    pub fn remove_tmp_dir(&self, path: &Path) -> io::Result<()> {
        if path.parent() != Some(&self.base.join("tmp")) {
            return Err(io::Error::other(format!(
                "{} is not in {}/tmp; left alone",
                path.display(),
                self.base.display()
            )));
        }
        if std::fs::symlink_metadata(path)?.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        }
    }
}

/// The names of `dir`'s subdirectories that are `len` bytes long (none when `dir` is
/// missing).
fn read_names(dir: &Path, len: usize) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str().filter(|n| n.len() == len) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether `path` was last modified more than `age` before `now` (a path that cannot be
/// read is not old: it is left alone).
fn older_than(path: &Path, now: SystemTime, age: Duration) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| now.duration_since(modified).ok())
        .is_some_and(|elapsed| elapsed > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDF-_1";

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

        let dry = folder.remove_content(&hash, Mode::DryRun).unwrap();
        assert_eq!(
            dry,
            RemovedFiles {
                directory_removed: true,
                bytes: 8
            }
        );
        assert!(content.join("file").exists(), "a dry run removed a file");

        let real = folder.remove_contents(std::slice::from_ref(&hash), Mode::Apply);
        assert_eq!(real.into_iter().next().unwrap().unwrap(), dry);
        assert!(!folder.base().join("q/w").exists());
        assert!(neighbour.exists(), "a parent still in use was removed");
        let again = folder.remove_content(&hash, Mode::Apply).unwrap();
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
        let err = folder.remove_content(&hash, Mode::Apply).unwrap_err();
        assert!(err.to_string().contains("notes.txt"), "{err}");
        assert!(content.join("notes.txt").exists());
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
        assert!(folder.remove_tmp_dir(&folder.base().join("q")).is_err());
    }
}
