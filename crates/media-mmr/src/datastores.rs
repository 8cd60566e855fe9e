//! The deployment's datastores, opened as our [`Datastore`]s and keyed by MMR's string IDs.
//!
//! # Locations
//! A row's `(datastore_id, location)` says where its bytes are: MMR reads
//! `<opts.path>/<location>` from a file datastore and the object keyed `<location>` from
//! an S3 bucket, and never derives a location from the hash. So any location MMR can
//! open works, and the tools write content-addressed ones: [`location_for`] gives
//! `ab/cd/<sha256>`, which is exactly the [`BlobKey`] our folder and S3 stores put bytes
//! under. Writing through [`MmrDatastore::store`] therefore keeps our guarantees (hashed
//! while streaming, atomic, durable, the same bytes stored once), and MMR serves the
//! result. (A file store we write to keeps its writes in progress in `<path>/.tmp/`, which
//! MMR never looks at.)
//!
//! MMR names the objects it writes itself with random IDs (`aa/bb/rest` in folders,
//! `rest` or, with `prefixLength`, `pfx/rest` in buckets). Those are not [`BlobKey`]s, so
//! [`MmrDatastore::open_location`] reads them beside the [`Datastore`] trait: from a
//! folder without following links (as our stores read), from S3 not yet (see there).
//! `prefixLength` only shapes MMR's names for new objects and never changes how a
//! location is read.
//!
//! # Choosing a datastore for new bytes
//! [`MmrDatastores::for_kind`] takes the datastore listed *last* among those whose
//! `forKinds` has the kind. MMR means to pick the smallest one by estimated size, but its
//! selection loop never keeps the size it compares against, so every datastore after the
//! first replaces the choice and MMR ends on the last one listed: the same datastore as
//! MMR, with no size query (which would scan the media table) and the same choice for a
//! whole run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use media_core::datastore::{BlobKey, BlobPayload, Datastore, StoreError};
use media_core::ids::Sha256Hex;
use media_core::local_files::open_regular_beneath;
use media_store::s3::{S3Access, S3Credentials};
use media_store::{FileDatastore, S3Datastore};

use crate::config::{DatastoreBackend, DatastoreConfig, MediaKind};
use crate::error::MmrError;

/// What a tool does with the deployment's datastores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only (exports, verification): nothing is created or written, and a file
    /// datastore's folder must exist.
    ReadOnly,
    /// Reads and writes (imports): a missing folder is created, as MMR creates it on its
    /// first upload.
    ReadWrite,
}

/// The location the tools give bytes with this digest in any MMR datastore.
pub fn location_for(sha256: &Sha256Hex) -> BlobKey {
    BlobKey::for_hash(sha256)
}

/// One datastore of the deployment, open.
#[derive(Debug)]
pub struct MmrDatastore {
    config: DatastoreConfig,
    store: Arc<dyn Datastore>,
    /// The same store as itself, for reading locations MMR named.
    named: NamedObjects,
}

/// How a datastore reads the locations MMR named itself (not [`BlobKey`]s).
#[derive(Debug)]
enum NamedObjects {
    /// From the folder, without following links below it.
    Folder(PathBuf),
    /// Through the S3 datastore, below its prefix.
    Bucket(Arc<S3Datastore>),
}

impl MmrDatastore {
    /// Its config entry (ID, kinds, backend).
    pub fn config(&self) -> &DatastoreConfig {
        &self.config
    }

    /// The datastore, for content-addressed puts and reads (see [`location_for`]).
    pub fn store(&self) -> &Arc<dyn Datastore> {
        &self.store
    }

    /// Opens the object a row's `location` names, whoever wrote it: a content-addressed
    /// location through [`MmrDatastore::store`], one MMR named itself from the folder of
    /// a file datastore (never following a link below it; a location that leaves the
    /// folder is refused). A missing object is [`MmrError::MissingObject`].
    ///
    /// From an S3 datastore, a location MMR named is read as the object with that key
    /// below the bucket's prefix; a key that could leave it (`..`, a leading `/`, an empty
    /// segment) is refused with a [`StoreError::Config`] naming it.
    pub async fn open_location(&self, location: &str) -> Result<BlobPayload, MmrError> {
        let id = self.config.id.as_str();
        let missing = || MmrError::MissingObject {
            id: id.to_owned(),
            location: location.to_owned(),
        };
        let failed = |source| MmrError::Datastore {
            id: id.to_owned(),
            source,
        };
        if let Some(key) = BlobKey::parse(location) {
            return match self.store.open(&key, None).await {
                Err(StoreError::NotFound { .. }) => Err(missing()),
                opened => opened.map_err(failed),
            };
        }
        match &self.named {
            NamedObjects::Folder(path) => {
                let (root, relative) = (path.clone(), PathBuf::from(location));
                let opened = tokio::task::spawn_blocking(move || {
                    let file = open_regular_beneath(&root, &relative, "the datastore")?;
                    let len = file.metadata()?.len();
                    Ok::<_, std::io::Error>((file, root.join(relative), len))
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|opened| opened);
                match opened {
                    Ok((file, path, len)) => Ok(BlobPayload::File { file, path, len }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing()),
                    Err(source) => Err(failed(StoreError::Io {
                        operation: "open",
                        target: path.join(location).display().to_string(),
                        source,
                    })),
                }
            }
            NamedObjects::Bucket(bucket) => match bucket.open_named(location).await {
                Ok(Some(payload)) => Ok(payload),
                Ok(None) => Err(missing()),
                Err(e) => Err(failed(e)),
            },
        }
    }
}

/// Every datastore of the deployment, in the config's order.
#[derive(Debug)]
pub struct MmrDatastores {
    stores: Vec<MmrDatastore>,
}

impl MmrDatastores {
    /// Opens every datastore of `configs` for `access`. A datastore that cannot be used
    /// (a missing folder when reading only, an unreachable bucket, refused credentials)
    /// fails the whole opening, naming it.
    pub async fn open(configs: &[DatastoreConfig], access: Access) -> Result<Self, MmrError> {
        let mut stores = Vec::with_capacity(configs.len());
        for config in configs {
            let (store, named) =
                open_one(&config.backend, access)
                    .await
                    .map_err(|source| MmrError::Datastore {
                        id: config.id.as_str().to_owned(),
                        source,
                    })?;
            stores.push(MmrDatastore {
                config: config.clone(),
                store,
                named,
            });
        }
        Ok(Self { stores })
    }

    /// The datastore with this ID, if the config lists it.
    pub fn get(&self, id: &str) -> Option<&MmrDatastore> {
        self.stores.iter().find(|s| s.config.id.as_str() == id)
    }

    /// Every datastore, in the config's order.
    pub fn iter(&self) -> impl Iterator<Item = &MmrDatastore> {
        self.stores.iter()
    }

    /// Where new bytes of `kind` go: the last datastore listed for it, as MMR picks (see
    /// the [module documentation](self)).
    pub fn for_kind(&self, kind: MediaKind) -> Result<&MmrDatastore, MmrError> {
        self.stores
            .iter()
            .rev()
            .find(|s| s.config.takes(kind))
            .ok_or(MmrError::NoDatastoreFor {
                kind: kind.as_str(),
            })
    }
}

async fn open_one(
    backend: &DatastoreBackend,
    access: Access,
) -> Result<(Arc<dyn Datastore>, NamedObjects), StoreError> {
    Ok(match backend {
        DatastoreBackend::File { path } => {
            let store: Arc<dyn Datastore> = match access {
                Access::ReadWrite => Arc::new(FileDatastore::open(path).await?),
                Access::ReadOnly => {
                    check_folder(path)?;
                    Arc::new(FileDatastore::open_read_only(path))
                }
            };
            (store, NamedObjects::Folder(path.clone()))
        }
        DatastoreBackend::S3(options) => {
            // Keys in media-repo.yaml are the deployment's own; without them, the
            // standard AWS sources (environment, profile) apply.
            let credentials = match &options.credentials {
                Some(keys) => S3Credentials::Given(keys.clone()),
                None => S3Credentials::Standard,
            };
            let access = match access {
                Access::ReadWrite => S3Access::Write,
                Access::ReadOnly => S3Access::ReadOnly,
            };
            let bucket =
                Arc::new(S3Datastore::open_with(options.location(), &credentials, access).await?);
            (bucket.clone(), NamedObjects::Bucket(bucket))
        }
    })
}

fn check_folder(path: &Path) -> Result<(), StoreError> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "its folder {} does not exist (or is not a folder): check opts.path and that \
             the datastore is mounted here",
            path.display()
        )))
    }
}
