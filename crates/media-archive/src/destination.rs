//! [`Staging`]: the folder an export is written into before it becomes the destination.
//!
//! An export is written into a fresh, private folder beside the destination
//! (`.<name>.gdpr-export-XXXXXX`, mode 0700, created exclusively), and only a complete
//! export is swapped in: an atomic exchange with an existing destination (or a rename
//! when there is none). At every instant the destination holds the previous complete
//! export or the new one, never a half-written or emptied one; an export that fails (a
//! full disk, a killed process) leaves the destination as it was.
//!
//! Every file is created through the staging folder's descriptor with exclusive,
//! no-follow creation and its final mode (0600): a link planted under any name is never
//! followed, and nothing is chmod-ed afterwards. A destination that is itself a link is
//! refused.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RenameFlags};

use crate::{ArchiveError, PARTIAL_SUFFIX};

/// Where an export is written, and where it goes once complete.
pub(crate) struct Staging {
    /// The destination, as given.
    destination: PathBuf,
    /// The folder holding the destination.
    parent: OwnedFd,
    /// The destination's name in `parent`.
    name: OsString,
    /// The staging folder (removed on drop unless the export was swapped in).
    staging: Option<tempfile::TempDir>,
    /// The staging folder's descriptor: every file is created through it.
    dir: OwnedFd,
}

/// Whether a file name is one an export writes (finished or partial).
pub(crate) fn is_export_file(name: &str) -> bool {
    let ours = name.starts_with("export-part-") || name.starts_with("export-manifest");
    ours && (name.ends_with(".tgz") || name.ends_with(PARTIAL_SUFFIX))
}

impl Staging {
    /// Checks the destination (a folder or nothing, never a link; holding no export
    /// unless `replace`) and creates the staging folder beside it.
    pub(crate) fn create(destination: &Path, replace: bool) -> Result<Self, ArchiveError> {
        let io_error = ArchiveError::io(destination);
        let name = destination
            .file_name()
            .filter(|n| *n != OsStr::new(".."))
            .ok_or_else(|| {
                io_error(io::Error::other(
                    "the destination must end in a folder name (not /, . or ..)",
                ))
            })?
            .to_owned();
        let parent_path = match destination.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&parent_path)
            .map_err(ArchiveError::io(&parent_path))?;
        let parent = rustix::fs::openat(
            CWD,
            &parent_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::io(&parent_path)(e.into()))?;
        if let Some(existing) = existing_export(&parent, &name, destination)?
            && !replace
        {
            return Err(ArchiveError::DestinationHasExport {
                dir: destination.to_owned(),
                existing,
            });
        }
        let mut prefix = OsString::from(".");
        prefix.push(&name);
        prefix.push(".gdpr-export-");
        let staging = tempfile::Builder::new()
            .prefix(&prefix)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&parent_path)
            .map_err(|e| {
                ArchiveError::io(&parent_path)(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create the folder the export is written into before it \
                         replaces {} ({e}); the folder holding the destination must be \
                         writable",
                        destination.display()
                    ),
                ))
            })?;
        let staging_name = staging
            .path()
            .file_name()
            .expect("a named folder")
            .to_owned();
        let dir = rustix::fs::openat(
            &parent,
            &staging_name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::io(staging.path())(e.into()))?;
        Ok(Self {
            destination: destination.to_owned(),
            parent,
            name,
            staging: Some(staging),
            dir,
        })
    }

    /// The staging folder's path (for temporary files and messages).
    pub(crate) fn path(&self) -> &Path {
        self.staging.as_ref().expect("not swapped in yet").path()
    }

    /// Creates `name` in the staging folder: exclusively, never through a link, readable
    /// and writable by its owner only from the start.
    pub(crate) fn create_file(&self, name: &str) -> Result<File, ArchiveError> {
        rustix::fs::openat(
            &self.dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map(File::from)
        .map_err(|e| ArchiveError::io(&self.path().join(name))(e.into()))
    }

    /// Renames `from` to `to` inside the staging folder, never replacing anything.
    pub(crate) fn rename(&self, from: &str, to: &str) -> Result<(), ArchiveError> {
        rustix::fs::renameat_with(&self.dir, from, &self.dir, to, RenameFlags::NOREPLACE)
            .map_err(|e| ArchiveError::io(&self.path().join(to))(e.into()))
    }

    /// Removes `name` from the staging folder.
    pub(crate) fn remove(&self, name: &str) -> Result<(), ArchiveError> {
        rustix::fs::unlinkat(&self.dir, name, AtFlags::empty())
            .map_err(|e| ArchiveError::io(&self.path().join(name))(e.into()))
    }

    /// Makes the staging folder's entries durable.
    pub(crate) fn sync(&self) -> Result<(), ArchiveError> {
        rustix::fs::fsync(&self.dir).map_err(|e| ArchiveError::io(self.path())(e.into()))
    }

    /// Swaps the complete export in: the staging folder becomes the destination. A
    /// previous destination folder is exchanged atomically; its export files are then
    /// removed and any other file of it is moved into the new destination. Returns the
    /// destination's path.
    pub(crate) fn swap_in(mut self, replace: bool, sync: bool) -> Result<PathBuf, ArchiveError> {
        let staging = self.staging.take().expect("swapped in once");
        let staging_path = staging.path().to_owned();
        let staging_name = staging_path.file_name().expect("a named folder").to_owned();
        let dest = self.destination.clone();
        let fail = |e: rustix::io::Errno| ArchiveError::io(&dest)(e.into());
        // Checked again: the destination may have changed while the export was written.
        let existing = existing_export(&self.parent, &self.name, &dest);
        let previous = match existing {
            Err(e) => {
                self.staging = Some(staging);
                return Err(e);
            }
            Ok(Some(existing)) if !replace => {
                self.staging = Some(staging);
                return Err(ArchiveError::DestinationHasExport {
                    dir: dest.clone(),
                    existing,
                });
            }
            Ok(_) => {
                rustix::fs::statat(&self.parent, &self.name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
            }
        };
        // From here on the staging folder is either the destination or holds the
        // previous one: it must not be removed by the drop of `staging`.
        let _ = staging.keep();
        if !previous {
            rustix::fs::renameat_with(
                &self.parent,
                &staging_name,
                &self.parent,
                &self.name,
                RenameFlags::NOREPLACE,
            )
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&staging_path);
                fail(e)
            })?;
        } else {
            let exchanged = rustix::fs::renameat_with(
                &self.parent,
                &staging_name,
                &self.parent,
                &self.name,
                RenameFlags::EXCHANGE,
            );
            let old_name = match exchanged {
                // `staging_path` now holds the previous destination.
                Ok(()) => staging_name,
                // A filesystem without atomic exchange: the previous destination is
                // moved aside first (both exports stay complete), then the new one in.
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                    let mut aside = staging_name.clone();
                    aside.push(".previous");
                    rustix::fs::renameat_with(
                        &self.parent,
                        &self.name,
                        &self.parent,
                        &aside,
                        RenameFlags::NOREPLACE,
                    )
                    .map_err(fail)?;
                    if let Err(e) = rustix::fs::renameat_with(
                        &self.parent,
                        &staging_name,
                        &self.parent,
                        &self.name,
                        RenameFlags::NOREPLACE,
                    ) {
                        // Put the previous export back where it was.
                        let _ = rustix::fs::renameat_with(
                            &self.parent,
                            &aside,
                            &self.parent,
                            &self.name,
                            RenameFlags::NOREPLACE,
                        );
                        let _ = std::fs::remove_dir_all(&staging_path);
                        return Err(fail(e));
                    }
                    aside
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&staging_path);
                    return Err(fail(e));
                }
            };
            let old_path = staging_path.with_file_name(&old_name);
            self.clear_previous(&old_name, &old_path)?;
        }
        if sync {
            rustix::fs::fsync(&self.parent).map_err(fail)?;
        }
        Ok(dest)
    }

    /// Removes the export files of the previous destination (now at `old_name`), moves
    /// its other files into the new destination, and removes it when it is empty.
    fn clear_previous(&self, old_name: &OsStr, old_path: &Path) -> Result<(), ArchiveError> {
        let old = rustix::fs::openat(
            &self.parent,
            old_name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::io(old_path)(e.into()))?;
        let new = rustix::fs::openat(
            &self.parent,
            &self.name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::io(&self.destination)(e.into()))?;
        let listing = std::fs::read_dir(old_path).map_err(ArchiveError::io(old_path))?;
        for item in listing {
            let item = item.map_err(ArchiveError::io(old_path))?;
            let name = item.file_name();
            let result = if is_export_file(&name.to_string_lossy()) {
                rustix::fs::unlinkat(&old, &name, AtFlags::empty())
            } else {
                rustix::fs::renameat_with(&old, &name, &new, &name, RenameFlags::NOREPLACE)
            };
            if let Err(e) = result {
                tracing::warn!(
                    "{} was left in {}: {e}",
                    name.to_string_lossy(),
                    old_path.display()
                );
            }
        }
        if let Err(e) = rustix::fs::unlinkat(&self.parent, old_name, AtFlags::REMOVEDIR) {
            tracing::warn!(
                "the previous export's folder {} could not be removed: {e}",
                old_path.display()
            );
        }
        Ok(())
    }
}

/// Looks at the destination `name` in `parent` without following it: `None` when it is
/// missing or holds no export, one of its export files otherwise. A link or a file is
/// refused.
fn existing_export(
    parent: &OwnedFd,
    name: &OsStr,
    destination: &Path,
) -> Result<Option<PathBuf>, ArchiveError> {
    let refuse = |why: &str| {
        ArchiveError::io(destination)(io::Error::other(format!(
            "{why}: give the path of a folder (or of one to create)"
        )))
    };
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(ArchiveError::io(destination)(e.into())),
        Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {}
            FileType::Symlink => {
                return Err(refuse(
                    "the destination is a link, which an export never follows",
                ));
            }
            _ => return Err(refuse("the destination is not a folder")),
        },
    }
    let mut found = Vec::new();
    for item in std::fs::read_dir(destination).map_err(ArchiveError::io(destination))? {
        let item = item.map_err(ArchiveError::io(destination))?;
        if is_export_file(&item.file_name().to_string_lossy()) {
            found.push(item.path());
        }
    }
    found.sort();
    Ok(found.into_iter().next())
}
