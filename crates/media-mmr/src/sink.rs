//! A matrix-media-repo deployment as an import's sink ([`MmrSink`]): `import_synapse
//! -config media-repo.yaml` writes MMR's own rows into MMR's own datastores, so that a
//! running MMR serves what was imported.
//!
//! * **Where bytes go.** MMR sorts bytes by kind: a media of an origin the config lists
//!   under `homeservers` goes to the datastore for `local_media`, any other to the one
//!   for `remote_media`, thumbnails to the one for `thumbnails` (each as MMR picks it,
//!   [`MmrDatastores::for_kind`](crate::MmrDatastores::for_kind)). Objects are put
//!   content-addressed ([`location_for`]) by our file or S3 datastore (hashed while
//!   streaming, atomic, durable), and synced before any row names them.
//! * **Dedup, exact across workers and processes.** MMR's schema has no unique key on
//!   the hash, so each recording transaction first takes a transaction-scoped advisory
//!   lock on every hash of its batch (the hash's first eight bytes as a `bigint`, in
//!   ascending order, so two transactions never wait on each other in a cycle), then
//!   looks the hashes up in `media` and `thumbnails`: a row that holds the bytes already
//!   lends its `(datastore_id, location)`; otherwise the content-addressed object just put
//!   becomes the placement. Two writers of the same bytes thus put one object (the put is
//!   idempotent) and write rows that agree on one placement. An object put for bytes
//!   that got another placement (lent by a row, or the same bytes put for another kind
//!   into another datastore) is deleted after the commit, once no row names it: the
//!   deployment never keeps the same bytes twice.
//! * **Rows as MMR writes them.** `media`: `user_id` `""` for remote media, `creation_ts`
//!   in ms, `quarantined`, `upload_name` and `content_type` `""` when unknown. Never
//!   overwritten (`ON CONFLICT DO NOTHING`; other bytes under the same ID are a conflict).
//!   `thumbnails` likewise. Last access goes to `last_access` by hash, the newest time
//!   wins; pins to `media_attributes` (`purpose` `pinned`). `user_stats` is MMR's trigger's.
//! * **Reserved IDs.** IDs in `reserved_media` or `media_id_hold` are never written.
//! * **Task log.** MMR re-runs the `background_tasks` it finds unfinished when it starts,
//!   and does not know ours: the import is recorded there only once it ended (one row
//!   with its start, end, error and counters in `params`), never as an unfinished task.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use media_core::datastore::{Datastore, StoreError};
use media_core::ids::{MediaId, ServerName, Sha256Hex};
use media_core::now_ms;
use media_core::records::{MediaKey, ThumbnailRecord, size_to_i64};
use media_db::error::QueryContext;
use media_db::{DbError, InsertOutcome, MediaOutcome, PinReport, RoomIndex, TaskId};
use media_import::{Content, ImportSink, StoredMedia};
use sqlx::{PgConnection, PgPool};

use crate::config::{MediaKind, MmrDatastoreId};
use crate::datastores::location_for;
use crate::deployment::{BlockedId, MmrDeployment, Placement};
use crate::error::MmrError;

/// Where new bytes of one kind go.
#[derive(Debug, Clone)]
struct Target {
    id: MmrDatastoreId,
    store: Arc<dyn Datastore>,
}

/// A matrix-media-repo deployment as an import's sink. See the [module
/// documentation](self).
pub struct MmrSink {
    deployment: MmrDeployment,
    local: Target,
    remote: Target,
    thumbnails: Target,
}

impl fmt::Debug for MmrSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl MmrSink {
    /// The sink over an open deployment. Fails with [`MmrError::NoDatastoreFor`] unless
    /// the config has a datastore for each of `local_media`, `remote_media` and
    /// `thumbnails`.
    pub fn new(deployment: MmrDeployment) -> Result<Self, MmrError> {
        let target = |kind| {
            deployment.datastores().for_kind(kind).map(|d| Target {
                id: d.config().id.clone(),
                store: d.store().clone(),
            })
        };
        Ok(Self {
            local: target(MediaKind::LocalMedia)?,
            remote: target(MediaKind::RemoteMedia)?,
            thumbnails: target(MediaKind::Thumbnails)?,
            deployment,
        })
    }

    /// The deployment written into.
    pub fn deployment(&self) -> &MmrDeployment {
        &self.deployment
    }

    fn target(&self, key: &MediaKey, content: Content) -> &Target {
        match content {
            Content::Thumbnail => &self.thumbnails,
            Content::Media if self.deployment.config().is_local(&key.origin) => &self.local,
            Content::Media => &self.remote,
        }
    }

    fn pool(&self) -> &PgPool {
        self.deployment.pool()
    }

    /// After a commit: deletes each object `puts` put that its bytes' placement is not
    /// and that no row names (no transaction is held; see the module documentation).
    async fn delete_unused(
        &self,
        puts: &[(Target, Sha256Hex)],
        placements: &HashMap<Sha256Hex, Placement>,
    ) -> Result<(), DbError> {
        for (target, sha256) in puts {
            let key = location_for(sha256);
            let put = Placement {
                datastore_id: target.id.clone(),
                location: key.to_string(),
            };
            if placements.get(sha256) == Some(&put) {
                continue;
            }
            let named: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM media WHERE datastore_id = $1 AND location = $2) \
                 OR EXISTS (SELECT 1 FROM thumbnails WHERE datastore_id = $1 AND location = $2)",
            )
            .bind(put.datastore_id.as_str())
            .bind(&put.location)
            .fetch_one(self.pool())
            .await
            .during("look up an object's rows in matrix-media-repo")?;
            if !named {
                target.store.delete(&key).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ImportSink for MmrSink {
    fn describe(&self) -> String {
        format!(
            "matrix-media-repo {} (datastores: local media {}, remote media {}, \
             thumbnails {})",
            self.deployment.config().database,
            self.local.id,
            self.remote.id,
            self.thumbnails.id
        )
    }

    fn datastore_for(&self, key: &MediaKey, content: Content) -> &Arc<dyn Datastore> {
        &self.target(key, content).store
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let mut synced: Vec<&MmrDatastoreId> = Vec::with_capacity(3);
        for target in [&self.local, &self.remote, &self.thumbnails] {
            if !synced.contains(&&target.id) {
                target.store.sync().await?;
                synced.push(&target.id);
            }
        }
        Ok(())
    }

    async fn existing_media_digests(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Sha256Hex>, DbError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT media_id, sha256_hash FROM media WHERE origin = $1 AND media_id = ANY ($2)",
        )
        .bind(origin.as_str())
        .bind(media_ids)
        .fetch_all(self.pool())
        .await
        .during("look up media in matrix-media-repo")?;
        rows.into_iter()
            .map(|(media_id, sha256)| {
                let digest = digest(&sha256, "media", || format!("{origin}/{media_id}"))?;
                Ok((media_id, digest))
            })
            .collect()
    }

    async fn recorded_thumbnails(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Vec<ThumbnailRecord>>, DbError> {
        let found = self
            .deployment
            .thumbnails_of_media(origin, media_ids)
            .await
            .map_err(into_db_error)?;
        Ok(found
            .into_iter()
            .map(|(id, rows)| (id, rows.into_iter().map(|t| t.record).collect()))
            .collect())
    }

    async fn reserved_media_ids(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, String>, DbError> {
        // The IDs come from validated keys: each parses again.
        let ids: Vec<MediaId> = media_ids.iter().filter_map(|id| id.parse().ok()).collect();
        let blocked = self
            .deployment
            .blocked_media_ids(origin, &ids)
            .await
            .map_err(into_db_error)?;
        Ok(blocked
            .into_iter()
            .map(|(id, why)| {
                let why = match why {
                    BlockedId::Reserved { reason } => format!("reserved_media: {reason:?}"),
                    BlockedId::Held { reason, held_ts } => format!(
                        "media_id_hold since {held_ts} ms, for an upload in progress: {reason:?}"
                    ),
                };
                (id.to_string(), why)
            })
            .collect())
    }

    async fn stored_size(&self, sha256: &Sha256Hex) -> Result<Option<u64>, DbError> {
        let size: Option<i64> = sqlx::query_scalar(
            "(SELECT size_bytes FROM media WHERE sha256_hash = $1 LIMIT 1) UNION ALL \
             (SELECT size_bytes FROM thumbnails WHERE sha256_hash = $1 LIMIT 1) LIMIT 1",
        )
        .bind(sha256.as_str())
        .fetch_optional(self.pool())
        .await
        .during("look up bytes in matrix-media-repo")?;
        Ok(size.and_then(|s| u64::try_from(s).ok()))
    }

    async fn record_media(&self, batch: &[StoredMedia]) -> Result<Vec<MediaOutcome>, DbError> {
        let mut fresh = Placements::default();
        for media in batch {
            let key = &media.record.key;
            fresh.offer(&media.record.sha256, self.target(key, Content::Media));
            for t in &media.thumbnails {
                fresh.offer(&t.sha256, self.target(key, Content::Thumbnail));
            }
        }
        let mut tx = self.pool().begin().await.during("begin a transaction")?;
        let placements = fresh.decide(&mut tx).await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for media in batch {
            let outcome = insert_media(&mut tx, media, &placements[&media.record.sha256]).await?;
            let thumbnails = match outcome {
                InsertOutcome::Conflict { .. } => Vec::new(),
                _ => {
                    let mut done = Vec::with_capacity(media.thumbnails.len());
                    for t in &media.thumbnails {
                        done.push(insert_thumbnail(&mut tx, t, &placements[&t.sha256]).await?);
                    }
                    done
                }
            };
            outcomes.push(MediaOutcome {
                media: outcome,
                thumbnails,
            });
        }
        record_last_access(&mut tx, batch).await?;
        tx.commit().await.during("commit media")?;
        self.delete_unused(&fresh.puts, &placements).await?;
        Ok(outcomes)
    }

    async fn record_thumbnail(
        &self,
        thumbnail: &ThumbnailRecord,
    ) -> Result<InsertOutcome, DbError> {
        let mut fresh = Placements::default();
        fresh.offer(
            &thumbnail.sha256,
            self.target(&thumbnail.media, Content::Thumbnail),
        );
        let mut tx = self.pool().begin().await.during("begin a transaction")?;
        let placements = fresh.decide(&mut tx).await?;
        let media: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM media WHERE origin = $1 AND media_id = $2")
                .bind(thumbnail.media.origin.as_str())
                .bind(thumbnail.media.media_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .during("look up a media in matrix-media-repo")?;
        if media.is_none() {
            return Ok(InsertOutcome::MediaMissing);
        }
        let outcome = insert_thumbnail(&mut tx, thumbnail, &placements[&thumbnail.sha256]).await?;
        tx.commit().await.during("commit a thumbnail")?;
        self.delete_unused(&fresh.puts, &placements).await?;
        Ok(outcome)
    }

    fn room_index(&self) -> Option<&dyn RoomIndex> {
        None
    }

    async fn pin_media(&self, keys: &[MediaKey]) -> Result<PinReport, DbError> {
        let mut tx = self.pool().begin().await.during("begin a transaction")?;
        let mut report = PinReport::default();
        for key in keys {
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM media WHERE origin = $1 AND media_id = $2")
                    .bind(key.origin.as_str())
                    .bind(key.media_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .during("look up a media in matrix-media-repo")?;
            if exists.is_none() {
                report.missing += 1;
                continue;
            }
            let changed = sqlx::query(
                "INSERT INTO media_attributes (origin, media_id, purpose) \
                 VALUES ($1, $2, 'pinned') ON CONFLICT (media_id, origin) \
                 DO UPDATE SET purpose = 'pinned' WHERE media_attributes.purpose <> 'pinned'",
            )
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .execute(&mut *tx)
            .await
            .during("pin a media in matrix-media-repo")?
            .rows_affected();
            if changed == 1 {
                report.pinned += 1;
            } else {
                report.already_pinned += 1;
            }
        }
        tx.commit().await.during("commit pins")?;
        Ok(report)
    }

    async fn start_task(&self, _params: &serde_json::Value) -> Result<TaskId, DbError> {
        // Recorded once ended (see the module documentation): the ID is the start time.
        Ok(TaskId(now_ms()))
    }

    async fn finish_task(
        &self,
        task: TaskId,
        counters: &str,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        self.record_task("import_synapse", task, counters, error)
            .await
    }
}

impl MmrSink {
    /// Records a run that ended in `background_tasks` (see the module documentation):
    /// `task` its name, `started` its start (its [`TaskId`]), its counters in `params`.
    pub async fn record_task(
        &self,
        task: &str,
        started: TaskId,
        counters: &str,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        let counters: serde_json::Value =
            serde_json::from_str(counters).unwrap_or(serde_json::Value::Null);
        let params = serde_json::json!({ "counters": counters });
        sqlx::query(
            "INSERT INTO background_tasks (task, params, start_ts, end_ts, error) \
             VALUES ($1, CAST($2 AS json), $3, $4, $5)",
        )
        .bind(task)
        .bind(params.to_string())
        .bind(started.0)
        .bind(now_ms())
        .bind(error.unwrap_or(""))
        .execute(self.pool())
        .await
        .during("record the run in matrix-media-repo's background_tasks")?;
        Ok(())
    }
}

/// The placement each hash of a batch gets: the fresh content-addressed one offered
/// first, unless a row already lends one ([`Placements::decide`]).
#[derive(Default)]
struct Placements {
    fresh: HashMap<Sha256Hex, Placement>,
    /// Every object put for the batch: the datastore and the bytes.
    puts: Vec<(Target, Sha256Hex)>,
}

impl Placements {
    /// The bytes `sha256` were put (content-addressed) into `target`; the first offer of
    /// a hash wins.
    fn offer(&mut self, sha256: &Sha256Hex, target: &Target) {
        if !self
            .puts
            .iter()
            .any(|(t, s)| t.id == target.id && s == sha256)
        {
            self.puts.push((target.clone(), sha256.clone()));
        }
        self.fresh
            .entry(sha256.clone())
            .or_insert_with(|| Placement {
                datastore_id: target.id.clone(),
                location: location_for(sha256).to_string(),
            });
    }

    /// Takes the advisory lock of every hash (held until the transaction ends), then
    /// lends each hash a row's placement where one exists.
    async fn decide(
        &self,
        tx: &mut PgConnection,
    ) -> Result<HashMap<Sha256Hex, Placement>, DbError> {
        let mut locks: Vec<i64> = self.fresh.keys().map(lock_key).collect();
        locks.sort_unstable();
        locks.dedup();
        sqlx::query(
            "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS l(k, n) \
             ORDER BY n",
        )
        .bind(&locks)
        .execute(&mut *tx)
        .await
        .during("lock hashes in matrix-media-repo")?;
        let hashes: Vec<&str> = self.fresh.keys().map(Sha256Hex::as_str).collect();
        let lent: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT DISTINCT ON (sha256_hash) sha256_hash, datastore_id, location FROM ( \
               SELECT sha256_hash, datastore_id, location, 0 AS pref FROM media \
               WHERE sha256_hash = ANY ($1) AND datastore_id <> '' AND location <> '' \
               UNION ALL \
               SELECT sha256_hash, datastore_id, location, 1 FROM thumbnails \
               WHERE sha256_hash = ANY ($1) AND datastore_id <> '' AND location <> '' \
             ) p ORDER BY sha256_hash, pref, datastore_id, location",
        )
        .bind(&hashes)
        .fetch_all(&mut *tx)
        .await
        .during("look up stored bytes in matrix-media-repo")?;
        let mut placements = self.fresh.clone();
        for (sha256, datastore_id, location) in lent {
            let (Ok(sha256), Some(datastore_id)) = (
                Sha256Hex::try_from(sha256.as_str()),
                MmrDatastoreId::new(&datastore_id),
            ) else {
                continue;
            };
            placements.insert(
                sha256,
                Placement {
                    datastore_id,
                    location,
                },
            );
        }
        Ok(placements)
    }
}

/// The advisory lock of a hash: its first eight bytes as a `bigint`.
fn lock_key(sha256: &Sha256Hex) -> i64 {
    let prefix = u64::from_str_radix(&sha256.as_str()[..16], 16).expect("a digest is hex");
    prefix as i64
}

/// Inserts a media row (never overwriting) in the open transaction.
async fn insert_media(
    tx: &mut PgConnection,
    media: &StoredMedia,
    placement: &Placement,
) -> Result<InsertOutcome, DbError> {
    let r = &media.record;
    let size = size_to_i64(r.size_bytes).map_err(|source| DbError::SizeOutOfRange {
        item: r.key.to_string(),
        source,
    })?;
    let inserted = sqlx::query(
        "INSERT INTO media (origin, media_id, upload_name, content_type, user_id, \
         sha256_hash, size_bytes, datastore_id, location, creation_ts, quarantined) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (media_id, origin) DO NOTHING",
    )
    .bind(r.key.origin.as_str())
    .bind(r.key.media_id.as_str())
    .bind(r.upload_name.as_deref().unwrap_or(""))
    .bind(r.content_type.as_deref().unwrap_or(""))
    .bind(r.uploader.as_ref().map(|u| u.as_str()).unwrap_or(""))
    .bind(r.sha256.as_str())
    .bind(size)
    .bind(placement.datastore_id.as_str())
    .bind(&placement.location)
    .bind(r.created_ts)
    .bind(r.quarantined)
    .execute(&mut *tx)
    .await
    .during("insert a media into matrix-media-repo")?
    .rows_affected();
    if inserted == 1 {
        return Ok(InsertOutcome::Inserted);
    }
    let existing: String =
        sqlx::query_scalar("SELECT sha256_hash FROM media WHERE origin = $1 AND media_id = $2")
            .bind(r.key.origin.as_str())
            .bind(r.key.media_id.as_str())
            .fetch_one(&mut *tx)
            .await
            .during("look up a media in matrix-media-repo")?;
    compare(&existing, &r.sha256, "media", || r.key.to_string())
}

/// Inserts a thumbnail row (never overwriting) in the open transaction.
async fn insert_thumbnail(
    tx: &mut PgConnection,
    t: &ThumbnailRecord,
    placement: &Placement,
) -> Result<InsertOutcome, DbError> {
    let shown = || format!("a thumbnail of {}", t.media);
    let size = size_to_i64(t.size_bytes).map_err(|source| DbError::SizeOutOfRange {
        item: shown(),
        source,
    })?;
    let dimension = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
    let inserted = sqlx::query(
        "INSERT INTO thumbnails (origin, media_id, width, height, method, animated, \
         content_type, size_bytes, sha256_hash, datastore_id, location, creation_ts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (media_id, origin, width, height, method, animated) DO NOTHING",
    )
    .bind(t.media.origin.as_str())
    .bind(t.media.media_id.as_str())
    .bind(dimension(t.width))
    .bind(dimension(t.height))
    .bind(t.method.as_str())
    .bind(t.animated)
    .bind(&t.content_type)
    .bind(size)
    .bind(t.sha256.as_str())
    .bind(placement.datastore_id.as_str())
    .bind(&placement.location)
    .bind(t.created_ts)
    .execute(&mut *tx)
    .await
    .during("insert a thumbnail into matrix-media-repo")?
    .rows_affected();
    if inserted == 1 {
        return Ok(InsertOutcome::Inserted);
    }
    let existing: String = sqlx::query_scalar(
        "SELECT sha256_hash FROM thumbnails WHERE origin = $1 AND media_id = $2 \
         AND width = $3 AND height = $4 AND method = $5 AND animated = $6",
    )
    .bind(t.media.origin.as_str())
    .bind(t.media.media_id.as_str())
    .bind(dimension(t.width))
    .bind(dimension(t.height))
    .bind(t.method.as_str())
    .bind(t.animated)
    .fetch_one(&mut *tx)
    .await
    .during("look up a thumbnail in matrix-media-repo")?;
    compare(&existing, &t.sha256, "thumbnails", shown)
}

/// A row that was there already: the same bytes, or a conflict.
fn compare(
    existing: &str,
    ours: &Sha256Hex,
    table: &'static str,
    key: impl FnOnce() -> String,
) -> Result<InsertOutcome, DbError> {
    let existing = digest(existing, table, key)?;
    Ok(if &existing == ours {
        InsertOutcome::AlreadyPresent
    } else {
        InsertOutcome::Conflict {
            existing_sha256: existing,
        }
    })
}

/// Records the last access of the batch's media by hash, the newest time winning (also
/// over what `last_access` holds).
async fn record_last_access(tx: &mut PgConnection, batch: &[StoredMedia]) -> Result<(), DbError> {
    let mut newest: HashMap<&str, i64> = HashMap::new();
    for media in batch {
        if let Some(ts) = media.record.last_access_ts {
            let entry = newest.entry(media.record.sha256.as_str()).or_insert(ts);
            *entry = (*entry).max(ts);
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    let (hashes, times): (Vec<&str>, Vec<i64>) = newest.into_iter().unzip();
    sqlx::query(
        "INSERT INTO last_access (sha256_hash, last_access_ts) \
         SELECT * FROM unnest($1::text[], $2::bigint[]) \
         ON CONFLICT (sha256_hash) DO UPDATE \
         SET last_access_ts = GREATEST(last_access.last_access_ts, EXCLUDED.last_access_ts)",
    )
    .bind(&hashes)
    .bind(&times)
    .execute(&mut *tx)
    .await
    .during("record last access in matrix-media-repo")?;
    Ok(())
}

fn digest(
    sha256_hash: &str,
    table: &'static str,
    key: impl FnOnce() -> String,
) -> Result<Sha256Hex, DbError> {
    Sha256Hex::try_from(sha256_hash).map_err(|e| DbError::InvalidRow {
        table,
        key: key(),
        reason: format!("sha256_hash: {e}"),
    })
}

/// The database error inside an [`MmrError`] of a row read (the only kind the reads
/// the sink makes fail with).
fn into_db_error(error: MmrError) -> DbError {
    match error {
        MmrError::Db(e) => e,
        other => DbError::InvalidRow {
            table: "media",
            key: String::new(),
            reason: other.to_string(),
        },
    }
}
