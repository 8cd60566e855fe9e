//! [`ArchiveFolder`]: finds an archive's manifest and streams the media entries of its
//! parts, in any order, without ever turning an entry name into a path.
//!
//! The folder is opened once and every file of it is opened through that descriptor,
//! never through a link, never blocking on a FIFO, and only when it is a regular file:
//! a link, FIFO, device or socket in the folder refuses the archive
//! ([`ArchiveError::NotARegularFile`]), so nothing outside the folder given is ever read.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

use crate::manifest::{INDEX_ENTRY, MANIFEST_ENTRY, Manifest, ManifestRecord};
use crate::{ArchiveError, MANIFEST_PART};

/// The two bytes every gzip file starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Read buffer of a part.
const READ_BUFFER: usize = 1 << 20;

/// An archive folder whose manifest was found and parsed.
#[derive(Debug)]
pub struct ArchiveFolder {
    /// The folder.
    pub dir: PathBuf,
    /// The manifest's head (its records are streamed by [`ArchiveFolder::read_records`]).
    pub manifest: Manifest,
    /// The part the manifest was read from.
    pub manifest_part: PathBuf,
    /// Every gzip file of the folder that may hold media, in part order (the manifest
    /// part of an old archive, which also holds media, included).
    pub parts: Vec<PathBuf>,
    /// Files of the folder that are not gzip files (ignored, worth a warning).
    pub strays: Vec<PathBuf>,
    /// The folder's descriptor: every file of the archive is opened through it.
    fd: OwnedFd,
}

/// One entry of a part, as the visitor of [`ArchiveFolder::read_media`] sees it.
pub enum MediaEntry<'a> {
    /// A regular file; `body` yields its bytes (as many as its tar header declares).
    File {
        /// The entry name.
        name: &'a str,
        /// The entry's bytes.
        body: &'a mut dyn Read,
    },
    /// An entry this reader refuses (a link, a folder, a path instead of a flat name).
    Refused {
        /// The entry name, as far as it could be read.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

impl ArchiveFolder {
    /// Finds the archive in `dir`: `export-manifest.tgz` when present (version 2),
    /// otherwise the first part holding a `manifest.json` (the older layout). Files
    /// that are not gzip are listed as strays, not read. The whole archive's structure
    /// is checked before this returns: the manifest is parsed (streamed, bounded) and
    /// every part is read once to make sure no other part holds a second manifest, so
    /// that a tool refuses a bad archive before it writes anything. (A damaged part is
    /// not an error here: the entries before the damage are still usable, and reading
    /// them reports it.) A link, FIFO, device or socket in the folder is refused with
    /// [`ArchiveError::NotARegularFile`]: the archive is never read through one.
    pub fn open(dir: &Path) -> Result<Self, ArchiveError> {
        let fd = rustix::fs::openat(
            CWD,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::io(dir)(e.into()))?;
        let (mut gzip_files, strays) = classify_folder(dir, &fd)?;
        if gzip_files.is_empty() {
            return Err(ArchiveError::NoArchive {
                dir: dir.to_owned(),
            });
        }
        let v2_manifest = dir.join(MANIFEST_PART);
        let (manifest, manifest_part) = if gzip_files.contains(&v2_manifest) {
            gzip_files.retain(|p| p != &v2_manifest);
            let manifest =
                read_manifest_part(&fd, &v2_manifest)?.ok_or_else(|| ArchiveError::NoManifest {
                    dir: dir.to_owned(),
                })?;
            (manifest, v2_manifest)
        } else {
            find_manifest_in_parts(&fd, dir, &gzip_files)?
        };
        let folder = Self {
            dir: dir.to_owned(),
            manifest,
            manifest_part,
            parts: gzip_files,
            strays,
            fd,
        };
        for part in &folder.parts {
            folder.check_manifests(part)?;
        }
        Ok(folder)
    }

    /// Streams the manifest's records to `visit`, in the manifest's order.
    pub fn read_records(
        &self,
        visit: &mut dyn FnMut(String, ManifestRecord) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let corrupt = corrupt_part(&self.manifest_part);
        let mut archive = open_part(&self.fd, &self.manifest_part)?;
        for entry in archive.entries().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            if entry.path_bytes().as_ref() == MANIFEST_ENTRY.as_bytes() {
                Manifest::read(entry, visit)?;
                return Ok(());
            }
        }
        Err(ArchiveError::NoManifest {
            dir: self.dir.clone(),
        })
    }

    /// Fails when `part` holds a `manifest.json` that is not the one in use (a second
    /// one in the manifest part included), or is no longer a regular file. Stops quietly
    /// at damage.
    fn check_manifests(&self, part: &Path) -> Result<(), ArchiveError> {
        let mut seen = 0;
        let mut archive = match open_part(&self.fd, part) {
            Ok(archive) => archive,
            Err(refused @ ArchiveError::NotARegularFile { .. }) => return Err(refused),
            Err(_) => return Ok(()),
        };
        let Ok(entries) = archive.entries() else {
            return Ok(());
        };
        for entry in entries {
            let Ok(entry) = entry else {
                return Ok(());
            };
            if entry.path_bytes().as_ref() == MANIFEST_ENTRY.as_bytes() {
                seen += 1;
                if part != self.manifest_part || seen > 1 {
                    return Err(ArchiveError::TwoManifests {
                        first: self.manifest_part.clone(),
                        second: part.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Streams the media entries of `part` to `visit`, skipping the manifest and index
    /// of the part that holds them. A `manifest.json` anywhere else is a second
    /// manifest: the read stops with [`ArchiveError::TwoManifests`].
    pub fn read_media<E: From<ArchiveError>>(
        &self,
        part: &Path,
        mut visit: impl FnMut(MediaEntry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut manifests_seen = 0;
        let corrupt = corrupt_part(part);
        let mut archive = open_part(&self.fd, part)?;
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() {
                continue;
            }
            if let Some(reason) = refusal(&name, kind) {
                visit(MediaEntry::Refused { name, reason })?;
                continue;
            }
            let in_manifest_part = part == self.manifest_part;
            match name.as_str() {
                MANIFEST_ENTRY => {
                    manifests_seen += 1;
                    if !in_manifest_part || manifests_seen > 1 {
                        return Err(ArchiveError::TwoManifests {
                            first: self.manifest_part.clone(),
                            second: part.to_owned(),
                        }
                        .into());
                    }
                }
                INDEX_ENTRY if in_manifest_part => {}
                _ => visit(MediaEntry::File {
                    name: &name,
                    body: &mut entry,
                })?,
            }
        }
        Ok(())
    }
}

/// Why an entry is refused, if it is.
fn refusal(name: &str, kind: tar::EntryType) -> Option<&'static str> {
    if kind.is_symlink() || kind.is_hard_link() {
        return Some("links are not allowed in an archive");
    }
    if !kind.is_file() {
        return Some("only regular files are allowed in an archive (this is a folder or device)");
    }
    if name.is_empty() {
        return Some("the entry has no name");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Some("absolute paths are not allowed in an archive");
    }
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Some("`..` is not allowed in an entry name");
    }
    if name.contains(['/', '\\', '\0']) {
        return Some("archives are flat: an entry name may not contain a path");
    }
    None
}

/// Splits the files of the folder `dir` (open as `fd`) into gzip files (in part order)
/// and the rest (sub-folders and files that are not gzip, never read further). A link,
/// FIFO, device or socket is refused before anything is opened.
fn classify_folder(dir: &Path, fd: &OwnedFd) -> Result<(Vec<PathBuf>, Vec<PathBuf>), ArchiveError> {
    let listing = rustix::fs::Dir::read_from(fd).map_err(|e| ArchiveError::io(dir)(e.into()))?;
    let (mut gzip, mut strays) = (Vec::new(), Vec::new());
    for item in listing {
        let item = item.map_err(|e| ArchiveError::io(dir)(e.into()))?;
        let name = OsStr::from_bytes(item.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let path = dir.join(name);
        let kind = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => FileType::from_raw_mode(stat.st_mode),
            // Removed since it was listed.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(ArchiveError::io(&path)(e.into())),
        };
        match kind {
            FileType::Directory => strays.push(path),
            FileType::RegularFile => {
                let mut magic = [0u8; 2];
                let is_gzip = match open_regular(fd, &path) {
                    Ok(mut file) => file.read_exact(&mut magic).is_ok() && magic == GZIP_MAGIC,
                    Err(refused @ ArchiveError::NotARegularFile { .. }) => return Err(refused),
                    // Unreadable: listed with the strays, as a file that is not a part.
                    Err(_) => false,
                };
                if is_gzip {
                    gzip.push(path);
                } else {
                    strays.push(path);
                }
            }
            other => return Err(not_a_regular_file(&path, other)),
        }
    }
    gzip.sort_by_key(|p| natural_key(p));
    strays.sort();
    Ok((gzip, strays))
}

/// Orders `export-part-2.tgz` before `export-part-10.tgz`.
fn natural_key(path: &Path) -> Vec<(String, u64)> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((
                    std::mem::take(&mut text),
                    digits.parse().unwrap_or(u64::MAX),
                ));
                digits.clear();
            }
            text.push(c);
        }
    }
    key.push((text, digits.parse().unwrap_or(0)));
    key
}

/// The refusal of `path`, a `kind` of file no archive is read through.
fn not_a_regular_file(path: &Path, kind: FileType) -> ArchiveError {
    let what = match kind {
        FileType::Symlink => "a link",
        FileType::Fifo => "a FIFO",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Socket => "a socket",
        FileType::Directory => "a folder",
        FileType::RegularFile | FileType::Unknown => "of an unknown kind",
    };
    ArchiveError::NotARegularFile {
        path: path.to_owned(),
        what,
    }
}

/// Opens `path`, a file of the folder open as `dir`, through the folder's descriptor:
/// never through a link (`O_NOFOLLOW`), never blocking on a FIFO (`O_NONBLOCK`, which
/// does not change how a regular file reads), and only when it is a regular file.
fn open_regular(dir: &OwnedFd, path: &Path) -> Result<File, ArchiveError> {
    let name = path.file_name().unwrap_or(path.as_os_str());
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP => not_a_regular_file(path, FileType::Symlink),
        e => ArchiveError::io(path)(e.into()),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| ArchiveError::io(path)(e.into()))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Ok(File::from(fd)),
        other => Err(not_a_regular_file(path, other)),
    }
}

/// A part (a file of the folder open as `dir`) as a stream of tar entries.
fn open_part(
    dir: &OwnedFd,
    part: &Path,
) -> Result<tar::Archive<MultiGzDecoder<BufReader<File>>>, ArchiveError> {
    let file = open_regular(dir, part)?;
    Ok(tar::Archive::new(MultiGzDecoder::new(
        BufReader::with_capacity(READ_BUFFER, file),
    )))
}

/// Turns a read error inside `part` into the error naming the damaged part.
fn corrupt_part(part: &Path) -> impl Fn(std::io::Error) -> ArchiveError + Copy + '_ {
    move |e| ArchiveError::CorruptPart {
        part: part.to_owned(),
        detail: e.to_string(),
    }
}

/// Reads the manifest of a part, if it has one; two manifests in it are an error.
fn read_manifest_part(dir: &OwnedFd, part: &Path) -> Result<Option<Manifest>, ArchiveError> {
    let corrupt = corrupt_part(part);
    let mut archive = open_part(dir, part)?;
    let mut found = None;
    for entry in archive.entries().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        if entry.path_bytes().as_ref() != MANIFEST_ENTRY.as_bytes() {
            continue;
        }
        if found.is_some() {
            return Err(ArchiveError::TwoManifests {
                first: part.to_owned(),
                second: part.to_owned(),
            });
        }
        found = Some(Manifest::read(entry, &mut |_, _| Ok(()))?);
    }
    Ok(found)
}

/// The older layout: the manifest sits in one of the parts (part 1, before the media).
fn find_manifest_in_parts(
    fd: &OwnedFd,
    dir: &Path,
    parts: &[PathBuf],
) -> Result<(Manifest, PathBuf), ArchiveError> {
    for part in parts {
        let corrupt = corrupt_part(part);
        let mut archive = open_part(fd, part)?;
        for entry in archive.entries().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            if entry.path_bytes().as_ref() == MANIFEST_ENTRY.as_bytes() {
                let manifest = Manifest::read(entry, &mut |_, _| Ok(()))?;
                return Ok((manifest, part.clone()));
            }
        }
    }
    Err(ArchiveError::NoManifest {
        dir: dir.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_sort_by_number_not_by_text() {
        let mut parts: Vec<PathBuf> = [
            "export-part-10.tgz",
            "export-part-2.tgz",
            "export-part-1.tgz",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        parts.sort_by_key(|p| natural_key(p));
        let names: Vec<_> = parts
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "export-part-1.tgz",
                "export-part-2.tgz",
                "export-part-10.tgz"
            ]
        );
    }

    #[test]
    fn names_that_could_escape_are_refused() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        assert_eq!(refusal("example.org__abc.png", Regular), None);
        for (name, kind) in [
            ("../etc/passwd", Regular),
            ("/etc/passwd", Regular),
            ("a/b", Regular),
            ("a\\..\\b", Regular),
            ("", Regular),
            ("link", Symlink),
            ("hard", Link),
            ("dir", Directory),
        ] {
            assert!(refusal(name, kind).is_some(), "{name:?} {kind:?}");
        }
    }
}
