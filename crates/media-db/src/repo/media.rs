//! Media and thumbnail records: recorded in batches with their blobs, never
//! overwritten, read one at a time or as keyset-paginated streams.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use media_core::datastore::{BlobKey, Datastore};
use media_core::ids::{ServerName, Sha256Hex, UserId};
use media_core::now_ms;
use media_core::records::{MediaKey, MediaRecord, ThumbnailRecord};

use super::sql::{
    Attempt, BlobLock, ROWS_PER_STATEMENT, ThumbnailIdentity, Verified,
    append_quarantine_change_in, bind_thumbnail, cancel_deletions_in, compare_existing,
    held_by_writer, hold_media_in, insert_blob_in, insert_thumbnail_in, lock_blobs_in,
    placeholder_list, reuse_key_lookup_plans_in, select_media, size_column, thumbnail_identity,
    values_list,
};
use super::{PAGE_SIZE, Repository};
use crate::connect::{Pool, on_pool};
use crate::error::{DbError, QueryContext};
use crate::model::{DatastoreId, InsertOutcome, MediaOutcome, NewBlob, NewMedia, PinReport};
use crate::paging::{full_page, keyset_pages};
use crate::roles::MediaIndex;
use crate::rows::{MediaRow, ThumbnailRow};

/// Rows per media ID asked that a range look-up of recorded media reads before it gives
/// way to a look-up per ID ([`Repository::recorded_media_digests`]).
const RANGE_ROWS_PER_ID: usize = 4;

/// Rows a range look-up reads in any case: a page whose range other importers (shards)
/// are filling at the same time still takes the range.
const RANGE_ROWS_SLACK: usize = 256;

#[async_trait]
impl MediaIndex for Repository {
    async fn insert_media_batch(
        &self,
        batch: &[NewMedia],
        store: &dyn Datastore,
    ) -> Result<Vec<MediaOutcome>, DbError> {
        // Multi-row statements: a handful of round trips per batch, not several per media.
        let mut seen: HashSet<&str> = HashSet::new();
        let mut blobs: Vec<(&Sha256Hex, u64, DatastoreId)> = Vec::new();
        for item in batch {
            // A size no column can hold is refused, naming its media, before anything is
            // written (the blob rows below would otherwise name only a digest).
            size_column(item.record.size_bytes, || item.record.key.to_string())?;
            for t in &item.thumbnails {
                size_column(t.size_bytes, || format!("a thumbnail of {}", t.media))?;
            }
            let media = std::iter::once((&item.record.sha256, item.record.size_bytes));
            let thumbnails = item.thumbnails.iter().map(|t| (&t.sha256, t.size_bytes));
            for (sha256, size) in media.chain(thumbnails) {
                if seen.insert(sha256.as_str()) {
                    blobs.push((sha256, size, item.datastore_id));
                }
            }
        }
        // Rows are inserted in key order (see `write_media_batch`).
        blobs.sort_unstable_by_key(|(sha256, ..)| *sha256);
        let sizes: Vec<(&Sha256Hex, u64)> = blobs.iter().map(|(s, n, _)| (*s, *n)).collect();
        self.with_verified_blobs(&sizes, store, |verified| {
            self.write_media_batch(batch, &blobs, verified, store.uri())
        })
        .await
    }

    async fn insert_thumbnail(
        &self,
        thumbnail: &ThumbnailRecord,
        datastore_id: DatastoreId,
        store: &dyn Datastore,
    ) -> Result<InsertOutcome, DbError> {
        let t = thumbnail;
        size_column(t.size_bytes, || format!("a thumbnail of {}", t.media))?;
        let blob = NewBlob {
            sha256: t.sha256.clone(),
            size_bytes: t.size_bytes,
            datastore_id,
        };
        let blobs = [(&blob.sha256, blob.size_bytes)];
        self.with_verified_blobs(&blobs, store, |verified| {
            let blob = &blob;
            async move {
                on_pool!(&self.writer, |p| {
                    let mut tx = p
                        .begin_with(self.begin_write())
                        .await
                        .during("begin a transaction")?;
                    // The media first, as a deletion locks them (see `BlobLock`).
                    if !hold_media_in!(&mut *tx, self.dialect, &t.media)? {
                        return Ok(Attempt::Done(InsertOutcome::MediaMissing));
                    }
                    if let Attempt::Unverified(new) =
                        insert_blob_in!(&mut *tx, self.dialect, blob, &verified, store.uri())?
                    {
                        return Ok(Attempt::Unverified(new));
                    }
                    let outcome = insert_thumbnail_in!(&mut *tx, t)?;
                    tx.commit().await.during("commit a thumbnail")?;
                    Ok(Attempt::Done(outcome))
                })
            }
        })
        .await
    }

    async fn get_media(&self, key: &MediaKey) -> Result<Option<MediaRecord>, DbError> {
        let row: Option<MediaRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(select_media!("WHERE origin = $1 AND media_id = $2"))
                .bind(key.origin.as_str())
                .bind(key.media_id.as_str())
                .fetch_optional(p)
                .await
                .during("read a media")?
        });
        row.map(MediaRow::into_record).transpose()
    }

    async fn thumbnails_of(&self, key: &MediaKey) -> Result<Vec<ThumbnailRecord>, DbError> {
        let rows: Vec<ThumbnailRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT origin, media_id, width, height, method, content_type, animated, sha256, \
                 size_bytes, created_ts FROM thumbnails WHERE origin = $1 AND media_id = $2 \
                 ORDER BY width, height, method, content_type, animated",
            )
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .fetch_all(p)
            .await
            .during("read thumbnails")?
        });
        rows.into_iter().map(ThumbnailRow::into_record).collect()
    }

    async fn existing_media_digests(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Sha256Hex>, DbError> {
        let rows = self.recorded_media_digests(origin, media_ids).await?;
        let mut found = HashMap::new();
        for (media_id, sha256) in rows {
            let sha256 = Sha256Hex::try_from(sha256.as_str()).map_err(|e| DbError::InvalidRow {
                table: "media",
                key: format!("{origin}/{media_id}"),
                reason: format!("sha256: {e}"),
            })?;
            found.insert(media_id, sha256);
        }
        Ok(found)
    }

    async fn recorded_thumbnails(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Vec<ThumbnailRecord>>, DbError> {
        let rows: Vec<ThumbnailRow> = self
            .rows_of_media(
                "origin, media_id, width, height, method, content_type, animated, sha256, \
                 size_bytes, created_ts FROM thumbnails",
                origin,
                media_ids,
                "look up thumbnails",
            )
            .await?;
        let mut found: HashMap<String, Vec<ThumbnailRecord>> = HashMap::new();
        for row in rows {
            let record = row.into_record()?;
            found
                .entry(record.media.media_id.to_string())
                .or_default()
                .push(record);
        }
        Ok(found)
    }

    fn media_by_uploader(&self, user: &UserId) -> BoxStream<'static, Result<MediaRecord, DbError>> {
        self.media_pages(MediaFilter::Uploader(user.as_str().to_owned()))
    }

    fn media_by_origin(
        &self,
        origin: &ServerName,
    ) -> BoxStream<'static, Result<MediaRecord, DbError>> {
        self.media_pages(MediaFilter::Origin(origin.as_str().to_owned()))
    }

    async fn count_media_by_uploader(&self, user: &UserId) -> Result<u64, DbError> {
        self.count_media(
            "SELECT COUNT(*) FROM media WHERE user_id = $1",
            user.as_str(),
        )
        .await
    }

    async fn count_media_by_origin(&self, origin: &ServerName) -> Result<u64, DbError> {
        self.count_media(
            "SELECT COUNT(*) FROM media WHERE origin = $1",
            origin.as_str(),
        )
        .await
    }

    async fn pin_media(&self, keys: &[MediaKey]) -> Result<PinReport, DbError> {
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            let mut report = PinReport::default();
            for key in keys {
                let changed = sqlx::query(
                    "UPDATE media SET purpose = 'pinned' \
                     WHERE origin = $1 AND media_id = $2 AND purpose <> 'pinned'",
                )
                .bind(key.origin.as_str())
                .bind(key.media_id.as_str())
                .execute(&mut *tx)
                .await
                .during("pin a media")?
                .rows_affected();
                if changed == 1 {
                    report.pinned += 1;
                    continue;
                }
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM media WHERE origin = $1 AND media_id = $2",
                )
                .bind(key.origin.as_str())
                .bind(key.media_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .during("look up a media")?;
                match exists {
                    Some(_) => report.already_pinned += 1,
                    None => report.missing += 1,
                }
            }
            tx.commit().await.during("commit pins")?;
            Ok(report)
        })
    }
}

impl Repository {
    /// One try at recording a batch (see [`MediaIndex::insert_media_batch`]) whose new
    /// blobs must all be in `verified`; `blobs` in digest order.
    ///
    /// Each table's rows are inserted in key order, whatever the batch's order, and the
    /// tables always in the same order. Two runs recording the same media or bytes at
    /// once (two imports, or shards sharing bytes) each wait for the rows the other
    /// inserted first; in key order neither can hold a row the other waits for while it
    /// waits itself. In batch order PostgreSQL aborted one of them ("deadlock
    /// detected"); SQLite's one writer never interleaves them. On PostgreSQL the media
    /// recorded already and then the blob rows recorded already are locked after the
    /// inserts (see `BlobLock`), media before blobs as a deletion takes them; the
    /// statements after that wait for no one: they read, append to the quarantine log
    /// (no unique key), or insert thumbnails whose rows are already committed.
    async fn write_media_batch(
        &self,
        batch: &[NewMedia],
        blobs: &[(&Sha256Hex, u64, DatastoreId)],
        verified: Verified,
        datastore: String,
    ) -> Result<Attempt<Vec<MediaOutcome>>, DbError> {
        // Multi-row statements: a handful of round trips per batch, not several per media.
        let now = now_ms();
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            // Its statements that read a range are unnamed; the others look up one key.
            reuse_key_lookup_plans_in!(&mut *tx, self.dialect)?;

            // 1. Blobs: insert-or-get; new rows cancel queued deletions.
            let mut new_blobs: Vec<String> = Vec::new();
            for chunk in blobs.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
                     VALUES {} ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
                    values_list(self.dialect, chunk.len(), 5)
                );
                let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).persistent(false);
                for (sha256, size, datastore_id) in chunk {
                    query = query
                        .bind(sha256.as_str())
                        .bind(size_column(*size, || format!("blob {sha256}"))?)
                        .bind(datastore_id.0)
                        .bind(BlobKey::for_hash(sha256).as_str().to_owned())
                        .bind(now);
                }
                new_blobs.extend(query.fetch_all(&mut *tx).await.during("insert blobs")?);
            }
            // Every new blob was seen in the datastore before this transaction began,
            // and no drain has deleted an object since.
            let unverified: Vec<String> = new_blobs
                .iter()
                .filter(|sha256| !verified.digests.contains(sha256.as_str()))
                .cloned()
                .collect();
            if !unverified.is_empty() {
                return Ok(Attempt::Unverified(unverified));
            }
            let new_blobs: Vec<&str> = new_blobs.iter().map(String::as_str).collect();
            if let Some(again) = cancel_deletions_in!(
                &mut *tx,
                self.dialect,
                &new_blobs,
                datastore.clone(),
                &verified
            )? {
                return Ok(Attempt::Unverified(again));
            }

            // 2. Media: never overwritten; an existing one is the same bytes or a conflict.
            let mut inserted: HashSet<(String, String)> = HashSet::new();
            let mut in_key_order: Vec<&NewMedia> = batch.iter().collect();
            // Stable: of two media with one key, the first is recorded.
            in_key_order.sort_by(|a, b| a.record.key.cmp(&b.record.key));
            for chunk in in_key_order.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO media (origin, media_id, sha256, upload_name, content_type, \
                     user_id, size_bytes, created_ts, last_access_ts, quarantined, \
                     quarantined_by, purpose, imported_from) VALUES {} \
                     ON CONFLICT (origin, media_id) DO NOTHING RETURNING origin, media_id",
                    values_list(self.dialect, chunk.len(), 13)
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(false);
                for item in chunk {
                    let r = &item.record;
                    query = query
                        .bind(r.key.origin.as_str())
                        .bind(r.key.media_id.as_str())
                        .bind(r.sha256.as_str())
                        .bind(r.upload_name.as_deref())
                        .bind(r.content_type.as_deref())
                        .bind(r.uploader.as_ref().map(|u| u.as_str()))
                        .bind(size_column(r.size_bytes, || r.key.to_string())?)
                        .bind(r.created_ts)
                        .bind(r.last_access_ts)
                        .bind(r.quarantined)
                        .bind(r.quarantined_by.as_deref())
                        .bind(r.purpose.as_str())
                        .bind(r.imported_from.as_deref());
                }
                let rows: Vec<(String, String)> =
                    query.fetch_all(&mut *tx).await.during("insert media")?;
                inserted.extend(rows);
            }
            // The media recorded already, their rows held until this transaction commits
            // (PostgreSQL: thumbnails may be added to them; see `BlobLock`), in key order.
            let mut existing_keys: Vec<&MediaKey> = in_key_order
                .iter()
                .map(|item| &item.record.key)
                .filter(|k| !inserted.contains(&(k.origin.to_string(), k.media_id.to_string())))
                .collect();
            existing_keys.dedup();
            let mut existing: HashMap<(String, String), String> = HashMap::new();
            for chunk in existing_keys.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "SELECT origin, media_id, sha256 FROM media \
                     WHERE (origin, media_id) IN (VALUES {}) ORDER BY origin, media_id{}",
                    values_list(self.dialect, chunk.len(), 2),
                    held_by_writer(self.dialect)
                );
                let mut query =
                    sqlx::query_as::<_, (String, String, String)>(sqlx::AssertSqlSafe(sql))
                        .persistent(false);
                for key in chunk {
                    query = query.bind(key.origin.as_str()).bind(key.media_id.as_str());
                }
                let rows = query
                    .fetch_all(&mut *tx)
                    .await
                    .during("read existing media")?;
                existing.extend(
                    rows.into_iter()
                        .map(|(origin, media_id, sha256)| ((origin, media_id), sha256)),
                );
            }
            // The blob rows that were there already stay until this transaction commits.
            // Locked after the media, as a deletion locks them: a purge deleting these
            // media waits for their rows' locks above, never the other way round.
            let new: HashSet<&str> = new_blobs.iter().copied().collect();
            let recorded: Vec<&str> = blobs
                .iter()
                .map(|(sha256, ..)| sha256.as_str())
                .filter(|sha256| !new.contains(sha256))
                .collect();
            let gone = lock_blobs_in!(&mut *tx, self.dialect, &recorded, BlobLock::Referenced)?;
            if !gone.is_empty() {
                return Ok(Attempt::Unverified(gone));
            }
            let mut outcomes = Vec::with_capacity(batch.len());
            for item in batch {
                let r = &item.record;
                let id = (r.key.origin.to_string(), r.key.media_id.to_string());
                let media = if inserted.contains(&id) {
                    if r.quarantined {
                        append_quarantine_change_in!(
                            &mut *tx,
                            &r.key.origin,
                            &r.key.media_id,
                            true,
                            now
                        )?;
                    }
                    InsertOutcome::Inserted
                } else {
                    let Some(existing) = existing.get(&id) else {
                        // Deleted since its insert met it: the whole batch again.
                        return Ok(Attempt::Unverified(Vec::new()));
                    };
                    compare_existing("media", &r.key.to_string(), existing, &r.sha256)?
                };
                outcomes.push(MediaOutcome {
                    media,
                    thumbnails: Vec::new(),
                });
            }

            // 3. Thumbnails of the media that are now recorded with these bytes.
            let thumbnails: Vec<(usize, &ThumbnailRecord)> = batch
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    matches!(
                        outcomes[*i].media,
                        InsertOutcome::Inserted | InsertOutcome::AlreadyPresent
                    )
                })
                .flat_map(|(i, item)| item.thumbnails.iter().map(move |t| (i, t)))
                .collect();
            let mut inserted: HashSet<ThumbnailIdentity> = HashSet::new();
            let mut in_key_order: Vec<&ThumbnailRecord> =
                thumbnails.iter().map(|(_, t)| *t).collect();
            in_key_order.sort_by_cached_key(|t| thumbnail_identity(t));
            for chunk in in_key_order.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO thumbnails (origin, media_id, width, height, method, \
                     content_type, animated, sha256, size_bytes, created_ts) VALUES {} \
                     ON CONFLICT (origin, media_id, width, height, method, content_type, \
                     animated) DO NOTHING RETURNING origin, media_id, width, height, method, \
                     content_type, animated",
                    values_list(self.dialect, chunk.len(), 10)
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(false);
                for t in chunk {
                    query = bind_thumbnail!(query, t, all);
                }
                let rows: Vec<ThumbnailIdentity> = query
                    .fetch_all(&mut *tx)
                    .await
                    .during("insert thumbnails")?;
                inserted.extend(rows);
            }
            for (i, t) in thumbnails {
                let outcome = if inserted.contains(&thumbnail_identity(t)) {
                    InsertOutcome::Inserted
                } else {
                    insert_thumbnail_in!(&mut *tx, t)?
                };
                outcomes[i].thumbnails.push(outcome);
            }
            tx.commit().await.during("commit media")?;
            Ok(Attempt::Done(outcomes))
        })
    }

    pub(super) async fn count_media(&self, sql: &'static str, value: &str) -> Result<u64, DbError> {
        let count: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(sql)
                .bind(value)
                .fetch_one(p)
                .await
                .during("count media")?
        });
        Ok(count as u64)
    }

    /// Every media of the repository, ordered by (origin, media_id), fetched page by
    /// page (a whole repository moved elsewhere: `media_admin mmr push`).
    pub fn all_media(&self) -> BoxStream<'static, Result<MediaRecord, DbError>> {
        self.media_pages(MediaFilter::All)
    }

    pub(super) fn media_pages(
        &self,
        filter: MediaFilter,
    ) -> BoxStream<'static, Result<MediaRecord, DbError>> {
        let repo = self.clone();
        // The cursor: the (origin, media_id) of the last row of the previous page.
        keyset_pages((String::new(), String::new()), move |(origin, media_id)| {
            let (repo, filter) = (repo.clone(), filter.clone());
            async move {
                let rows = repo.media_page(&filter, &origin, &media_id).await?;
                let next =
                    full_page(&rows, PAGE_SIZE).map(|r| (r.origin.clone(), r.media_id.clone()));
                Ok((rows, next))
            }
        })
        .map_ok(|rows| stream::iter(rows.into_iter().map(MediaRow::into_record)))
        .try_flatten()
        .boxed()
    }

    async fn media_page(
        &self,
        filter: &MediaFilter,
        after_origin: &str,
        after_media_id: &str,
    ) -> Result<Vec<MediaRow>, DbError> {
        let (sql, value) = media_page_query(filter);
        Ok(on_pool!(&self.pool, |p| {
            sqlx::query_as(sql)
                .bind(value.as_str())
                .bind(after_origin)
                .bind(after_media_id)
                .bind(PAGE_SIZE)
                .fetch_all(p)
                .await
                .during("read a page of media")?
        }))
    }
}

/// The statement of a page of `filter`'s media after a key (bound as `$2`, `$3`), and
/// the value bound as `$1`. The key is compared as a row value: both engines read it as
/// a range of an index, where `origin > $2 OR (origin = $2 AND media_id > $3)` made each
/// page scan every row before it again.
fn media_page_query(filter: &MediaFilter) -> (&'static str, &String) {
    match filter {
        MediaFilter::Uploader(user) => (
            select_media!(
                "WHERE user_id = $1 AND (origin, media_id) > ($2, $3) \
                 ORDER BY origin, media_id LIMIT $4"
            ),
            user,
        ),
        MediaFilter::Origin(origin) => (
            select_media!(
                "WHERE origin = $1 AND origin >= $2 AND media_id > $3 \
                 ORDER BY origin, media_id LIMIT $4"
            ),
            origin,
        ),
        MediaFilter::Room(room) => (
            select_media!(
                "JOIN room_media AS r USING (origin, media_id) \
                 WHERE r.room_id = $1 AND (r.origin, r.media_id) > ($2, $3) \
                 ORDER BY r.origin, r.media_id LIMIT $4"
            ),
            room,
        ),
        // `$1` is bound to "" so that every filter binds the same parameters.
        MediaFilter::All => (
            select_media!(
                "WHERE $1 = '' AND (origin, media_id) > ($2, $3) \
                 ORDER BY origin, media_id LIMIT $4"
            ),
            &EVERY_MEDIA,
        ),
    }
}

/// The value [`MediaFilter::All`] binds.
static EVERY_MEDIA: String = String::new();

/// Which media a stream pages through.
#[derive(Debug, Clone)]
pub(super) enum MediaFilter {
    /// Those a user uploaded.
    Uploader(String),
    /// Those of an origin.
    Origin(String),
    /// Those recorded in a room ([`crate::RoomIndex`]).
    Room(String),
    /// Every media.
    All,
}

impl Repository {
    /// `SELECT {columns_from} WHERE origin = ? AND media_id IN (…)` over `media_ids` of
    /// `origin`, in statements of at most [`ROWS_PER_STATEMENT`] IDs.
    /// The `(media_id, sha256)` of those of `media_ids` of `origin` that are recorded.
    ///
    /// An importer asks a page of IDs at a time, in key order, and a new or resumed
    /// import holds few other media of the origin between the page's first and last ID.
    /// One range scan of the key index then answers the page, where a look-up per ID
    /// descends the index once for each (a PostgreSQL import of a million media: 0.3 s
    /// of the server's time, against 2.6–3.4 s). A range holding more than [`RANGE_ROWS_PER_ID`] rows per ID asked
    /// (IDs in no order, or an origin recorded densely already) falls back to the
    /// look-up per ID. The range's ends are the column's own order (PostgreSQL's
    /// collation; SQLite's is bytewise, as Rust's).
    async fn recorded_media_digests(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<Vec<(String, String)>, DbError> {
        let (Some(first), Some(last)) = (media_ids.iter().min(), media_ids.iter().max()) else {
            return Ok(Vec::new());
        };
        let limit = media_ids.len() * RANGE_ROWS_PER_ID + RANGE_ROWS_SLACK;
        let in_range: Vec<(String, String)> = match &self.pool {
            Pool::Sqlite(p) => sqlx::query_as(
                "SELECT media_id, sha256 FROM media \
                 WHERE origin = $1 AND media_id BETWEEN $2 AND $3 LIMIT $4",
            )
            .bind(origin.as_str())
            .bind(*first)
            .bind(*last)
            .bind(limit as i64)
            .fetch_all(p)
            .await
            .during("look up media")?,
            Pool::Postgres(p) => sqlx::query_as(
                "SELECT media_id, sha256 FROM media WHERE origin = $1 \
                 AND media_id BETWEEN (SELECT min(id) FROM unnest($2::TEXT[]) AS id) \
                 AND (SELECT max(id) FROM unnest($2::TEXT[]) AS id) LIMIT $3",
            )
            .bind(origin.as_str())
            .bind(media_ids)
            .bind(limit as i64)
            .fetch_all(p)
            .await
            .during("look up media")?,
        };
        if in_range.len() < limit {
            let asked: HashSet<&str> = media_ids.iter().copied().collect();
            return Ok(in_range
                .into_iter()
                .filter(|(id, _)| asked.contains(id.as_str()))
                .collect());
        }
        self.rows_of_media(
            "media_id, sha256 FROM media",
            origin,
            media_ids,
            "look up media",
        )
        .await
    }

    pub(super) async fn rows_of_media<R>(
        &self,
        columns_from: &str,
        origin: &ServerName,
        media_ids: &[&str],
        operation: &'static str,
    ) -> Result<Vec<R>, DbError>
    where
        R: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let mut rows = Vec::new();
        for chunk in media_ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {columns_from} WHERE origin = {} AND media_id IN ({})",
                placeholder_list(self.dialect, 1, 1),
                placeholder_list(self.dialect, chunk.len(), 2)
            );
            let page: Vec<R> = on_pool!(&self.pool, |p| {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .persistent(false)
                    .bind(origin.as_str());
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(p).await.during(operation)?
            });
            rows.extend(page);
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_core::DatastoreExt;
    use media_core::records::MediaKey;
    use sqlx::Connection;

    #[tokio::test]
    async fn every_page_of_media_starts_where_the_last_one_ended_in_an_index() {
        let repo = crate::connect("sqlite::memory:").await.unwrap();
        let Pool::Sqlite(pool) = &repo.pool else {
            panic!("an in-memory repository is SQLite");
        };
        for filter in [
            MediaFilter::Uploader("@alice:example.org".to_owned()),
            MediaFilter::Origin("example.org".to_owned()),
            MediaFilter::Room("!room:example.org".to_owned()),
            MediaFilter::All,
        ] {
            let (sql, value) = media_page_query(&filter);
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind(value.as_str())
                    .bind("example.org")
                    .bind("abc")
                    .bind(PAGE_SIZE)
                    .fetch_all(pool)
                    .await
                    .unwrap();
            crate::repo::sql::assert_reads_a_key_range(&plan, &format!("{filter:?}"));
        }
    }

    #[tokio::test]
    async fn batches_of_every_size_keep_no_compiled_statement_per_size() {
        let dir = tempfile::tempdir().unwrap();
        let repo =
            crate::connect(format!("sqlite://{}", dir.path().join("repo.db").display()).as_str())
                .await
                .unwrap();
        let store = media_store::MemoryDatastore::new();
        let datastore_id = repo.register_datastore("memory://test").await.unwrap();
        let sizes = 1..=24;
        for size in sizes.clone() {
            let mut batch = Vec::new();
            for n in 0..size {
                let media_id = format!("m{size}x{n}");
                let put = store.put_bytes(media_id.as_bytes()).await.unwrap();
                batch.push(NewMedia {
                    record: MediaRecord::new(
                        MediaKey::new("example.org".parse().unwrap(), media_id.parse().unwrap()),
                        put.blob.sha256,
                        put.blob.size,
                        1_700_000_000_000,
                    ),
                    thumbnails: Vec::new(),
                    datastore_id,
                });
            }
            repo.insert_media_batch(&batch, &store).await.unwrap();
        }
        let Pool::Sqlite(writer) = &repo.writer else {
            panic!("a SQLite file repository writes through its own connection");
        };
        let cached = writer.acquire().await.unwrap().cached_statements_size();
        assert!(
            cached < sizes.count(),
            "{cached} statements stay compiled on the writer after batches of 24 sizes"
        );
    }
}
