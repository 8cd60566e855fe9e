//! Copying one file into the datastore: from the media store (small files read in one
//! go, large ones streamed), or downloaded from the homeserver; never more than one byte
//! past what Synapse recorded, and checked against it. A dry run only hashes
//! (`dry_run`).

use std::path::Path;
use std::sync::atomic::Ordering;

use media_core::datastore::{
    BlobKey, Datastore, LocalFile, LocalPutResult, OpenLocalFile, Put, PutOptions, PutStatus,
    READ_WHOLE, StoreError,
};
use media_synapse::files;
use media_synapse::homeserver::DownloadFailure;
use tokio::io::AsyncReadExt;

use crate::context::Context;
use crate::dry_run::hash_only;
use crate::error::ImportError;
use crate::plan::SourceFile;
use crate::report::{FailureReason, ImportReport};

/// Streams one file into `store` (or, in a dry run, only through the hasher). The
/// inner error is a per-item failure; the outer one stops the run.
/// `ahead` is what a put ahead (`ahead::put_ahead`) answered for this file, if it put
/// it.
pub(crate) async fn store_file(
    context: &Context,
    store: &dyn Datastore,
    file: &SourceFile,
    ahead: Option<LocalPutResult>,
    report: &mut ImportReport,
) -> Result<Result<Put, (FailureReason, String)>, ImportError> {
    let options = &context.options;
    if let Some(put) = already_stored(context, &file.expected).await? {
        report.bytes_deduplicated += put.blob.size;
        return Ok(Ok(put));
    }
    let on_disk = options
        .media_store
        .as_ref()
        .map(|root| root.join(&file.path));
    let mut shown = on_disk
        .as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let from_disk = match (&on_disk, &options.media_store) {
        (Some(path), Some(root)) => {
            let put = match ahead {
                Some(put) => put,
                None => put_from_disk(context, store, root, &file.path, &file.expected).await,
            };
            match put {
                Ok(put) => Some(put),
                // Not on disk: the homeserver may still have it.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound && options.homeserver.is_some() =>
                {
                    None
                }
                Err(e) => return Ok(Err(open_failure(path, e))),
            }
        }
        _ => None,
    };
    let put = match (from_disk, &options.homeserver) {
        (Some(put), _) => put,
        (None, Some(homeserver)) => {
            shown = homeserver.url_of(&file.remote).to_string();
            let reader = match homeserver.download(&file.remote).await {
                Ok(reader) => reader,
                Err(DownloadFailure::NotFound(detail)) => {
                    return Ok(Err((FailureReason::FileMissing, detail)));
                }
                Err(DownloadFailure::Failed(detail)) => {
                    return Ok(Err((FailureReason::Unreadable, detail)));
                }
            };
            // Never more than one byte past what Synapse recorded: a body that does not
            // end is cut there and reported as a size mismatch.
            match file.expected.expected.size {
                Some(size) => {
                    let mut reader = reader.take(files::read_limit(Some(size), 0));
                    sink_put(context, store, &mut reader, &file.expected).await
                }
                None => {
                    let mut reader = files::RefuseBeyond::new(reader, UNRECORDED_LENGTH_LIMIT);
                    sink_put(context, store, &mut reader, &file.expected).await
                }
            }
        }
        (None, None) => {
            return Err(ImportError::Config(
                "neither a media store nor a homeserver to read media from".into(),
            ));
        }
    };
    let put = match put {
        Ok(put) => put,
        Err(StoreError::Mismatch {
            what: "size",
            expected,
            actual,
        }) => {
            let longer = expected
                .parse::<u64>()
                .is_ok_and(|e| actual.parse::<u64>() == Ok(e + 1));
            let actual = if longer {
                "more (reading stopped one byte past the recorded length)".to_owned()
            } else {
                actual
            };
            return Ok(Err((
                FailureReason::SizeMismatch,
                format!("{shown}: Synapse recorded {expected} bytes, the content has {actual}"),
            )));
        }
        Err(StoreError::Mismatch {
            what,
            expected,
            actual,
        }) => {
            return Ok(Err((
                FailureReason::Corrupt,
                format!("{shown}: Synapse recorded {what} {expected}, the bytes have {actual}"),
            )));
        }
        Err(StoreError::Source { source, .. }) => {
            return Ok(Err((
                FailureReason::Unreadable,
                format!("{shown}: {source}"),
            )));
        }
        Err(e) => return Err(e.into()),
    };
    report.bytes_read += put.blob.size;
    context
        .progress
        .bytes
        .fetch_add(put.blob.size, Ordering::Relaxed);
    match put.status {
        PutStatus::Written => {
            report.blobs_written += 1;
            report.bytes_written += put.blob.size;
        }
        PutStatus::AlreadyPresent => report.bytes_deduplicated += put.blob.size,
    }
    Ok(Ok(put))
}

/// At most this many bytes are downloaded for a content whose length Synapse did not
/// record (thumbnails of old Synapse versions).
const UNRECORDED_LENGTH_LIMIT: u64 = 1 << 30;

/// A large file whose digest Synapse recorded and whose bytes the sink already holds is
/// not read at all: the import references the stored copy.
async fn already_stored(
    context: &Context,
    expected: &PutOptions,
) -> Result<Option<Put>, ImportError> {
    if !asks_first(expected) {
        return Ok(None);
    }
    let (Some(sha256), Some(size)) = (&expected.expected.sha256, expected.expected.size) else {
        return Ok(None);
    };
    Ok(context
        .sink
        .stored_size(sha256)
        .await?
        .filter(|stored| *stored == size)
        .map(|size| Put {
            blob: media_core::datastore::StoredBlob {
                sha256: sha256.clone(),
                size,
                key: BlobKey::for_hash(sha256),
            },
            status: PutStatus::AlreadyPresent,
        }))
}

/// Whether the import asks the sink for a file's bytes before reading it
/// ([`already_stored`]): only for a large file whose digest and length Synapse recorded.
/// Reading a small one costs less than asking first.
pub(crate) fn asks_first(expected: &PutOptions) -> bool {
    let recorded = &expected.expected;
    recorded.sha256.is_some() && recorded.size.is_some_and(|size| size > READ_WHOLE)
}

/// Puts into `store` (or, in a dry run, hashes) the bytes of `reader`.
async fn sink_put(
    context: &Context,
    store: &dyn Datastore,
    reader: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    expected: &PutOptions,
) -> Result<Put, StoreError> {
    if context.options.mode.is_dry_run() {
        hash_only(context, reader, expected).await
    } else {
        store.put(reader, expected).await
    }
}

/// Blocking: opens `relative` below the media store `root` (no links, regular files
/// only: [`files::open_in_media_store`]), with the most bytes to read from it
/// ([`files::read_limit`]).
fn open_in_media_store(
    root: &Path,
    relative: &Path,
    recorded: Option<u64>,
) -> std::io::Result<(std::fs::File, u64)> {
    let file = files::open_in_media_store(root, relative)?;
    let limit = files::read_limit(recorded, file.metadata()?.len());
    Ok((file, limit))
}

/// What opens `relative` below the media store `root` for a put
/// ([`open_in_media_store`], at most the length `expected` records and one byte).
pub(crate) fn opener_in_media_store(
    root: &Path,
    relative: &Path,
    expected: &PutOptions,
) -> OpenLocalFile {
    let (root, relative, recorded) = (root.to_owned(), relative.to_owned(), expected.expected.size);
    Box::new(move || open_in_media_store(&root, &relative, recorded))
}

/// Blocking: opens `relative` below the media store `root` ([`open_in_media_store`])
/// and reads it when it is small. Never reads more than [`files::read_limit`] bytes.
pub(crate) fn open_source_file(
    root: &Path,
    relative: &Path,
    recorded: Option<u64>,
) -> std::io::Result<LocalFile> {
    let (file, limit) = open_in_media_store(root, relative, recorded)?;
    LocalFile::read_if_small(file, limit).map_err(|e| {
        std::io::Error::new(e.kind(), format!("{}: {e}", root.join(relative).display()))
    })
}

/// Puts into `store` (or, in a dry run, hashes) the file at `relative` below the media store `root`;
/// the outer error is opening it.
async fn put_from_disk(
    context: &Context,
    store: &dyn Datastore,
    root: &Path,
    relative: &Path,
    expected: &PutOptions,
) -> std::io::Result<Result<Put, StoreError>> {
    if context.options.mode.applies() {
        // The store opens, reads and writes it in as few blocking calls as it can.
        let open = opener_in_media_store(root, relative, expected);
        return store.put_local(open, expected).await;
    }
    let (root, relative, recorded) = (root.to_owned(), relative.to_owned(), expected.expected.size);
    let opened = tokio::task::spawn_blocking(move || open_source_file(&root, &relative, recorded))
        .await
        .map_err(std::io::Error::other)??;
    Ok(match opened {
        LocalFile::Read(bytes) => hash_only(context, &mut &bytes[..], expected).await,
        LocalFile::Stream(file, limit) => {
            let mut reader = tokio::fs::File::from_std(file).take(limit);
            hash_only(context, &mut reader, expected).await
        }
    })
}

/// A file that could not be opened or read: its error names the path.
pub(crate) fn open_failure(path: &Path, error: std::io::Error) -> (FailureReason, String) {
    if error.kind() == std::io::ErrorKind::NotFound {
        (
            FailureReason::FileMissing,
            format!("{} does not exist", path.display()),
        )
    } else {
        (FailureReason::Unreadable, error.to_string())
    }
}
