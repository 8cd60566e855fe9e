//! The checks that refuse a run before it changes anything, because the media folder is
//! not the one Dendrite's rows describe:
//!
//! * `base_path` is the root directory, or holds top-level entries that are not
//!   Dendrite's (anything but fan-out folders, `tmp` and `lost+found`): it is not a
//!   Dendrite media folder, and a purge of it would touch other programs' files.
//! * The folder looks unmounted: `/etc/fstab` (or `--fstab`) names a mount point at or
//!   above `base_path` and nothing is mounted there now; or the media table has rows
//!   and the folder has no fan-out folder at all; or more than half of
//!   [`SAMPLE_ROWS`] media rows picked at random have no file. A missing file is never a
//!   licence to delete rows in bulk: the rows-without-file repair (`--fix`) only runs
//!   once these checks passed.
//! * The mirror image: the media database has no rows at all while the folder holds
//!   media (the config names the wrong, or a fresh, database): `--fix` would remove
//!   every directory as "no row uses it".
//!
//! Every refusal is a [`CleanError::Refused`]: exit 2, nothing changed.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::db::DendriteDb;
use crate::error::CleanError;
use crate::layout::{ContentHash, MediaFolder};

/// Media rows sampled at random to tell a folder whose files are there from one that
/// is not mounted.
pub const SAMPLE_ROWS: i64 = 200;

/// Foreign top-level entries named in a refusal, at most.
const NAMED_ENTRIES: usize = 10;

/// Where the mount tables are read: what should be mounted, and what is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountTables {
    /// The file systems that should be mounted (`/etc/fstab`). A missing file means
    /// none.
    pub fstab: PathBuf,
    /// What is mounted now (`/proc/self/mountinfo`). When it cannot be read, the fstab
    /// check is skipped.
    pub mountinfo: PathBuf,
}

impl Default for MountTables {
    fn default() -> Self {
        Self {
            fstab: PathBuf::from("/etc/fstab"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
        }
    }
}

fn refused(folder: &MediaFolder, reason: String) -> CleanError {
    CleanError::Refused {
        path: folder.base().to_owned(),
        reason,
    }
}

/// What every "looks unmounted" refusal tells the operator to do.
const UNMOUNTED_NEXT: &str = "Nothing was changed. Check that the volume holding \
     media_api.base_path is mounted and that base_path (relative to --workdir) is right, \
     then run again.";

/// Refuses a `base_path` that is the root directory or holds entries Dendrite does not
/// make (see the module's documentation).
pub fn refuse_foreign_folder(folder: &MediaFolder) -> Result<(), CleanError> {
    let io = |source| CleanError::Io {
        path: folder.base().to_owned(),
        source,
    };
    let canonical = std::fs::canonicalize(folder.base()).map_err(io)?;
    if canonical.parent().is_none() {
        return Err(refused(
            folder,
            "is the root directory, not a Dendrite media folder: set media_api.base_path \
             to the folder Dendrite stores media in. Nothing was changed."
                .to_owned(),
        ));
    }
    let top = folder.top_level().map_err(io)?;
    if !top.foreign.is_empty() {
        let mut named: Vec<&str> = top
            .foreign
            .iter()
            .take(NAMED_ENTRIES)
            .map(String::as_str)
            .collect();
        if top.foreign.len() > NAMED_ENTRIES {
            named.push("…");
        }
        return Err(refused(
            folder,
            format!(
                "holds {} top-level entries that are not Dendrite's ({}): is \
                 media_api.base_path Dendrite's media folder? Dendrite keeps only one-letter \
                 folders and tmp/ there; move the other entries out (or fix base_path). \
                 Nothing was changed.",
                top.foreign.len(),
                named.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Refuses when the mount tables say a file system should be mounted at or above
/// `base_path` and nothing is mounted there.
pub fn refuse_unmounted_by_fstab(
    folder: &MediaFolder,
    tables: &MountTables,
) -> Result<(), CleanError> {
    let Ok(fstab) = std::fs::read_to_string(&tables.fstab) else {
        return Ok(());
    };
    let Ok(mountinfo) = std::fs::read_to_string(&tables.mountinfo) else {
        tracing::debug!(
            "{} cannot be read: the fstab check is skipped",
            tables.mountinfo.display()
        );
        return Ok(());
    };
    let base = std::fs::canonicalize(folder.base()).unwrap_or_else(|_| folder.base().to_owned());
    let mounted = mount_points(&mountinfo);
    for expected in fstab_mount_points(&fstab) {
        let expected = std::fs::canonicalize(&expected).unwrap_or(expected);
        if expected.parent().is_some()
            && base.starts_with(&expected)
            && !mounted.contains(&expected)
        {
            return Err(refused(
                folder,
                format!(
                    "looks unmounted: {} mounts a file system on {}, but nothing is mounted \
                     there now. {UNMOUNTED_NEXT}",
                    tables.fstab.display(),
                    expected.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a folder whose files are not there: no fan-out folder at all while there are
/// `rows` media rows, or more than half of a random sample of rows without their file;
/// and a folder holding media while there are no rows at all.
pub async fn refuse_missing_files(
    folder: &MediaFolder,
    media_db: &DendriteDb,
    rows: u64,
) -> Result<(), CleanError> {
    let io = |source| CleanError::Io {
        path: folder.base().to_owned(),
        source,
    };
    if rows == 0 {
        // The mirror image: no row is no licence to remove every directory either.
        for fanout in folder.fanout_dirs().map_err(io)? {
            if let Some(hash) = folder.content_dirs_in(&fanout).map_err(io)?.first() {
                return Err(refused(
                    folder,
                    format!(
                        "holds media (for example {}), but the media database has no media \
                         rows: is media_api.database (or the global database) the right one? \
                         Nothing was changed. If every media was purged on purpose, remove \
                         the leftover directories by hand.",
                        folder.content_dir(hash).display()
                    ),
                ));
            }
        }
        return Ok(());
    }
    let top = folder.top_level().map_err(io)?;
    if top.fanout_folders == 0 {
        return Err(refused(
            folder,
            format!(
                "looks unmounted: it holds no media at all, but the database has {rows} media \
                 rows. {UNMOUNTED_NEXT}"
            ),
        ));
    }
    let mut checked = 0usize;
    let mut missing = Vec::new();
    for row in media_db.sample_media(SAMPLE_ROWS).await? {
        let Ok(hash) = ContentHash::parse(&row.base64hash) else {
            continue;
        };
        checked += 1;
        if !folder.has_file(&hash) {
            missing.push((row, hash));
        }
    }
    if missing.len() * 2 > checked {
        let (row, hash) = &missing[0];
        return Err(refused(
            folder,
            format!(
                "looks unmounted: {} of {checked} media rows picked at random have no file \
                 there (for example {} at {}). {UNMOUNTED_NEXT} If the files are \
                 really lost, restore them from a backup.",
                missing.len(),
                row.mxc(),
                folder.content_dir(hash).join("file").display()
            ),
        ));
    }
    Ok(())
}

/// The mount points `fstab` lists (not swap, not `none`), with its octal escapes.
fn fstab_mount_points(fstab: &str) -> Vec<PathBuf> {
    fstab
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (point, kind) = (fields.get(1)?, fields.get(2).copied().unwrap_or(""));
            (point.starts_with('/') && kind != "swap").then(|| PathBuf::from(unescape(point)))
        })
        .collect()
}

/// The mount points of `/proc/self/mountinfo` (its fifth field).
fn mount_points(mountinfo: &str) -> HashSet<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape(point)))
        .collect()
}

/// Undoes the `\NNN` octal escapes fstab and mountinfo use for spaces and the like.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use media_core::run::Classify;

    #[test]
    fn fstab_mount_points_skip_comments_swap_and_unescape() {
        let fstab = "# <fs> <mount> <type>\n\
                     UUID=1 / ext4 defaults 0 1\n\
                     /dev/sdb1 /srv/media\\040store ext4 defaults 0 2\n\
                     /swapfile none swap sw 0 0\n\
                     \n";
        assert_eq!(
            fstab_mount_points(fstab),
            [PathBuf::from("/"), PathBuf::from("/srv/media store")]
        );
        let info = "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 - ext3 /dev/root rw\n";
        assert!(mount_points(info).contains(Path::new("/mnt x")));
    }

    /// A real tmpfs mounted where a fake fstab says the media volume goes passes; once
    /// unmounted, the same folder is refused as unmounted. (Needs root, as the rest of
    /// the suite.)
    #[test]
    fn a_media_volume_in_fstab_must_be_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("media");
        std::fs::create_dir(&media).unwrap();
        let fstab = dir.path().join("fstab");
        std::fs::write(
            &fstab,
            format!("tmpfs {} tmpfs size=1m 0 0\n", media.display()),
        )
        .unwrap();
        let tables = MountTables {
            fstab,
            ..MountTables::default()
        };
        let folder = MediaFolder::new(media.clone());
        let err = refuse_unmounted_by_fstab(&folder, &tables).unwrap_err();
        assert!(err.to_string().contains("looks unmounted"), "{err}");
        assert!(err.is_usage());

        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&media)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs (the tests run as root)");
        let mounted = refuse_unmounted_by_fstab(&folder, &tables);
        std::process::Command::new("umount")
            .arg(&media)
            .status()
            .unwrap();
        mounted.unwrap();
    }
}
