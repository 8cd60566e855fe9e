//! [`Datastores`]: the datastores a repository's blobs are in, as one run reads them.
//!
//! A tool is given one datastore (`--datastore`): it writes new bytes there. The blobs
//! it reads may be in other datastores the repository recorded (after a transfer moved
//! some of them): each blob row names its datastore. [`Datastores::store`] hands out the
//! datastore of an ID: the given one, or a recorded one opened read-only from its
//! recorded URI once its identity marker was checked (see the module
//! [`repo::attach`](crate::repo::attach)). Each is opened at most once per run, on first
//! use, and shared by every worker (clones share them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use media_core::datastore::{Datastore, DatastoreOpener};
use media_core::run::{Classify, ErrorClass};
use tokio::sync::OnceCell;

use crate::error::DbError;
use crate::model::DatastoreId;
use crate::repo::{AttachOptions, Repository};

/// A recorded datastore that cannot be read: unreachable, missing, or holding another
/// identity marker than the one recorded. Reading any blob it holds fails with this
/// error, which names it (never a silent "blob missing").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("datastore #{} ({uri}) cannot be opened: {why}", id.0)]
pub struct DatastoreUnavailable {
    /// The datastore's ID.
    pub id: DatastoreId,
    /// The URI the repository recorded for it.
    pub uri: String,
    /// What went wrong.
    pub why: String,
}

impl Classify for DatastoreUnavailable {
    /// It concerns the items in that datastore; the others are read.
    fn class(&self) -> ErrorClass {
        ErrorClass::Item
    }
}

/// What opening a recorded datastore gave, kept for the rest of the run.
type Opened = Result<Arc<dyn Datastore>, DatastoreUnavailable>;

/// The datastores of one run: the given one (written to), and the other recorded ones
/// (read from), opened lazily. Cheap to clone; clones share the opened datastores.
#[derive(Clone)]
pub struct Datastores {
    inner: Arc<Inner>,
}

struct Inner {
    repo: Repository,
    given: Arc<dyn Datastore>,
    given_id: Option<DatastoreId>,
    opener: Arc<dyn DatastoreOpener>,
    opened: Mutex<HashMap<DatastoreId, Arc<OnceCell<Opened>>>>,
}

impl std::fmt::Debug for Datastores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datastores")
            .field("given", &self.inner.given.uri())
            .field("given_id", &self.inner.given_id)
            .finish_non_exhaustive()
    }
}

impl Datastores {
    /// Checks that `given` is a datastore `repo` knows
    /// ([`Repository::attach_datastore`], as `options` say) and returns the run's
    /// datastores: `given`, and the other recorded ones, opened through `opener` when a
    /// blob in one of them is read.
    pub async fn attach(
        repo: &Repository,
        given: Arc<dyn Datastore>,
        options: AttachOptions,
        opener: Arc<dyn DatastoreOpener>,
    ) -> Result<Self, DbError> {
        let given_id = repo.attach_datastore(given.as_ref(), options).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                repo: repo.clone(),
                given,
                given_id,
                opener,
                opened: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The given datastore, which new bytes are written to.
    pub fn given(&self) -> &Arc<dyn Datastore> {
        &self.inner.given
    }

    /// The ID the repository recorded for the given datastore; `None` when a read-only
    /// run was given a datastore the repository has not recorded (it then has no blobs).
    pub fn given_id(&self) -> Option<DatastoreId> {
        self.inner.given_id
    }

    /// The datastore with this ID: the given one, or the recorded one opened read-only
    /// (once per run) after its identity marker was checked. The inner error says why a
    /// recorded datastore cannot be read (a failure of the items it holds); the outer one
    /// is the repository failing.
    pub async fn store(&self, id: DatastoreId) -> Result<Opened, DbError> {
        if self.inner.given_id == Some(id) {
            return Ok(Ok(self.inner.given.clone()));
        }
        let cell = self
            .inner
            .opened
            .lock()
            .expect("no thread panics holding the lock")
            .entry(id)
            .or_default()
            .clone();
        // A repository error is not kept: the next item asks again.
        let opened = cell.get_or_try_init(|| self.open_recorded(id)).await?;
        Ok(opened.clone())
    }

    /// Opens the recorded datastore `id` read-only and checks its identity marker.
    async fn open_recorded(&self, id: DatastoreId) -> Result<Opened, DbError> {
        let Some(recorded) = self.inner.repo.recorded_datastore(id).await? else {
            return Ok(Err(DatastoreUnavailable {
                id,
                uri: "unknown location".into(),
                why: "the repository records no datastore with this ID".into(),
            }));
        };
        let unavailable = |why: String| DatastoreUnavailable {
            id,
            uri: recorded.uri.clone(),
            why,
        };
        let store = match self.inner.opener.open_read_only(&recorded.uri).await {
            Ok(store) => store,
            Err(e) => return Ok(Err(unavailable(e.to_string()))),
        };
        let held = match store.read_marker().await {
            Ok(held) => held,
            Err(e) => {
                return Ok(Err(unavailable(format!(
                    "its identity marker cannot be read: {e}"
                ))));
            }
        };
        let Some(wanted) = &recorded.identity else {
            // Recorded before identity markers existed: there is nothing to check.
            return Ok(Ok(store));
        };
        Ok(match held {
            Some(held) if held == *wanted => Ok(store),
            Some(held) => Err(unavailable(format!(
                "it holds the identity marker {held}, not {wanted} recorded for it: another \
                 datastore is at that location"
            ))),
            None => Err(unavailable(format!(
                "it holds no identity marker (recorded: {wanted}): it is missing, not \
                 mounted, or was emptied"
            ))),
        })
    }
}
