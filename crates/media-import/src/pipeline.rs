//! Import a Synapse media store into our repository ([`import_synapse`]) or any other
//! [`ImportSink`] ([`import_synapse_into`], e.g. a matrix-media-repo deployment): local
//! media, remote media, their thumbnails, URL previews, quarantine state, and avatars
//! pinned.
//!
//! A producer reads the Synapse tables page by page and turns each row into a work item
//! (or a listed failure: invalid identifiers never become paths); `workers` tasks pull
//! items from a bounded queue and stream each file once through the hasher into the
//! datastore; one recorder records the stored media together with their thumbnails, all
//! that have queued up since its last transaction in the next one (group commit: the
//! busier the database, the larger its batches). Beside them, the rooms of the media
//! are read from Synapse's events and recorded (`rooms`). The repository's unique keys decide
//! deduplication, so any number of workers gives the same result, and a re-run skips
//! every media already recorded. A media ID the sink reserved is never written (a listed
//! failure).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use media_core::datastore::Datastore;
use media_core::progress::Progress;
use media_core::run::Route;
use media_db::repo::Repository;
use media_db::scratch::{DigestNames, NAMES_IN_MEMORY};
use media_synapse::SynapseDb;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::avatars::pin_avatars;
use crate::context::Context;
use crate::error::ImportError;
use crate::options::ImportOptions;
use crate::plan::WorkItem;
use crate::produce::produce;
use crate::record::{MAX_BATCH, record};
use crate::report::ImportReport;
use crate::rooms::record_rooms;
use crate::sink::{ImportSink, RepositorySink, StoredMedia};
use crate::work::{ITEMS_PER_TAKE, work};

/// Stored media waiting for the recorder (one transaction's worth); workers wait when
/// it is full.
const RECORD_QUEUE: usize = MAX_BATCH;

/// Imports a Synapse media store into our repository, its bytes into `store`. See the
/// [module documentation](self).
pub async fn import_synapse(
    synapse: &SynapseDb,
    repo: &Repository,
    store: Arc<dyn Datastore>,
    options: ImportOptions,
    progress: Arc<Progress>,
) -> Result<ImportReport, ImportError> {
    let sink = RepositorySink::open(repo, store, options.mode.is_dry_run()).await?;
    import_synapse_into(synapse, Arc::new(sink), options, progress).await
}

/// Imports a Synapse media store into `sink`. See the [module documentation](self).
pub async fn import_synapse_into(
    synapse: &SynapseDb,
    sink: Arc<dyn ImportSink>,
    options: ImportOptions,
    progress: Arc<Progress>,
) -> Result<ImportReport, ImportError> {
    let workers = options.workers.max(1);
    let (local, remote) = synapse.media_counts().await?;
    let total = u64::from(options.include.local || options.include.url_previews) * local
        + u64::from(options.include.remote) * remote;
    // A shard's share is only known once every row is read (the producer then sets it).
    progress
        .items_total
        .store(options.shard.estimate(total), Ordering::Relaxed);

    let task = if options.mode.is_dry_run() {
        None
    } else {
        let params = serde_json::json!({
            "source": options.source_label,
            "media_store": options.media_store,
            "homeserver": options.homeserver.as_ref().map(|h| h.base_url().to_string()),
            "server_name": options.server_name.as_str(),
            "include": options.include,
            "workers": workers,
            "sink": sink.describe(),
            "shard": options.shard,
        });
        Some(sink.start_task(&params).await?)
    };

    let context = Arc::new(Context {
        sink: sink.clone(),
        options,
        progress,
        dry_run_seen: Mutex::new(DigestNames::new(&std::env::temp_dir(), NAMES_IN_MEMORY)),
        abort: CancellationToken::new(),
    });
    // A real run sets the repository's secondary indexes aside for a load that at least
    // doubles it, and builds them at the end, even after a failure (a stopped run's are
    // built by the next tool that opens the repository).
    let incoming = context.options.shard.estimate(total);
    let bulk_load = task.is_some() && sink.prepare_bulk_load(incoming).await?;
    let mut result = run(synapse, context.clone(), workers).await;
    if bulk_load && let Err(e) = sink.finish_bulk_load().await {
        result = result.and(Err(e.into()));
    }
    if let Some(task) = task {
        let (counters, error) = match &result {
            Ok(report) => (report.counters_json(), None),
            Err(e) => ("{}".to_owned(), Some(e.to_string())),
        };
        sink.finish_task(task, &counters, error.as_deref()).await?;
    }
    result
}

async fn run(
    synapse: &SynapseDb,
    context: Arc<Context>,
    workers: usize,
) -> Result<ImportReport, ImportError> {
    let (sender, receiver) = mpsc::channel::<WorkItem>(workers * ITEMS_PER_TAKE * 2);
    let receiver = Arc::new(Mutex::new(receiver));
    let (to_record, stored) = mpsc::channel::<StoredMedia>(RECORD_QUEUE);
    let recorder = tokio::spawn(record(context.clone(), stored));
    let mut handles: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(work(receiver.clone(), context.clone(), to_record.clone())))
        .collect();
    // A room's reference is recorded without waiting for its media: the rooms are read
    // and recorded beside the media, on a core the import leaves idle.
    if context.options.mode.applies() && context.options.include.rooms {
        let (synapse, context) = (synapse.clone(), context.clone());
        handles.push(tokio::spawn(async move {
            let mut report = ImportReport::default();
            let recorded = record_rooms(&synapse, &context, &mut report).await;
            if recorded.is_err() {
                context.abort.cancel(); // run() reports it
            }
            recorded.map(|()| report)
        }));
    }
    // Only the workers hold the queue and the recorder's inbox: once they are gone, the
    // producer's sends fail instead of waiting for room that never comes.
    drop((receiver, to_record));
    let produced = produce(synapse, &context, sender).await;
    if produced.is_err() {
        context.abort.cancel();
    }
    let mut report = ImportReport::new(context.options.mode);
    report.shard = context.options.shard;
    report.route = Route::new(&context.options.source_label, context.sink.describe());
    let mut first_error = None;
    match produced {
        Ok(part) => report.merge(part),
        Err(e) => first_error = Some(e),
    }
    // The recorder ends once every worker is done; its error, if any, is the cause of
    // theirs (and of the rooms' recording, which any error stops).
    handles.insert(0, recorder);
    for handle in handles {
        match handle.await {
            Ok(Ok(part)) => report.merge(part),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(ImportError::Worker(e.to_string()));
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if context.options.mode.applies() {
        pin_avatars(synapse, &context, &mut report).await?;
    }
    report.failures.sort_listed();
    Ok(report)
}
