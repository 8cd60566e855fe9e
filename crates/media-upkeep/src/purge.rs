//! A direct purge: plan a batch → record it in the journal → delete its rows in one
//! transaction → remove its files (and the folders left empty) after commit → clear
//! the journal; batch after batch.
//!
//! **Why rows first, then files, with a journal.** A row must never point at a missing
//! file (Synapse would answer 404 for a local media it still lists), so files go after
//! their rows commit. The other order's risk, files that no row names after a crash, is
//! what the journal (see [`crate::journal`]) removes: the next run first removes the
//! files of every journalled media whose row is gone, so a killed purge converges on the
//! same end state as an uninterrupted one. This holds for the remote cache too, where
//! deleting files first would be harmless to Synapse (it fetches them again) but would
//! still leave rows for a cache that is gone.
//!
//! **Through Synapse's admin API** ([`Through::AdminApi`]) the same plan is read
//! (read-only), then Synapse deletes: `purge_media_cache`, `media/delete` or one
//! `DELETE media/<server>/<id>` per planned media. Afterwards the rows are read again:
//! every planned media whose row is still there, and any row Synapse deleted that the plan
//! kept, is a listed failure; the files Synapse left of the media it deleted (URL
//! previews, thumbnails) and the folders it left empty are removed, journalled as in a
//! direct purge. A dry run is the plan alone: Synapse is not called.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use media_core::Progress;
use media_core::blocking::map_on_threads;
use std::collections::HashMap;

use media_core::ids::ServerName;
use media_core::moment::Moment;
use media_core::records::MediaKey;
use media_core::run::{Classify, ErrorClass, Route, RunMode};
use media_db::DatabaseLocation;
use media_synapse::Include;

use crate::admin_api::{AdminApi, Through};
use crate::db::{Cursor, PurgeDb, open_purge_db};
use crate::error::UpkeepError;
use crate::journal::Journal;
use crate::plan::{MediaTable, PlannedMedia, PurgeSelection, Storage};
use crate::removal::{Removed, remove_media_files};
use crate::report::{ApiPurgeReport, PurgeFault, PurgeReport};

/// What a purge is about and how it runs.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    /// Synapse's database.
    pub synapse_db: DatabaseLocation,
    /// Synapse's `media_store_path`.
    pub media_store: PathBuf,
    /// The homeserver's name; derived from its users (and checked) when `None`.
    pub server_name: Option<ServerName>,
    /// Which media go.
    pub selection: PurgeSelection,
    /// Dry run or real run.
    pub mode: RunMode,
    /// Who deletes: this toolkit, or Synapse through its admin API.
    pub through: Through,
}

/// Runs a purge and reports it. First it checks that the database and the media
/// store belong together (the server name, the media store's folders and a sample of
/// its files); in a real run it then takes the media store's journal (one purge at a
/// time per store) and finishes what an interrupted run left. Through Synapse's admin
/// API ([`Through::AdminApi`]), a real run has Synapse delete the plan, then verifies the
/// rows and cleans up after it (see the module documentation); a dry run is the same
/// plan either way. `progress` counts the selected media handled and the bytes freed.
pub async fn purge(
    options: &PurgeOptions,
    progress: &Progress,
) -> Result<PurgeReport, UpkeepError> {
    let synapse = media_synapse::open_synapse(&options.synapse_db).await?;
    let checked = check_store(&synapse, options).await;
    synapse.close().await;
    let server_name = checked?;
    let api = match &options.through {
        Through::AdminApi(api) => Some(api),
        Through::Direct => None,
    };
    // Through the API, the database is only read: Synapse writes.
    let db_mode = if api.is_some() {
        RunMode::DryRun
    } else {
        options.mode
    };
    let db = open_purge_db(&options.synapse_db, db_mode, server_name).await?;
    let result = match api {
        Some(api) => purge_through_api(&db, api, options, progress).await,
        None => purge_with(&db, options, progress).await,
    };
    db.close().await;
    result
}

/// Checks that the database and the media store belong together for `options`' purge;
/// the server name.
pub(crate) async fn check_store(
    synapse: &media_synapse::SynapseDb,
    options: &PurgeOptions,
) -> Result<ServerName, UpkeepError> {
    let server_name =
        media_synapse::resolve_server_name(synapse, options.server_name.clone()).await?;
    let tables = options.selection.tables(&server_name);
    let local = tables.contains(&MediaTable::Local);
    let include = Include {
        local,
        remote: tables.contains(&MediaTable::Remote),
        thumbnails: true,
        url_previews: local,
        rooms: false,
    };
    media_synapse::check_media_store(synapse, &options.media_store, include).await?;
    Ok(server_name)
}

/// An empty report of `options`' purge, whose rows and files go through `by`.
fn new_report(options: &PurgeOptions, by: &str) -> PurgeReport {
    PurgeReport {
        mode: options.mode,
        route: Route::new(
            options.synapse_db.to_string(),
            format!("{by}media store {}", options.media_store.display()),
        ),
        selection: options.selection.to_string(),
        before_ts: options.selection.before().map(Moment::unix_ms),
        ..PurgeReport::default()
    }
}

async fn purge_with(
    db: &PurgeDb,
    options: &PurgeOptions,
    progress: &Progress,
) -> Result<PurgeReport, UpkeepError> {
    let selection = &options.selection;
    let mode = options.mode;
    let root = options.media_store.as_path();
    let mut report = new_report(options, "");
    let mut journal = match mode {
        RunMode::Apply => {
            let mut journal = Journal::lock(root)?;
            finish_interrupted_run(&mut journal, db, root, &mut report).await?;
            Some(journal)
        }
        RunMode::DryRun => None,
    };
    let kept = db.kept_rows(selection).await?;
    report.kept.quarantined = kept.quarantined;
    report.kept.protected = kept.protected;
    report.kept.avatar = kept.avatar;
    progress
        .items_total
        .store(db.count_candidates(selection).await?, Relaxed);

    for mxc in db.missing_named_media(selection).await? {
        report.failures.push(
            mxc.to_string(),
            PurgeFault::NotFound,
            "no local or cached remote media has this ID".to_owned(),
        );
    }
    for table in selection.tables(db.server_name()) {
        purge_table(db, options, table, journal.as_mut(), progress, &mut report).await?;
    }
    if let Some(journal) = journal {
        journal.finish().map_err(journal_error(root))?;
    }
    Ok(report)
}

/// A purge applied by Synapse through `api`: plan (read-only), have Synapse delete,
/// verify the rows, clean up the files and folders Synapse left. A dry run stops after
/// the plan, before the first request.
async fn purge_through_api(
    db: &PurgeDb,
    api: &AdminApi,
    options: &PurgeOptions,
    progress: &Progress,
) -> Result<PurgeReport, UpkeepError> {
    let selection = &options.selection;
    let root = options.media_store.as_path();
    let mut report = new_report(options, &format!("Synapse's admin API {} and ", api.base()));
    let journal = match options.mode {
        RunMode::DryRun => None,
        RunMode::Apply => {
            // The token first: nothing changes when Synapse refuses it.
            api.check_admin().await?;
            let mut journal = Journal::lock(root)?;
            finish_interrupted_run(&mut journal, db, root, &mut report).await?;
            Some(journal)
        }
    };
    let kept = db.kept_rows(selection).await?;
    report.kept.quarantined = kept.quarantined;
    report.kept.protected = kept.protected;
    report.kept.avatar = kept.avatar;
    for mxc in db.missing_named_media(selection).await? {
        report.failures.push(
            mxc.to_string(),
            PurgeFault::NotFound,
            "no local or cached remote media has this ID".to_owned(),
        );
    }

    // The plan, as a direct purge pages through it.
    let tables = selection.tables(db.server_name());
    let mut plan = Vec::new();
    for &table in &tables {
        let mut cursor: Cursor = Default::default();
        loop {
            let page = db.candidates(selection, table, &cursor).await?;
            for (item, reason) in page.invalid {
                report.failures.push(
                    item,
                    PurgeFault::InvalidRow,
                    format!("{reason}; Synapse was not asked to delete it"),
                );
            }
            plan.extend(page.media);
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
    }
    if let PurgeSelection::Media { .. } = selection {
        plan.retain(|planned| match planned.storage {
            Storage::Local { .. } => true,
            Storage::Remote { .. } => {
                report.failures.push(
                    planned.key.to_string(),
                    PurgeFault::NotLocal,
                    "Synapse's admin API deletes local media only: purge it without \
                     --homeserver-url",
                );
                false
            }
        });
    }
    progress.items_total.store(plan.len() as u64, Relaxed);
    let mut rows_before = 0;
    for &table in &tables {
        rows_before += db.count_media(table).await?;
    }
    let thumbnails_before = db.count_thumbnails(&plan).await?;
    let sizes = measure_files(root, &plan).await?;
    let Some(mut journal) = journal else {
        report.media_deleted = plan.len() as u64;
        report.thumbnail_rows_deleted = thumbnails_before;
        add_measured(&mut report, &plan, &sizes);
        report.synapse_api = Some(ApiPurgeReport {
            api: api.base().to_string(),
            planned: plan.len() as u64,
            ..ApiPurgeReport::default()
        });
        progress.items_done.store(plan.len() as u64, Relaxed);
        return Ok(report);
    };

    let deleted_by_synapse = match selection {
        PurgeSelection::Remote { before } => api.purge_media_cache(*before).await?,
        PurgeSelection::Local {
            before,
            size_gt,
            avatars,
        } => api.delete_local_media(*before, *size_gt, *avatars).await?,
        PurgeSelection::User { .. } | PurgeSelection::Media { .. } => {
            let mut deleted = 0;
            for planned in &plan {
                let mxc = planned.key.mxc();
                match api.delete_media(&mxc).await {
                    Ok(count) => deleted += count,
                    Err(error) if error.class() == ErrorClass::Item => report.failures.push(
                        mxc.to_string(),
                        PurgeFault::RefusedBySynapse,
                        error.to_string(),
                    ),
                    Err(error) => return Err(error.into()),
                }
                progress.items_done.fetch_add(1, Relaxed);
            }
            deleted
        }
    };
    progress.items_done.store(plan.len() as u64, Relaxed);

    // Verify: what the plan said must go is gone, and nothing else is.
    let thumbnails_after = db.count_thumbnails(&plan).await?;
    let (gone, still_there) = db.split_by_row(plan).await?;
    for planned in &still_there {
        report.failures.push(
            planned.key.to_string(),
            PurgeFault::NotDeletedBySynapse,
            "the plan selected it and Synapse was asked to delete it, but its row is still \
             there",
        );
    }
    let mut rows_after = 0;
    for &table in &tables {
        rows_after += db.count_media(table).await?;
    }
    let outside = rows_before
        .saturating_sub(rows_after)
        .saturating_sub(gone.len() as u64);
    if outside > 0 {
        report.failures.push(
            "synapse",
            PurgeFault::DeletedOutsidePlan,
            format!(
                "{outside} media rows the plan kept are gone too (Synapse's selection differs, \
                 or the media changed while it ran)"
            ),
        );
    }
    report.media_deleted = gone.len() as u64;
    report.thumbnail_rows_deleted = thumbnails_before.saturating_sub(thumbnails_after);
    add_measured(&mut report, &gone, &sizes);

    // Clean up what Synapse left of the media it deleted, journalled as a direct purge.
    journal.record(&gone).map_err(journal_error(root))?;
    let verified = gone.len() as u64;
    let left = db.unreferenced(gone).await?;
    let removed = remove_files(root, left, RunMode::Apply, &mut report).await?;
    journal.clear().map_err(journal_error(root))?;
    journal.finish().map_err(journal_error(root))?;
    report.directories_removed = removed.folders;
    progress.bytes.store(report.bytes_freed, Relaxed);
    report.synapse_api = Some(ApiPurgeReport {
        api: api.base().to_string(),
        planned: verified + still_there.len() as u64,
        deleted_by_synapse,
        verified,
        cleaned_up: crate::report::CleanedUpReport {
            files: removed.files,
            bytes: removed.bytes,
            directories: removed.folders,
        },
    });
    Ok(report)
}

/// Adds the files `sizes` measured for `media` to the report's counts.
fn add_measured(
    report: &mut PurgeReport,
    media: &[PlannedMedia],
    sizes: &HashMap<MediaKey, Removed>,
) {
    for planned in media {
        let measured = sizes.get(&planned.key).copied().unwrap_or_default();
        report.files_deleted += measured.files();
        report.bytes_freed += measured.bytes;
        report.media_without_file += u64::from(!measured.content);
    }
}

/// The files each of `media` has now (what removing them would remove).
async fn measure_files(
    root: &Path,
    media: &[PlannedMedia],
) -> Result<HashMap<MediaKey, Removed>, UpkeepError> {
    let root = root.to_owned();
    let media = media.to_vec();
    tokio::task::spawn_blocking(move || {
        media
            .into_iter()
            .filter_map(|planned| {
                let files = planned.files()?;
                let measured = remove_media_files(&root, &files, RunMode::DryRun).ok()?;
                Some((planned.key, measured))
            })
            .collect()
    })
    .await
    .map_err(|e| UpkeepError::Task(e.to_string()))
}

/// Purges the media `options.selection` selects in `table`, batch after batch.
async fn purge_table(
    db: &PurgeDb,
    options: &PurgeOptions,
    table: MediaTable,
    mut journal: Option<&mut Journal>,
    progress: &Progress,
    report: &mut PurgeReport,
) -> Result<(), UpkeepError> {
    let selection = &options.selection;
    let mode = options.mode;
    let root = options.media_store.as_path();
    let mut cursor: Cursor = Default::default();
    loop {
        let page = db.candidates(selection, table, &cursor).await?;
        let walked = (page.media.len() + page.invalid.len()) as u64;
        for (item, reason) in page.invalid {
            report.failures.push(
                item,
                PurgeFault::InvalidRow,
                format!("{reason}; the row and its files are kept"),
            );
        }
        let files_go = match journal.as_deref_mut() {
            Some(journal) => {
                journal.record(&page.media).map_err(journal_error(root))?;
                let deleted = db.delete_batch(selection, &page.media).await?;
                report.media_deleted += deleted.media.len() as u64 + deleted.files_shared;
                report.thumbnail_rows_deleted += deleted.thumbnails;
                report.kept.changed_during_run += deleted.changed;
                report.kept.files_shared += deleted.files_shared;
                deleted.media
            }
            None => {
                report.media_deleted += page.media.len() as u64;
                report.thumbnail_rows_deleted += db.count_thumbnails(&page.media).await?;
                page.media
            }
        };
        let removed = remove_files(root, files_go, mode, report).await?;
        report.files_deleted += removed.files;
        report.bytes_freed += removed.bytes;
        report.directories_removed += removed.folders;
        report.media_without_file += removed.without_content;
        if let Some(journal) = journal.as_deref_mut() {
            journal.clear().map_err(journal_error(root))?;
        }
        progress.items_done.fetch_add(walked, Relaxed);
        progress.bytes.store(report.bytes_freed, Relaxed);
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    Ok(())
}

fn journal_error(root: &Path) -> impl Fn(std::io::Error) -> UpkeepError + '_ {
    move |source| UpkeepError::Io {
        path: root.join(crate::journal::JOURNAL_NAME),
        source,
    }
}

/// Removes the files of the media an interrupted run journalled and whose rows are gone.
async fn finish_interrupted_run(
    journal: &mut Journal,
    db: &PurgeDb,
    root: &Path,
    report: &mut PurgeReport,
) -> Result<(), UpkeepError> {
    let (listed, unreadable) = journal.pending().map_err(journal_error(root))?;
    for entry in unreadable {
        report
            .failures
            .push(entry.line, PurgeFault::UnreadableJournalEntry, entry.reason);
    }
    if listed.is_empty() {
        return Ok(());
    }
    tracing::info!(
        "an interrupted purge listed {} media in its journal: finishing it first",
        listed.len()
    );
    let gone = db.unreferenced(listed).await?;
    let removed = remove_files(root, gone, RunMode::Apply, report).await?;
    report.recovered.media += removed.media;
    report.recovered.files += removed.files;
    report.recovered.bytes += removed.bytes;
    report.recovered.directories += removed.folders;
    journal.clear().map_err(journal_error(root))
}

/// What removing the files of some media did.
#[derive(Debug, Default)]
struct RemovedFiles {
    media: u64,
    files: u64,
    bytes: u64,
    folders: u64,
    without_content: u64,
}

/// How many blocking threads remove a batch's files at once. The removals wait on the
/// disk (the folders' blocks, the inodes) more than they compute, so several in flight
/// keep the disk busy. Two remote media of a batch may share a file: whichever removal
/// comes second finds it gone, as it would one after the other. A folder left empty is
/// removed by whichever removal empties it last (the others find it not empty, or gone).
const REMOVAL_THREADS: usize = 8;

/// Removes (in a dry run: sizes) the files of `media`, off the async threads, on up to
/// [`REMOVAL_THREADS`] threads; a media whose files cannot be removed is a listed
/// failure, and the others go on.
async fn remove_files(
    root: &Path,
    media: Vec<PlannedMedia>,
    mode: RunMode,
    report: &mut PurgeReport,
) -> Result<RemovedFiles, UpkeepError> {
    let root = root.to_owned();
    let results = map_on_threads(media, REMOVAL_THREADS, move |planned: PlannedMedia| {
        let result = match planned.files() {
            Some(files) => remove_media_files(&root, &files, mode),
            None => Ok(Removed::default()),
        };
        (planned, result)
    })
    .await
    .map_err(|e| UpkeepError::Task(e.to_string()))?;
    let mut totals = RemovedFiles::default();
    for (planned, result) in results {
        totals.media += 1;
        match result {
            Ok(removed) => {
                totals.files += removed.files();
                totals.bytes += removed.bytes;
                totals.folders += removed.folders;
                totals.without_content += u64::from(!removed.content);
            }
            Err(error) => report.failures.push(
                planned.key.to_string(),
                PurgeFault::FileNotRemoved,
                format!("{error}; its rows are gone: remove it by hand"),
            ),
        }
    }
    Ok(totals)
}
