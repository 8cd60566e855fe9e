//! A matrix-media-repo (MMR) deployment as the tools see it: its `media-repo.yaml`
//! ([`config`]), its PostgreSQL schema, checked and never created ([`schema`]), its file
//! and S3 datastores keyed by MMR's string IDs ([`datastores`]) and its rows read as our
//! domain records with each row's `(datastore_id, location)` ([`deployment`]).
//!
//! ```no_run
//! use futures::TryStreamExt;
//! use media_mmr::{Access, MmrConfig, MmrDeployment};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MmrConfig::load("media-repo.yaml".as_ref())?;
//! let deployment = MmrDeployment::open(config, Access::ReadOnly, 4).await?;
//! let user = "@alice:example.org".parse()?;
//! let mut media = deployment.media_by_uploader(&user);
//! while let Some(row) = media.try_next().await? {
//!     let store = deployment.datastore_of(&row.placement, &row.record.key)?;
//!     let bytes = store.open_location(&row.placement.location).await?;
//!     println!("{} ({} bytes): {bytes:?}", row.record.key.mxc(), row.record.size_bytes);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The GDPR tools work on a deployment too: [`export_from_mmr`] ([`source`]) feeds
//! `media_gdpr`'s archive writer from MMR's rows and datastores (any location, whoever
//! wrote it), and [`MmrArchiveSink`] ([`archive`]) is `media_gdpr`'s `ArchiveSink`,
//! recording an archive through [`MmrSink`].
//!
//! [`MmrSink`] ([`sink`]) is the first write backend: `media_import`'s narrow
//! `ImportSink`, so that `import_synapse -config media-repo.yaml` writes into MMR. It
//! follows the mapping below without changing `DatastoreId` or `BlobKey`: the sink says
//! where bytes go per kind and keeps MMR's string IDs and any location to itself.
//!
//! # Design note: the MMR write backend and the repository roles
//! The next step is a backend that plays `media_db`'s roles (`BlobIndex`, `MediaIndex`,
//! `Quarantine`, `DeletionQueue`, `TaskLog`) on an MMR deployment, so that the import and
//! GDPR pipelines write into MMR unchanged. How each role maps, and what does not fit yet:
//!
//! * **Datastore identity.** `media_db::DatastoreId(i64)` names a row of our `datastores`
//!   table; MMR names datastores by strings ([`MmrDatastoreId`]) that live in its config.
//!   `NewMedia`, `NewBlob`, `Blob`, `PendingDeletion` and the `DeletionQueue` methods all
//!   carry the integer. *Smallest change:* let `DatastoreId` hold text (our repository
//!   renders its integer IDs as text; MMR's are used as they are).
//! * **Locations.** `Blob::location` and `PendingDeletion::location` are `BlobKey`s
//!   (`ab/cd/<sha256>` only). Rows MMR wrote itself have random locations. We write
//!   content-addressed ones ([`datastores::location_for`]), but reading, lending and
//!   deleting must carry any location. *Smallest change:* a location type holding any
//!   relative key, with `BlobKey` converting into it.
//! * **Blobs.** MMR has no blob table: bytes exist through the `media` and `thumbnails`
//!   rows that reference them, and dedup lends an existing row's `(datastore_id,
//!   location)`. So `BlobIndex::get_blob` is "the first media or thumbnail row with this
//!   hash", `blob_reference_count` counts those rows, and `insert_blob` has nothing to
//!   record on its own: the MMR backend decides dedup inside `insert_media_batch`, in a
//!   transaction that first takes `pg_advisory_xact_lock` on the hash (its first eight
//!   bytes as a `bigint`), looks the hash up in `media` and `thumbnails`, and either lends
//!   that placement or uses the freshly put content-addressed object. Because our puts are
//!   content-addressed and idempotent, two workers that both put the same bytes before
//!   the lock still leave one object, and the lock makes every row they write agree on one
//!   placement. *Smallest change:* none to `BlobIndex` itself; its `insert_blob` becomes a
//!   look-up for this backend.
//! * **Where new bytes go.** `MediaIndex::insert_media_batch` takes one `store` and one
//!   `datastore_id` per media for the media and its thumbnails; MMR sorts bytes by kind
//!   (`local_media`, `remote_media`, `thumbnails`, see [`MmrDatastores::for_kind`]), so a
//!   media and its thumbnails may land in different datastores. *Smallest change:* let the
//!   sink say where bytes go (a `datastore_for(kind)` on the sink, which our repository
//!   answers with its one datastore) and drop the `store` parameter in favour of the
//!   sink's own datastores.
//! * **Columns MMR lacks.** `quarantined_by` and `imported_from` have no column and are
//!   dropped; `Purpose::Pinned` is a `media_attributes` row; `last_access_ts` goes to
//!   `last_access` by hash (newest wins); `user_stats` is left to MMR's trigger.
//! * **Quarantine.** `set_quarantined` and `is_hash_quarantined` map onto `media.quarantined`
//!   (pinned media excepted through `media_attributes`); `quarantine_changes` has no
//!   stream to read in MMR and would answer an empty page. *Smallest change:* none; say so
//!   in the trait's documentation.
//! * **Deletion.** MMR has no `pending_deletions` table and the tools never add tables to
//!   its schema, so `delete_media` deletes the rows and returns the placements no row
//!   references any more (counted by `(datastore_id, location)`, as MMR's purge counts),
//!   and the objects are deleted after commit; a crash in between leaves orphan objects
//!   (which a store check finds), never a row without its object. `pending_deletions` and
//!   `drain_pending_deletions` have no queue to read. *Smallest change:* return the
//!   placements to delete from `delete_media` and let a backend without a queue answer the
//!   queue methods with nothing queued.
//! * **Task log.** `background_tasks` (`task`, `params` JSON, `start_ts`, `end_ts` 0 while
//!   running, `error`) fits `TaskLog`; our counters have no column and would be merged into
//!   `params` at the end. *Smallest change:* none.
#![deny(missing_docs)]

pub mod archive;
pub mod config;
pub mod datastores;
pub mod deployment;
pub mod error;
pub mod schema;
pub mod sink;
pub mod source;

pub use archive::MmrArchiveSink;
pub use config::{MediaKind, MmrConfig, MmrDatastoreId};
pub use datastores::{Access, MmrDatastore, MmrDatastores};
pub use deployment::{BlockedId, MmrDeployment, MmrMedia, MmrThumbnail, Placement};
pub use error::MmrError;
pub use sink::MmrSink;
pub use source::export_from_mmr;
