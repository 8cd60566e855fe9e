//! A check of a Synapse media store against its database, and (`--fix`) the repair of
//! what is safe to repair.
//!
//! Each of the six media folders is [walked](crate::walk) in the byte order of its
//! media's IDs while the rows that name them are [streamed](crate::rows) in the same
//! order; the two are compared side by side, so memory stays flat however many media
//! there are. A file or thumbnail folder no row names is an orphan; a row whose file
//! is missing is reported; what does not fit Synapse's layout at all is a stray.
//!
//! **What a fix removes**, and only when it was reported: orphan content files and
//! orphan thumbnail folders (no row names them, so nothing can serve them), stray
//! regular files, and empty folders — then the folders their removal left empty. It
//! never deletes a row: a row without its file may be served by a storage provider.
//! Synapse writes a media's file before its row, so an entry changed after
//! [`CheckOptions::settled_before`] may be a write in progress: it is counted as
//! `recent` and left alone. A fix takes the purge journal's lock, so it never runs
//! alongside a direct purge of the same store.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use futures::StreamExt;
use media_core::Progress;
use media_core::ids::ServerName;
use media_core::moment::Moment;
use media_core::run::{Route, RunMode};
use media_db::DatabaseLocation;
use media_synapse::Include;

use crate::check_report::{CheckFault, CheckReport};
use crate::error::UpkeepError;
use crate::journal::{self, Journal};
use crate::removal;
use crate::rows::{RowsDb, StoredRow, open_rows_db};
use crate::walk::{self, Found, Holds, Tree};

/// Found entries handled (sized, or removed) per blocking task.
const BATCH: usize = 256;

/// What a check is about and how it runs.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Synapse's database.
    pub synapse_db: DatabaseLocation,
    /// Synapse's `media_store_path`.
    pub media_store: PathBuf,
    /// The homeserver's name; derived from its users (and checked) when `None`.
    pub server_name: Option<ServerName>,
    /// [`RunMode::DryRun`]: report only; [`RunMode::Apply`]: fix what is safe.
    pub mode: RunMode,
    /// Entries changed at or after this moment are left alone (Synapse may be writing
    /// them).
    pub settled_before: Moment,
}

/// Checks the media store against the database (and with [`RunMode::Apply`], fixes it)
/// and reports by category. `progress` counts the media files and thumbnail folders
/// checked.
pub async fn check(
    options: &CheckOptions,
    progress: &Progress,
) -> Result<CheckReport, UpkeepError> {
    let synapse = media_synapse::open_synapse(&options.synapse_db).await?;
    let checked = async {
        let server_name =
            media_synapse::resolve_server_name(&synapse, options.server_name.clone()).await?;
        media_synapse::check_media_store(&synapse, &options.media_store, Include::default())
            .await?;
        Ok::<_, UpkeepError>(server_name)
    }
    .await;
    synapse.close().await;
    let server_name = checked?;
    let root = options.media_store.as_path();
    let journal_error = |source| UpkeepError::Io {
        path: root.join(journal::JOURNAL_NAME),
        source,
    };
    let mut report = CheckReport {
        mode: options.mode,
        route: Route::new(
            options.synapse_db.to_string(),
            format!("media store {}", root.display()),
        ),
        settled_before_ts: options.settled_before.unix_ms(),
        ..CheckReport::default()
    };
    let journal = match options.mode {
        RunMode::Apply => {
            let mut journal = Journal::lock(root)?;
            let (listed, unreadable) = journal.pending().map_err(journal_error)?;
            report.interrupted_purge = (listed.len() + unreadable.len()) as u64;
            Some(journal)
        }
        RunMode::DryRun => {
            report.interrupted_purge = journal::listed_entries(root).map_err(journal_error)?;
            None
        }
    };
    let db = open_rows_db(&options.synapse_db, server_name).await?;
    let mut result = Ok(());
    for tree in Tree::ALL {
        result = check_tree(&db, options, tree, &mut report, progress).await;
        if result.is_err() {
            break;
        }
    }
    db.close().await;
    result?;
    if let Some(journal) = journal {
        // A journal an interrupted purge left stays for the purge to finish; the one
        // this run created goes.
        if report.interrupted_purge == 0 {
            journal.finish().map_err(journal_error)?;
        }
    }
    Ok(report)
}

/// What an entry found may be; a batch looks at it again off the async threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suspect {
    /// A content file or thumbnail folder no row names.
    Orphan,
    /// A stray file.
    Stray,
    /// An empty folder.
    Empty,
}

/// An entry found, and what it may be.
type Candidate = (Suspect, PathBuf);

/// What handling one candidate gave.
#[derive(Debug)]
enum Outcome {
    /// Gone before it was looked at again.
    Gone,
    /// Changed too recently to be judged.
    Recent { bytes: u64 },
    /// A problem (fixed or not), with its bytes and the folders removed with it.
    Found {
        bytes: u64,
        fixed: bool,
        folders: u64,
    },
    /// It could not be handled.
    Failed(String),
}

/// Compares one tree with its rows.
async fn check_tree(
    db: &RowsDb,
    options: &CheckOptions,
    tree: Tree,
    report: &mut CheckReport,
    progress: &Progress,
) -> Result<(), UpkeepError> {
    let (sender, mut found) = tokio::sync::mpsc::channel::<Found>(1024);
    let root = options.media_store.clone();
    let walker = tokio::task::spawn_blocking(move || {
        walk::walk(&root, tree, &mut |found| {
            sender.blocking_send(found).is_ok()
        })
    });
    let mut rows = db.rows(tree.rows());
    let mut next_row: Option<StoredRow> = rows.next().await.transpose()?;
    let mut batch: Vec<Candidate> = Vec::with_capacity(BATCH);
    while let Some(entry) = found.recv().await {
        match entry {
            Found::Media { key, path } => {
                progress.items_done.fetch_add(1, Relaxed);
                report.media_checked += 1;
                let mut named = false;
                while let Some(row) = &next_row {
                    match row.key.cmp(&key) {
                        std::cmp::Ordering::Greater => break,
                        order => {
                            if order.is_eq() {
                                named = true;
                            } else if tree.holds() == Holds::Content {
                                without_file(report, row);
                            }
                            next_row = rows.next().await.transpose()?;
                        }
                    }
                }
                if !named {
                    batch.push((Suspect::Orphan, path));
                }
            }
            Found::Stray { path, .. } => batch.push((Suspect::Stray, path)),
            Found::EmptyFolder { path, .. } => batch.push((Suspect::Empty, path)),
            Found::NotRegular { path } => report.not_regular.add(path.display(), 0),
            Found::Unreadable { path, error } => {
                report
                    .failures
                    .push(path.display().to_string(), CheckFault::Unreadable, error)
            }
        }
        if batch.len() >= BATCH {
            handle_batch(options, tree, std::mem::take(&mut batch), report).await?;
        }
    }
    handle_batch(options, tree, batch, report).await?;
    while let Some(row) = next_row {
        if tree.holds() == Holds::Content {
            without_file(report, &row);
        }
        next_row = rows.next().await.transpose()?;
    }
    walker
        .await
        .map_err(|e| UpkeepError::Task(e.to_string()))?
        .map_err(|source| UpkeepError::Io {
            path: options.media_store.clone(),
            source,
        })
}

/// Counts a row whose content file the walk did not find; a media never uploaded has
/// none to find.
fn without_file(report: &mut CheckReport, row: &StoredRow) {
    if let Some(length) = row.recorded_length {
        report.rows_without_files.add(&row.mxc, length);
    }
}

/// Sizes (and in a fix, removes) a batch of candidates off the async threads, and
/// counts them.
async fn handle_batch(
    options: &CheckOptions,
    tree: Tree,
    batch: Vec<Candidate>,
    report: &mut CheckReport,
) -> Result<(), UpkeepError> {
    if batch.is_empty() {
        return Ok(());
    }
    let root = options.media_store.clone();
    let (mode, settled) = (options.mode, options.settled_before.unix_ms());
    let outcomes = tokio::task::spawn_blocking(move || {
        batch
            .into_iter()
            .map(|candidate| {
                let outcome = handle(&root, tree, &candidate, mode, settled)
                    .unwrap_or_else(|e| Outcome::Failed(e.to_string()));
                (candidate, outcome)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| UpkeepError::Task(e.to_string()))?;
    for (candidate, outcome) in outcomes {
        let (suspect, path) = &candidate;
        let finding = match (suspect, tree.holds()) {
            (Suspect::Orphan, Holds::Content) => &mut report.orphan_files,
            (Suspect::Orphan, Holds::Thumbnails) => &mut report.orphan_thumbnails,
            (Suspect::Stray, _) => &mut report.stray_files,
            (Suspect::Empty, _) => &mut report.empty_folders,
        };
        match outcome {
            Outcome::Gone => {}
            Outcome::Recent { bytes } => report.recent.add(path.display(), bytes),
            Outcome::Found {
                bytes,
                fixed,
                folders,
            } => {
                finding.add(path.display(), bytes);
                finding.fixed += u64::from(fixed);
                report.folders_removed += folders;
            }
            Outcome::Failed(error) => {
                finding.add(path.display(), 0);
                report
                    .failures
                    .push(path.display().to_string(), CheckFault::NotRemoved, error);
            }
        }
    }
    Ok(())
}

/// Looks at one candidate again: gone, too recent, or a problem — removed in a fix.
fn handle(
    root: &Path,
    tree: Tree,
    (suspect, path): &Candidate,
    mode: RunMode,
    settled: i64,
) -> std::io::Result<Outcome> {
    let Some(changed) = removal::changed_ms(root, path)? else {
        return Ok(Outcome::Gone);
    };
    let bytes = match (suspect, tree.holds()) {
        (Suspect::Empty, _) => 0,
        (Suspect::Orphan, Holds::Thumbnails) => {
            removal::remove_folder_of_files(root, path, RunMode::DryRun)?.1
        }
        _ => match removal::remove_file(root, path, RunMode::DryRun)? {
            Some(bytes) => bytes,
            None => return Ok(Outcome::Gone),
        },
    };
    if changed >= settled {
        return Ok(Outcome::Recent { bytes });
    }
    if mode.is_dry_run() {
        return Ok(Outcome::Found {
            bytes,
            fixed: false,
            folders: 0,
        });
    }
    let (fixed, folders) = match (suspect, tree.holds()) {
        (Suspect::Empty, _) => {
            let folders = removal::remove_empty_folder(root, path)?;
            (folders > 0, folders)
        }
        (Suspect::Orphan, Holds::Thumbnails) => {
            let (_, _, removed) = removal::remove_folder_of_files(root, path, RunMode::Apply)?;
            let above = removal::remove_empty_ancestors(root, path)?;
            (removed, u64::from(removed) + above)
        }
        _ => {
            let removed = removal::remove_file(root, path, RunMode::Apply)?.is_some();
            (removed, removal::remove_empty_ancestors(root, path)?)
        }
    };
    Ok(Outcome::Found {
        bytes,
        fixed,
        folders,
    })
}
