//! A walk of one of Synapse's six media folders in the order of its rows, so that a
//! check can compare the two side by side, with memory bounded by one folder listing.
//!
//! Every folder is opened with `O_NOFOLLOW` below the media store root (`openat`, one
//! level at a time): a link is reported, never followed. The entries of each folder are
//! sorted by their bytes; since Synapse's fan-out parts have a fixed length
//! (`ab/cd/rest`, `<date>/<rest>`), the media found come out in the byte order of their
//! IDs — the order of `ORDER BY … COLLATE "C"` (SQLite's default `BINARY` collation).
//!
//! What does not fit Synapse's layout (a file in a fan-out folder, a name no Synapse ID
//! has, such as a temporary or partial name) is a [`Found::Stray`] file, whose folder's
//! contents are walked as strays too.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use media_core::ids::MediaId;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

/// A media's key in walk order: its origin (empty for local media) and the ID naming its
/// files (the media ID of a local media, the filesystem ID of a remote one).
pub type RowKey = (String, String);

/// One of the folders Synapse keeps media in, at the top of its media store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// `local_content/ab/cd/rest`: uploads.
    LocalContent,
    /// `local_thumbnails/ab/cd/rest/<thumbnail>`: their thumbnails.
    LocalThumbnails,
    /// `url_cache/<date>/<rest>`: media fetched for URL previews.
    UrlCache,
    /// `url_cache_thumbnails/<date>/<rest>/<thumbnail>`: their thumbnails.
    UrlCacheThumbnails,
    /// `remote_content/<origin>/ab/cd/rest`: the remote cache, by filesystem ID.
    RemoteContent,
    /// `remote_thumbnail/<origin>/ab/cd/rest/<thumbnail>`: its thumbnails.
    RemoteThumbnails,
}

/// Which media rows name what a [`Tree`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowSet {
    /// `local_media_repository` rows without `url_cache`.
    Uploads,
    /// `local_media_repository` rows with `url_cache`.
    UrlPreviews,
    /// `remote_media_cache` rows.
    Remote,
}

/// What each media has in a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// One content file.
    Content,
    /// One folder of thumbnail files.
    Thumbnails,
}

/// One level of a tree's layout, from the top.
#[derive(Debug, Clone, Copy)]
enum Level {
    /// A folder per remote origin.
    Origin,
    /// A two-character fan-out folder.
    Fan,
    /// A `YYYY-MM-DD` folder of URL-preview media.
    Date,
    /// The media's content file.
    File,
    /// The folder of the media's thumbnails.
    ThumbnailFolder,
}

impl Tree {
    /// Every tree, in the order a check walks them.
    pub const ALL: [Tree; 6] = [
        Tree::LocalContent,
        Tree::LocalThumbnails,
        Tree::UrlCache,
        Tree::UrlCacheThumbnails,
        Tree::RemoteContent,
        Tree::RemoteThumbnails,
    ];

    /// Its folder's name at the top of the media store.
    pub fn folder(self) -> &'static str {
        match self {
            Self::LocalContent => "local_content",
            Self::LocalThumbnails => "local_thumbnails",
            Self::UrlCache => "url_cache",
            Self::UrlCacheThumbnails => "url_cache_thumbnails",
            Self::RemoteContent => "remote_content",
            Self::RemoteThumbnails => "remote_thumbnail",
        }
    }

    /// The rows that name what it holds.
    pub fn rows(self) -> RowSet {
        match self {
            Self::LocalContent | Self::LocalThumbnails => RowSet::Uploads,
            Self::UrlCache | Self::UrlCacheThumbnails => RowSet::UrlPreviews,
            Self::RemoteContent | Self::RemoteThumbnails => RowSet::Remote,
        }
    }

    /// Whether it holds content files or thumbnail folders.
    pub fn holds(self) -> Holds {
        match self {
            Self::LocalContent | Self::UrlCache | Self::RemoteContent => Holds::Content,
            _ => Holds::Thumbnails,
        }
    }

    fn levels(self) -> &'static [Level] {
        use Level::*;
        match self {
            Self::LocalContent => &[Fan, Fan, File],
            Self::LocalThumbnails => &[Fan, Fan, ThumbnailFolder],
            Self::UrlCache => &[Date, File],
            Self::UrlCacheThumbnails => &[Date, ThumbnailFolder],
            Self::RemoteContent => &[Origin, Fan, Fan, File],
            Self::RemoteThumbnails => &[Origin, Fan, Fan, ThumbnailFolder],
        }
    }
}

/// What a walk finds; paths are relative to the media store root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A media's content file or (non-empty) thumbnail folder, where Synapse puts it.
    Media {
        /// The key its rows would have.
        key: RowKey,
        /// The file or folder.
        path: PathBuf,
    },
    /// A folder with nothing in it (never a top-level folder).
    EmptyFolder {
        /// The folder.
        path: PathBuf,
    },
    /// A regular file where Synapse never writes one: a misplaced file, or a name no
    /// Synapse ID has (a temporary or partial name).
    Stray {
        /// The file.
        path: PathBuf,
    },
    /// A link, FIFO, socket or device: never followed, never touched.
    NotRegular {
        /// The entry.
        path: PathBuf,
    },
    /// A folder or entry that could not be read.
    Unreadable {
        /// The entry.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// Walks `tree` of the media store at `root`, handing each thing found to `sink` in
/// key order; stops early when `sink` returns `false`. A missing tree is no error;
/// a root that cannot be opened is.
pub fn walk(root: &Path, tree: Tree, sink: &mut dyn FnMut(Found) -> bool) -> io::Result<()> {
    let root_fd = rustix::fs::open(root, DIR_FLAGS.difference(OFlags::NOFOLLOW), Mode::empty())
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {e}", root.display()),
            )
        })?;
    let top = PathBuf::from(tree.folder());
    let mut walker = Walker { sink, going: true };
    match rustix::fs::openat(&root_fd, tree.folder(), DIR_FLAGS, Mode::empty()) {
        Ok(fd) => walker.level(&fd, &top, tree.levels(), &Prefix::default()),
        Err(Errno::NOENT) => {}
        Err(Errno::LOOP | Errno::NOTDIR) => walker.emit(Found::NotRegular { path: top }),
        Err(e) => walker.emit(Found::Unreadable {
            path: top,
            error: e.to_string(),
        }),
    }
    Ok(())
}

/// The key parts gathered on the way down.
#[derive(Debug, Default, Clone)]
struct Prefix {
    origin: String,
    id: String,
}

/// One folder entry.
struct Entry {
    name: CString,
    kind: FileType,
}

impl Entry {
    fn text(&self) -> Option<&str> {
        self.name.to_str().ok()
    }

    fn os(&self) -> &OsStr {
        OsStr::from_bytes(self.name.as_bytes())
    }
}

struct Walker<'s> {
    sink: &'s mut dyn FnMut(Found) -> bool,
    going: bool,
}

impl Walker<'_> {
    fn emit(&mut self, found: Found) {
        if self.going {
            self.going = (self.sink)(found);
        }
    }

    /// Lists `dir` sorted by name bytes; an error is reported and yields `None`.
    fn list(&mut self, dir: &OwnedFd, path: &Path) -> Option<Vec<Entry>> {
        let read = || -> Result<Vec<Entry>, Errno> {
            let mut listing = Dir::read_from(dir)?;
            let mut entries = Vec::new();
            while let Some(entry) = listing.read() {
                let entry = entry?;
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                let kind = match entry.file_type() {
                    FileType::Unknown => {
                        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                            Err(Errno::NOENT) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    kind => kind,
                };
                entries.push(Entry {
                    name: name.to_owned(),
                    kind,
                });
            }
            entries.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
            Ok(entries)
        };
        match read() {
            Ok(entries) => Some(entries),
            Err(e) => {
                self.emit(Found::Unreadable {
                    path: path.to_owned(),
                    error: e.to_string(),
                });
                None
            }
        }
    }

    /// Opens the folder `name` of `dir`, not following a link; reported when it fails.
    fn open(&mut self, dir: &OwnedFd, name: &CStr, path: &Path) -> Option<OwnedFd> {
        match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Some(fd),
            Err(Errno::NOENT) => None,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                self.emit(Found::NotRegular {
                    path: path.to_owned(),
                });
                None
            }
            Err(e) => {
                self.emit(Found::Unreadable {
                    path: path.to_owned(),
                    error: e.to_string(),
                });
                None
            }
        }
    }

    fn empty_folder(&mut self, path: &Path) {
        self.emit(Found::EmptyFolder {
            path: path.to_owned(),
        });
    }

    /// Walks the folder `dir` at `path`, which is at the first of `levels` (the tree's
    /// top folder when `prefix` is empty and `levels` is whole).
    fn level(&mut self, dir: &OwnedFd, path: &Path, levels: &[Level], prefix: &Prefix) {
        let Some(entries) = self.list(dir, path) else {
            return;
        };
        let Some((level, deeper)) = levels.split_first() else {
            return;
        };
        let at_top = path.components().count() == 1;
        if entries.is_empty() && !at_top {
            self.empty_folder(path);
        }
        for entry in entries {
            if !self.going {
                return;
            }
            let child = path.join(entry.os());
            let is_dir = entry.kind == FileType::Directory;
            let text = entry.text().unwrap_or("");
            let fits = match level {
                Level::Origin => is_dir && !text.is_empty() && !text.starts_with('.'),
                Level::Fan => is_dir && text.len() == 2 && text.parse::<MediaId>().is_ok(),
                Level::Date => is_dir && is_date(text),
                Level::File => entry.kind == FileType::RegularFile && valid_id(&prefix.id, text),
                Level::ThumbnailFolder => is_dir && valid_id(&prefix.id, text),
            };
            if !fits {
                self.misfit(dir, &entry, &child);
                continue;
            }
            match level {
                Level::Origin | Level::Fan | Level::Date => {
                    let next = match level {
                        Level::Origin => Prefix {
                            origin: text.to_owned(),
                            id: String::new(),
                        },
                        Level::Date => Prefix {
                            origin: prefix.origin.clone(),
                            id: format!("{text}_"),
                        },
                        _ => Prefix {
                            origin: prefix.origin.clone(),
                            id: format!("{}{text}", prefix.id),
                        },
                    };
                    if let Some(fd) = self.open(dir, &entry.name, &child) {
                        self.level(&fd, &child, deeper, &next);
                    }
                }
                Level::File => self.emit(Found::Media {
                    key: (prefix.origin.clone(), format!("{}{text}", prefix.id)),
                    path: child,
                }),
                Level::ThumbnailFolder => {
                    let Some(fd) = self.open(dir, &entry.name, &child) else {
                        continue;
                    };
                    let Some(thumbnails) = self.list(&fd, &child) else {
                        continue;
                    };
                    if thumbnails.is_empty() {
                        self.empty_folder(&child);
                    } else {
                        self.emit(Found::Media {
                            key: (prefix.origin.clone(), format!("{}{text}", prefix.id)),
                            path: child,
                        });
                    }
                }
            }
        }
    }

    /// An entry that does not fit the layout: a stray file, a folder of strays, or
    /// something that is not a regular file.
    fn misfit(&mut self, dir: &OwnedFd, entry: &Entry, path: &Path) {
        match entry.kind {
            FileType::Directory => {
                if let Some(fd) = self.open(dir, &entry.name, path) {
                    self.strays(&fd, path);
                }
            }
            FileType::RegularFile => self.emit(Found::Stray {
                path: path.to_owned(),
            }),
            _ => self.emit(Found::NotRegular {
                path: path.to_owned(),
            }),
        }
    }

    /// Everything in a folder that does not fit the layout.
    fn strays(&mut self, dir: &OwnedFd, path: &Path) {
        let Some(entries) = self.list(dir, path) else {
            return;
        };
        if entries.is_empty() {
            self.empty_folder(path);
        }
        for entry in entries {
            if !self.going {
                return;
            }
            let child = path.join(entry.os());
            self.misfit(dir, &entry, &child);
        }
    }
}

/// Whether `prefix` + `rest` is a media ID Synapse could have written here.
fn valid_id(prefix: &str, rest: &str) -> bool {
    !rest.is_empty() && format!("{prefix}{rest}").parse::<MediaId>().is_ok()
}

/// `YYYY-MM-DD`, as Synapse names URL-cache folders.
fn is_date(text: &str) -> bool {
    text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn found(root: &Path, tree: Tree) -> Vec<Found> {
        let mut all = Vec::new();
        walk(root, tree, &mut |found| {
            all.push(found);
            true
        })
        .unwrap();
        all
    }

    fn media(origin: &str, id: &str, path: &str) -> Found {
        Found::Media {
            key: (origin.into(), id.into()),
            path: path.into(),
        }
    }

    #[test]
    fn media_come_in_byte_order_of_their_ids_and_misfits_are_strays() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "local_content/ab/cd/zzz",
            "local_content/ab/cd/Azz",
            "local_content/AB/cd/efg",
            "local_content/ab/partial.tmp",
            "local_content/ab/cd/.upload-123",
        ] {
            std::fs::create_dir_all(root.join(file).parent().unwrap()).unwrap();
            std::fs::write(root.join(file), b"1234").unwrap();
        }
        std::fs::create_dir_all(root.join("local_content/ef/gh")).unwrap();
        symlink("/etc", root.join("local_content/zz")).unwrap();
        let all = found(root, Tree::LocalContent);
        let media_found: Vec<&Found> = all
            .iter()
            .filter(|f| matches!(f, Found::Media { .. }))
            .collect();
        assert_eq!(
            media_found,
            [
                &media("", "ABcdefg", "local_content/AB/cd/efg"),
                &media("", "abcdAzz", "local_content/ab/cd/Azz"),
                &media("", "abcdzzz", "local_content/ab/cd/zzz"),
            ]
        );
        let others: Vec<String> = all
            .iter()
            .filter_map(|f| match f {
                Found::Stray { path } => Some(format!("stray {}", path.display())),
                Found::EmptyFolder { path } => Some(format!("empty {}", path.display())),
                Found::NotRegular { path } => Some(format!("link {}", path.display())),
                _ => None,
            })
            .collect();
        assert_eq!(
            others,
            [
                "stray local_content/ab/cd/.upload-123",
                "stray local_content/ab/partial.tmp",
                "empty local_content/ef/gh",
                "link local_content/zz",
            ]
        );
    }

    #[test]
    fn remote_and_url_cache_keys_and_thumbnail_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "remote_thumbnail/b.example/ab/cd/efgh/32-32-image-png-crop",
            "remote_thumbnail/a.example:8448/ab/cd/efgh/32-32-image-png-crop",
            "url_cache/2024-01-31/AbCd",
        ] {
            std::fs::create_dir_all(root.join(file).parent().unwrap()).unwrap();
            std::fs::write(root.join(file), b"1").unwrap();
        }
        std::fs::create_dir_all(root.join("remote_thumbnail/b.example/ab/cd/empty")).unwrap();
        assert_eq!(
            found(root, Tree::RemoteThumbnails)[..2],
            [
                media(
                    "a.example:8448",
                    "abcdefgh",
                    "remote_thumbnail/a.example:8448/ab/cd/efgh"
                ),
                media(
                    "b.example",
                    "abcdefgh",
                    "remote_thumbnail/b.example/ab/cd/efgh"
                ),
            ]
        );
        assert!(matches!(
            &found(root, Tree::RemoteThumbnails)[2],
            Found::EmptyFolder { path } if path == Path::new("remote_thumbnail/b.example/ab/cd/empty")
        ));
        assert_eq!(
            found(root, Tree::UrlCache),
            [media("", "2024-01-31_AbCd", "url_cache/2024-01-31/AbCd")]
        );
        assert_eq!(found(root, Tree::LocalContent), [], "a missing tree");
    }
}
