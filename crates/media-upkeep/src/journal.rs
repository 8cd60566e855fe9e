//! The purge journal: which media's files a direct purge is about to remove, written
//! before their rows' transaction commits and cleared once the files are gone.
//!
//! A direct purge deletes rows first and files after commit (a row never points at a
//! missing file). A crash between the two would leave files no row names — for the
//! remote cache, files that nothing would ever find again. So each batch is written to
//! the journal (and synced) before its commit; the next run reads it first and removes
//! the files of every listed media whose row is gone. A listed media whose row is still
//! there (the crash came before the commit) is left alone: the journal is a superset,
//! and it is checked against the database, never trusted on its own.
//!
//! The journal is `.synapse_media-purge.journal` at the top of the media store (the
//! store it is about, wherever the run is started from). It is locked while a run holds
//! it, so two direct purges of one store never run at once, and removed when a run ends
//! cleanly.

use std::fs::File;
use std::io::{self, BufRead, Seek, Write};
use std::path::{Path, PathBuf};

use media_core::records::MediaKey;
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};

use crate::error::UpkeepError;
use crate::plan::{PlannedMedia, Storage};

/// The journal's file name, at the top of the media store.
pub const JOURNAL_NAME: &str = ".synapse_media-purge.journal";

/// The locked journal of one media store.
#[derive(Debug)]
pub struct Journal {
    file: File,
    root: PathBuf,
}

/// One line of a journal that could not be read back: it is listed, never acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableEntry {
    /// The line as written.
    pub line: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Journal {
    /// Opens (creating it when missing) and locks the journal of the media store at
    /// `root`. Another run holding it is a [`UpkeepError::Busy`]; a link in its place is
    /// refused.
    pub fn lock(root: &Path) -> Result<Self, UpkeepError> {
        let path = root.join(JOURNAL_NAME);
        let io = |source: io::Error| UpkeepError::Io {
            path: path.clone(),
            source,
        };
        let dir = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| io(e.into()))?;
        let fd = rustix::fs::openat(
            &dir,
            JOURNAL_NAME,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| io(e.into()))?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(UpkeepError::Busy(format!(
                    "another synapse_media run is purging the media store {} (it holds {}); \
                     wait for it to end, then run again",
                    root.display(),
                    path.display()
                )));
            }
            Err(e) => return Err(io(e.into())),
        }
        Ok(Self {
            file: File::from(fd),
            root: root.to_owned(),
        })
    }

    fn path(&self) -> PathBuf {
        self.root.join(JOURNAL_NAME)
    }

    /// The media an interrupted run listed, and the lines that could not be read back.
    pub fn pending(&mut self) -> io::Result<(Vec<PlannedMedia>, Vec<UnreadableEntry>)> {
        self.file.seek(io::SeekFrom::Start(0))?;
        let (mut media, mut unreadable) = (Vec::new(), Vec::new());
        for line in io::BufReader::new(&self.file).lines() {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            match parse_entry(&line) {
                Ok(planned) => media.push(planned),
                Err(reason) => unreadable.push(UnreadableEntry { line, reason }),
            }
        }
        Ok((media, unreadable))
    }

    /// Replaces the journal's content with `media`, and syncs it.
    pub fn record(&mut self, media: &[PlannedMedia]) -> io::Result<()> {
        let mut text = String::new();
        for planned in media {
            text.push_str(&entry(planned));
            text.push('\n');
        }
        self.file.set_len(0)?;
        self.file.seek(io::SeekFrom::Start(0))?;
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()
    }

    /// Empties the journal (the files it listed are gone), and syncs it.
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()
    }

    /// Removes the (empty) journal and releases the lock: the run ended cleanly.
    pub fn finish(self) -> io::Result<()> {
        let dir = rustix::fs::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )?;
        match rustix::fs::unlinkat(&dir, JOURNAL_NAME, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("remove {}: {e}", self.path().display()),
            )),
        }
    }
}

/// How many media the journal of the media store at `root` lists (0 when there is
/// none), read without taking it: what an interrupted purge left to finish.
pub fn listed_entries(root: &Path) -> io::Result<u64> {
    let file = match media_core::local_files::open_regular_beneath(
        root,
        Path::new(JOURNAL_NAME),
        "the media store",
    ) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut count = 0;
    for line in io::BufReader::new(file).lines() {
        count += u64::from(!line?.is_empty());
    }
    Ok(count)
}

/// One journal line: `local <server> <media_id> upload|preview` or
/// `remote <origin> <media_id> <filesystem_id>`, tab-separated.
fn entry(planned: &PlannedMedia) -> String {
    let MediaKey { origin, media_id } = &planned.key;
    match &planned.storage {
        Storage::Local { url_preview } => format!(
            "local\t{origin}\t{media_id}\t{}",
            if *url_preview { "preview" } else { "upload" }
        ),
        Storage::Remote { filesystem_id } => {
            format!("remote\t{origin}\t{media_id}\t{filesystem_id}")
        }
    }
}

/// Reads one journal line back, validating every identifier again before any of it can
/// become a path.
fn parse_entry(line: &str) -> Result<PlannedMedia, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [kind, origin, media_id, last] = fields.as_slice() else {
        return Err("not four tab-separated fields".into());
    };
    let origin = origin.parse().map_err(|e| format!("origin: {e}"))?;
    let media_id = media_id.parse().map_err(|e| format!("media ID: {e}"))?;
    let planned = match (*kind, *last) {
        ("local", "upload") => PlannedMedia::local(&origin, media_id, false),
        ("local", "preview") => PlannedMedia::local(&origin, media_id, true),
        ("remote", filesystem_id) => PlannedMedia::remote(
            MediaKey::new(origin, media_id),
            filesystem_id
                .parse()
                .map_err(|e| format!("filesystem ID: {e}"))?,
        ),
        _ => return Err(format!("unknown kind {kind:?}")),
    };
    planned.ok_or_else(|| "the IDs map to no Synapse path".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_reads_back_what_was_recorded_and_refuses_a_second_run() {
        let dir = tempfile::tempdir().unwrap();
        let server = "example.org".parse().unwrap();
        let media = vec![
            PlannedMedia::local(&server, "abcdefghij".parse().unwrap(), false).unwrap(),
            PlannedMedia::local(&server, "2024-01-31_abc".parse().unwrap(), true).unwrap(),
            PlannedMedia::remote(
                MediaKey::new("127.0.0.1:8448".parse().unwrap(), "x".parse().unwrap()),
                "fNifQrvygXigPBJUbAhfDexh".parse().unwrap(),
            )
            .unwrap(),
        ];
        let mut journal = Journal::lock(dir.path()).unwrap();
        journal.record(&media).unwrap();
        journal.record(&media[1..]).unwrap();
        assert!(matches!(
            Journal::lock(dir.path()),
            Err(UpkeepError::Busy(_))
        ));
        drop(journal);
        let mut journal = Journal::lock(dir.path()).unwrap();
        assert_eq!(journal.pending().unwrap(), (media[1..].to_vec(), vec![]));
        journal.clear().unwrap();
        assert_eq!(journal.pending().unwrap(), (vec![], vec![]));
        journal.finish().unwrap();
        assert!(!dir.path().join(JOURNAL_NAME).exists());
    }

    #[test]
    fn tampered_lines_never_become_paths() {
        for line in [
            "local\texample.org\t../../etc\tupload",
            "remote\texample.org\tx\t../../../etc/passwd",
            "local\texample.org\tabcdefgh\tsomething",
            "remote\tnot a server\tx\tfNifQrvygXig",
            "garbage",
        ] {
            assert!(parse_entry(line).is_err(), "{line}");
        }
    }
}
