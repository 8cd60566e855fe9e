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

use std::collections::{HashMap, HashSet};
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
        let media = insert_media(&mut tx, batch, &placements).await?;
        // A media whose ID holds other bytes gets none of its thumbnails recorded.
        let thumbnails: Vec<&ThumbnailRecord> = batch
            .iter()
            .zip(&media)
            .filter(|(_, outcome)| !matches!(outcome, InsertOutcome::Conflict { .. }))
            .flat_map(|(m, _)| &m.thumbnails)
            .collect();
        let mut thumbnail_outcomes = insert_thumbnails(&mut tx, &thumbnails, &placements)
            .await?
            .into_iter();
        let outcomes = batch
            .iter()
            .zip(media)
            .map(|(m, outcome)| MediaOutcome {
                thumbnails: match outcome {
                    InsertOutcome::Conflict { .. } => Vec::new(),
                    _ => thumbnail_outcomes
                        .by_ref()
                        .take(m.thumbnails.len())
                        .collect(),
                },
                media: outcome,
            })
            .collect();
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
        let outcome = insert_thumbnails(&mut tx, &[thumbnail], &placements)
            .await?
            .remove(0);
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
    /// The `puts` already listed, to list each once.
    listed: HashSet<(MmrDatastoreId, Sha256Hex)>,
}

impl Placements {
    /// The bytes `sha256` were put (content-addressed) into `target`; the first offer of
    /// a hash wins.
    fn offer(&mut self, sha256: &Sha256Hex, target: &Target) {
        if self.listed.insert((target.id.clone(), sha256.clone())) {
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

/// Inserts the media rows of `batch` (never overwriting) in the open transaction, one
/// statement for the batch; returns each media's outcome, in order.
async fn insert_media(
    tx: &mut PgConnection,
    batch: &[StoredMedia],
    placements: &HashMap<Sha256Hex, Placement>,
) -> Result<Vec<InsertOutcome>, DbError> {
    let mut rows = MediaColumns::default();
    for media in batch {
        let r = &media.record;
        let size = size_to_i64(r.size_bytes).map_err(|source| DbError::SizeOutOfRange {
            item: r.key.to_string(),
            source,
        })?;
        let placement = &placements[&r.sha256];
        rows.origin.push(r.key.origin.as_str());
        rows.media_id.push(r.key.media_id.as_str());
        rows.upload_name
            .push(r.upload_name.as_deref().unwrap_or(""));
        rows.content_type
            .push(r.content_type.as_deref().unwrap_or(""));
        rows.user_id
            .push(r.uploader.as_ref().map(|u| u.as_str()).unwrap_or(""));
        rows.sha256.push(r.sha256.as_str());
        rows.size.push(size);
        rows.datastore_id.push(placement.datastore_id.as_str());
        rows.location.push(&placement.location);
        rows.created_ts.push(r.created_ts);
        rows.quarantined.push(r.quarantined);
    }
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO media (origin, media_id, upload_name, content_type, user_id, \
         sha256_hash, size_bytes, datastore_id, location, creation_ts, quarantined) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::boolean[]) \
         ON CONFLICT (media_id, origin) DO NOTHING \
         RETURNING origin, media_id",
    )
    .bind(&rows.origin)
    .bind(&rows.media_id)
    .bind(&rows.upload_name)
    .bind(&rows.content_type)
    .bind(&rows.user_id)
    .bind(&rows.sha256)
    .bind(&rows.size)
    .bind(&rows.datastore_id)
    .bind(&rows.location)
    .bind(&rows.created_ts)
    .bind(&rows.quarantined)
    .fetch_all(&mut *tx)
    .await
    .during("insert media into matrix-media-repo")?;
    let mut fresh: HashSet<(String, String)> = inserted.into_iter().collect();
    // The rows that were there already (only looked up when some were).
    let existing: HashMap<(String, String), String> = if fresh.len() == batch.len() {
        HashMap::new()
    } else {
        sqlx::query_as(
            "SELECT m.origin, m.media_id, m.sha256_hash FROM media m \
             JOIN unnest($1::text[], $2::text[]) AS k(origin, media_id) \
             ON m.origin = k.origin AND m.media_id = k.media_id",
        )
        .bind(&rows.origin)
        .bind(&rows.media_id)
        .fetch_all(&mut *tx)
        .await
        .during("look up media in matrix-media-repo")?
        .into_iter()
        .map(|(origin, media_id, sha256): (String, String, String)| ((origin, media_id), sha256))
        .collect()
    };
    batch
        .iter()
        .map(|media| {
            let r = &media.record;
            let key = (r.key.origin.to_string(), r.key.media_id.to_string());
            // A key named twice in the batch was inserted once: its first mention's.
            if fresh.remove(&key) {
                Ok(InsertOutcome::Inserted)
            } else {
                compare(&existing[&key], &r.sha256, "media", || r.key.to_string())
            }
        })
        .collect()
}

/// The columns of `media` rows to insert, one array each.
#[derive(Default)]
struct MediaColumns<'a> {
    origin: Vec<&'a str>,
    media_id: Vec<&'a str>,
    upload_name: Vec<&'a str>,
    content_type: Vec<&'a str>,
    user_id: Vec<&'a str>,
    sha256: Vec<&'a str>,
    size: Vec<i64>,
    datastore_id: Vec<&'a str>,
    location: Vec<&'a str>,
    created_ts: Vec<i64>,
    quarantined: Vec<bool>,
}

/// The identity of a `thumbnails` row: its unique key.
type ThumbnailKey = (String, String, i32, i32, String, bool);

/// Inserts the thumbnail rows (never overwriting) in the open transaction, one statement
/// for all; returns each thumbnail's outcome, in order.
async fn insert_thumbnails(
    tx: &mut PgConnection,
    thumbnails: &[&ThumbnailRecord],
    placements: &HashMap<Sha256Hex, Placement>,
) -> Result<Vec<InsertOutcome>, DbError> {
    if thumbnails.is_empty() {
        return Ok(Vec::new());
    }
    let dimension = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
    let key_of = |t: &ThumbnailRecord| -> ThumbnailKey {
        (
            t.media.origin.to_string(),
            t.media.media_id.to_string(),
            dimension(t.width),
            dimension(t.height),
            t.method.as_str().to_owned(),
            t.animated,
        )
    };
    let mut rows = ThumbnailColumns::default();
    for t in thumbnails {
        let size = size_to_i64(t.size_bytes).map_err(|source| DbError::SizeOutOfRange {
            item: format!("a thumbnail of {}", t.media),
            source,
        })?;
        let placement = &placements[&t.sha256];
        rows.origin.push(t.media.origin.as_str());
        rows.media_id.push(t.media.media_id.as_str());
        rows.width.push(dimension(t.width));
        rows.height.push(dimension(t.height));
        rows.method.push(t.method.as_str());
        rows.animated.push(t.animated);
        rows.content_type.push(&t.content_type);
        rows.size.push(size);
        rows.sha256.push(t.sha256.as_str());
        rows.datastore_id.push(placement.datastore_id.as_str());
        rows.location.push(&placement.location);
        rows.created_ts.push(t.created_ts);
    }
    let inserted: Vec<ThumbnailKey> = sqlx::query_as(
        "INSERT INTO thumbnails (origin, media_id, width, height, method, animated, \
         content_type, size_bytes, sha256_hash, datastore_id, location, creation_ts) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], \
         $6::boolean[], $7::text[], $8::bigint[], $9::text[], $10::text[], $11::text[], \
         $12::bigint[]) \
         ON CONFLICT (media_id, origin, width, height, method, animated) DO NOTHING \
         RETURNING origin, media_id, width, height, method, animated",
    )
    .bind(&rows.origin)
    .bind(&rows.media_id)
    .bind(&rows.width)
    .bind(&rows.height)
    .bind(&rows.method)
    .bind(&rows.animated)
    .bind(&rows.content_type)
    .bind(&rows.size)
    .bind(&rows.sha256)
    .bind(&rows.datastore_id)
    .bind(&rows.location)
    .bind(&rows.created_ts)
    .fetch_all(&mut *tx)
    .await
    .during("insert thumbnails into matrix-media-repo")?;
    let mut fresh: HashSet<ThumbnailKey> = inserted.into_iter().collect();
    // The rows that were there already (only looked up when some were).
    let existing: HashMap<ThumbnailKey, String> = if fresh.len() == thumbnails.len() {
        HashMap::new()
    } else {
        sqlx::query_as(
            "SELECT t.origin, t.media_id, t.width, t.height, t.method, t.animated, \
             t.sha256_hash FROM thumbnails t \
             JOIN unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], \
             $6::boolean[]) AS k(origin, media_id, width, height, method, animated) \
             ON t.origin = k.origin AND t.media_id = k.media_id AND t.width = k.width \
             AND t.height = k.height AND t.method = k.method AND t.animated = k.animated",
        )
        .bind(&rows.origin)
        .bind(&rows.media_id)
        .bind(&rows.width)
        .bind(&rows.height)
        .bind(&rows.method)
        .bind(&rows.animated)
        .fetch_all(&mut *tx)
        .await
        .during("look up thumbnails in matrix-media-repo")?
        .into_iter()
        .map(
            |(origin, media_id, width, height, method, animated, sha256): (
                String,
                String,
                i32,
                i32,
                String,
                bool,
                String,
            )| ((origin, media_id, width, height, method, animated), sha256),
        )
        .collect()
    };
    thumbnails
        .iter()
        .map(|t| {
            let key = key_of(t);
            if fresh.remove(&key) {
                Ok(InsertOutcome::Inserted)
            } else {
                compare(&existing[&key], &t.sha256, "thumbnails", || {
                    format!("a thumbnail of {}", t.media)
                })
            }
        })
        .collect()
}

/// The columns of `thumbnails` rows to insert (the first six also look them up).
#[derive(Default)]
struct ThumbnailColumns<'a> {
    origin: Vec<&'a str>,
    media_id: Vec<&'a str>,
    width: Vec<i32>,
    height: Vec<i32>,
    method: Vec<&'a str>,
    animated: Vec<bool>,
    content_type: Vec<&'a str>,
    size: Vec<i64>,
    sha256: Vec<&'a str>,
    datastore_id: Vec<&'a str>,
    location: Vec<&'a str>,
    created_ts: Vec<i64>,
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
