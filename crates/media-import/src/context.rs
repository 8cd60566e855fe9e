//! What the producer, the workers and the recorder of one import share.

use std::sync::Arc;

use media_core::progress::Progress;
use media_db::scratch::DigestNames;
use tokio_util::sync::CancellationToken;

use crate::options::ImportOptions;
use crate::sink::ImportSink;

/// What the workers share.
pub(crate) struct Context {
    /// Where the import writes.
    pub sink: Arc<dyn ImportSink>,
    pub options: ImportOptions,
    pub progress: Arc<Progress>,
    /// Digests seen by a dry run, each with an empty name (a real run lets the repository
    /// decide): the latest in memory, the others in a temporary file in `TMPDIR`.
    pub dry_run_seen: tokio::sync::Mutex<DigestNames>,
    /// Cancelled by the first fatal error: the producer stops queueing, the workers stop
    /// taking items, and every task ends, so that the run reports the error instead of
    /// waiting forever.
    pub abort: CancellationToken,
}
