//! An MMR deployment, open: its config, a pool on its database (whose schema was checked)
//! and its datastores; and the reads the tools make of its rows, as our domain records
//! with each row's `(datastore_id, location)`.
//!
//! How MMR's columns become our records: `user_id` `""` is a remote media (no uploader);
//! an empty `upload_name` or `content_type` is none; `last_access` is joined by hash (it
//! is kept per bytes, not per media); `media_attributes.purpose` `pinned` is
//! [`Purpose::Pinned`] and anything else (`none`, or a purpose this build does not know)
//! is [`Purpose::None`]. A row holding an identifier, digest or size we refuse becomes an
//! error for that item only ([`DbError::InvalidRow`]); the rows after it are still read.

use std::collections::HashMap;

use futures::stream::{self, BoxStream, StreamExt};
use media_core::ids::{MediaId, ServerName, Sha256Hex, UserId};
use media_core::records::{MediaKey, MediaRecord, Purpose, ThumbnailRecord};
use media_db::DbError;
use media_db::connect::{OpenOptions, Pool, open_pool};
use media_db::error::QueryContext;
use media_db::paging::{full_page, keyset_pages};
use sqlx::PgPool;

use crate::config::{MmrConfig, MmrDatastoreId};
use crate::datastores::{Access, MmrDatastore, MmrDatastores};
use crate::error::MmrError;
use crate::schema;

/// The query of media rows with their last access and purpose, followed by `$filter`
/// (a literal: the whole statement stays a static string).
macro_rules! select_media {
    ($filter:literal) => {
        concat!(
            "SELECT m.origin, m.media_id, m.upload_name, m.content_type, m.user_id, \
             m.sha256_hash, m.size_bytes, m.creation_ts, m.quarantined, m.datastore_id, \
             m.location, la.last_access_ts, a.purpose \
             FROM media m \
             LEFT JOIN last_access la ON la.sha256_hash = m.sha256_hash \
             LEFT JOIN media_attributes a ON a.origin = m.origin AND a.media_id = m.media_id ",
            $filter
        )
    };
}

/// Media rows read per query when streaming a user's or an origin's media.
pub const PAGE_SIZE: i64 = 500;

/// Where a row's bytes are: `(datastore_id, location)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The datastore's ID as the row holds it.
    pub datastore_id: MmrDatastoreId,
    /// The object's location in that datastore.
    pub location: String,
}

/// A `media` row: the record and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmrMedia {
    /// The media as our domain records it.
    pub record: MediaRecord,
    /// Where its bytes are.
    pub placement: Placement,
}

/// A `thumbnails` row: the record and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmrThumbnail {
    /// The thumbnail as our domain records it.
    pub record: ThumbnailRecord,
    /// Where its bytes are.
    pub placement: Placement,
}

/// Why a media ID must not be (re)used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockedId {
    /// Listed in `reserved_media`: never to be used.
    Reserved {
        /// The reason MMR recorded.
        reason: String,
    },
    /// Listed in `media_id_hold`: held for an upload in progress.
    Held {
        /// The reason MMR recorded.
        reason: String,
        /// When it was held, ms since the epoch (0 when MMR did not record it).
        held_ts: i64,
    },
}

/// A matrix-media-repo deployment, open. See the [module documentation](self).
#[derive(Debug)]
pub struct MmrDeployment {
    config: MmrConfig,
    pool: PgPool,
    datastores: MmrDatastores,
}

impl MmrDeployment {
    /// Connects to the deployment's database (at most `max_connections` at once), checks
    /// that MMR's schema is there ([`schema::check`]) and opens its datastores for
    /// `access`. With [`Access::ReadOnly`], every connection is read-only.
    pub async fn open(
        config: MmrConfig,
        access: Access,
        max_connections: u32,
    ) -> Result<Self, MmrError> {
        let options = OpenOptions {
            create: false,
            read_only: access == Access::ReadOnly,
            max_connections,
        };
        let Pool::Postgres(pool) = open_pool(&config.database, options).await? else {
            unreachable!("the config only accepts a PostgreSQL database");
        };
        schema::check(&pool, &config.database.to_string()).await?;
        let datastores = MmrDatastores::open(&config.datastores, access).await?;
        Ok(Self {
            config,
            pool,
            datastores,
        })
    }

    /// The config it was opened with.
    pub fn config(&self) -> &MmrConfig {
        &self.config
    }

    /// The pool on its database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Its datastores.
    pub fn datastores(&self) -> &MmrDatastores {
        &self.datastores
    }

    /// The datastore holding a row's bytes, or [`MmrError::UnknownDatastore`] naming
    /// `item` when the config does not list it.
    pub fn datastore_of(
        &self,
        placement: &Placement,
        item: &MediaKey,
    ) -> Result<&MmrDatastore, MmrError> {
        self.datastores
            .get(placement.datastore_id.as_str())
            .ok_or_else(|| MmrError::UnknownDatastore {
                item: item.mxc().to_string(),
                id: placement.datastore_id.as_str().to_owned(),
            })
    }

    /// Every media `user` uploaded, ordered by origin and media ID, read page by page.
    pub fn media_by_uploader(
        &self,
        user: &UserId,
    ) -> BoxStream<'static, Result<MmrMedia, MmrError>> {
        let (pool, user) = (self.pool.clone(), user.to_string());
        let pages = keyset_pages((String::new(), String::new()), move |(origin, media_id)| {
            let (pool, user) = (pool.clone(), user.clone());
            async move {
                let rows: Vec<MediaRow> = sqlx::query_as(select_media!(
                    "WHERE m.user_id = $1 AND (m.origin, m.media_id) > ($2, $3) \
                     ORDER BY m.origin, m.media_id LIMIT $4"
                ))
                .bind(&user)
                .bind(&origin)
                .bind(&media_id)
                .bind(PAGE_SIZE)
                .fetch_all(&pool)
                .await
                .during("read a user's media from matrix-media-repo")?;
                let next =
                    full_page(&rows, PAGE_SIZE).map(|r| (r.origin.clone(), r.media_id.clone()));
                Ok((rows, next))
            }
        });
        records(pages)
    }

    /// Every media of the deployment, ordered by origin and media ID, read page by page
    /// (a whole deployment moved into our repository: `media_admin mmr pull`).
    pub fn all_media(&self) -> BoxStream<'static, Result<MmrMedia, MmrError>> {
        let pool = self.pool.clone();
        let pages = keyset_pages((String::new(), String::new()), move |(origin, media_id)| {
            let pool = pool.clone();
            async move {
                let rows: Vec<MediaRow> = sqlx::query_as(select_media!(
                    "WHERE (m.origin, m.media_id) > ($1, $2) \
                     ORDER BY m.origin, m.media_id LIMIT $3"
                ))
                .bind(&origin)
                .bind(&media_id)
                .bind(PAGE_SIZE)
                .fetch_all(&pool)
                .await
                .during("read media from matrix-media-repo")?;
                let next =
                    full_page(&rows, PAGE_SIZE).map(|r| (r.origin.clone(), r.media_id.clone()));
                Ok((rows, next))
            }
        });
        records(pages)
    }

    /// How many media the deployment holds.
    pub async fn count_all_media(&self) -> Result<u64, MmrError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM media")
            .fetch_one(&self.pool)
            .await
            .during("count media in matrix-media-repo")?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// How many media `user` uploaded.
    pub async fn count_media_by_uploader(&self, user: &UserId) -> Result<u64, MmrError> {
        self.count(
            "SELECT COUNT(*) FROM media WHERE user_id = $1",
            user.as_str(),
        )
        .await
    }

    /// How many media of `origin` there are.
    pub async fn count_media_by_origin(&self, origin: &ServerName) -> Result<u64, MmrError> {
        self.count(
            "SELECT COUNT(*) FROM media WHERE origin = $1",
            origin.as_str(),
        )
        .await
    }

    async fn count(&self, query: &'static str, value: &str) -> Result<u64, MmrError> {
        let count: i64 = sqlx::query_scalar(query)
            .bind(value)
            .fetch_one(&self.pool)
            .await
            .during("count media in matrix-media-repo")?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Where the bytes `sha256` are stored, if a row holds them: a `media` row's
    /// placement before a `thumbnails` row's, as MMR's dedup lends it.
    /// With `media`, that media's own row comes first when it holds these bytes.
    pub async fn placement_of(
        &self,
        sha256: &Sha256Hex,
        media: Option<&MediaKey>,
    ) -> Result<Option<Placement>, MmrError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT datastore_id, location FROM ( \
               SELECT datastore_id, location, \
                 CASE WHEN origin = $2 AND media_id = $3 THEN 0 ELSE 1 END AS pref \
               FROM media \
               WHERE sha256_hash = $1 AND datastore_id <> '' AND location <> '' \
               UNION ALL \
               SELECT datastore_id, location, 2 FROM thumbnails \
               WHERE sha256_hash = $1 AND datastore_id <> '' AND location <> '' \
             ) p ORDER BY pref, datastore_id, location LIMIT 1",
        )
        .bind(sha256.as_str())
        .bind(media.map(|m| m.origin.as_str()))
        .bind(media.map(|m| m.media_id.as_str()))
        .fetch_optional(&self.pool)
        .await
        .during("look up stored bytes in matrix-media-repo")?;
        row.map(|(datastore_id, location)| {
            placement(&datastore_id, location).map_err(|reason| {
                MmrError::Db(DbError::InvalidRow {
                    table: "media",
                    key: sha256.to_string(),
                    reason,
                })
            })
        })
        .transpose()
    }

    /// Whether a media holding the bytes `sha256` is quarantined.
    pub async fn is_hash_quarantined(&self, sha256: &Sha256Hex) -> Result<bool, DbError> {
        let quarantined: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM media WHERE sha256_hash = $1 AND quarantined)",
        )
        .bind(sha256.as_str())
        .fetch_one(&self.pool)
        .await
        .during("look up quarantined bytes in matrix-media-repo")?;
        Ok(quarantined)
    }

    /// Every media of `origin`, ordered by media ID, read page by page.
    pub fn media_by_origin(
        &self,
        origin: &ServerName,
    ) -> BoxStream<'static, Result<MmrMedia, MmrError>> {
        let (pool, origin) = (self.pool.clone(), origin.to_string());
        let pages = keyset_pages(String::new(), move |after| {
            let (pool, origin) = (pool.clone(), origin.clone());
            async move {
                let rows: Vec<MediaRow> = sqlx::query_as(select_media!(
                    "WHERE m.origin = $1 AND m.media_id > $2 ORDER BY m.media_id LIMIT $3"
                ))
                .bind(&origin)
                .bind(&after)
                .bind(PAGE_SIZE)
                .fetch_all(&pool)
                .await
                .during("read an origin's media from matrix-media-repo")?;
                let next = full_page(&rows, PAGE_SIZE).map(|r| r.media_id.clone());
                Ok((rows, next))
            }
        });
        records(pages)
    }

    /// The thumbnails of a media, ordered by size, method, animation and type.
    pub async fn thumbnails_of(&self, key: &MediaKey) -> Result<Vec<MmrThumbnail>, MmrError> {
        let rows: Vec<ThumbnailRow> = sqlx::query_as(
            "SELECT width, height, method, animated, content_type, size_bytes, sha256_hash, \
             creation_ts, datastore_id, location FROM thumbnails \
             WHERE origin = $1 AND media_id = $2 \
             ORDER BY width, height, method, animated, content_type",
        )
        .bind(key.origin.as_str())
        .bind(key.media_id.as_str())
        .fetch_all(&self.pool)
        .await
        .during("read a media's thumbnails from matrix-media-repo")?;
        rows.into_iter()
            .map(|row| row.into_thumbnail(key))
            .collect()
    }

    /// The thumbnails recorded for those of `media_ids` of `origin`, by media ID.
    pub async fn thumbnails_of_media(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Vec<MmrThumbnail>>, MmrError> {
        let rows: Vec<(String, ThumbnailRow)> = sqlx::query(
            "SELECT media_id, width, height, method, animated, content_type, size_bytes, \
             sha256_hash, creation_ts, datastore_id, location FROM thumbnails \
             WHERE origin = $1 AND media_id = ANY ($2)",
        )
        .bind(origin.as_str())
        .bind(media_ids)
        .fetch_all(&self.pool)
        .await
        .during("read recorded thumbnails from matrix-media-repo")?
        .into_iter()
        .map(|row: sqlx::postgres::PgRow| {
            use sqlx::{FromRow, Row};
            Ok::<_, sqlx::Error>((row.try_get("media_id")?, ThumbnailRow::from_row(&row)?))
        })
        .collect::<Result<_, _>>()
        .during("read recorded thumbnails from matrix-media-repo")?;
        let mut found: HashMap<String, Vec<MmrThumbnail>> = HashMap::new();
        for (media_id, row) in rows {
            let id: MediaId = media_id.parse().map_err(|e| {
                MmrError::Db(DbError::InvalidRow {
                    table: "thumbnails",
                    key: format!("{origin}/{media_id}"),
                    reason: format!("media_id: {e}"),
                })
            })?;
            let thumbnail = row.into_thumbnail(&MediaKey::new(origin.clone(), id))?;
            found.entry(media_id).or_default().push(thumbnail);
        }
        Ok(found)
    }

    /// Those of `media_ids` of `origin` that must not be written: reserved
    /// (`reserved_media`, which wins when both list an ID) or held (`media_id_hold`).
    pub async fn blocked_media_ids(
        &self,
        origin: &ServerName,
        media_ids: &[MediaId],
    ) -> Result<HashMap<MediaId, BlockedId>, MmrError> {
        let ids: Vec<&str> = media_ids.iter().map(MediaId::as_str).collect();
        let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
            "SELECT media_id, reason, NULL::bigint FROM reserved_media \
             WHERE origin = $1 AND media_id = ANY ($2) \
             UNION ALL \
             SELECT media_id, reason, held_ts FROM media_id_hold \
             WHERE origin = $1 AND media_id = ANY ($2)",
        )
        .bind(origin.as_str())
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .during("read reserved and held media IDs from matrix-media-repo")?;
        let mut blocked = HashMap::new();
        for (media_id, reason, held_ts) in rows {
            let Some(id) = media_ids.iter().find(|id| id.as_str() == media_id) else {
                continue;
            };
            let why = match held_ts {
                None => BlockedId::Reserved { reason },
                Some(held_ts) => BlockedId::Held { reason, held_ts },
            };
            let reserved = matches!(blocked.get(id), Some(BlockedId::Reserved { .. }));
            if !reserved {
                blocked.insert(id.clone(), why);
            }
        }
        Ok(blocked)
    }
}

#[derive(sqlx::FromRow)]
struct MediaRow {
    origin: String,
    media_id: String,
    upload_name: String,
    content_type: String,
    user_id: String,
    sha256_hash: String,
    size_bytes: i64,
    creation_ts: i64,
    quarantined: bool,
    datastore_id: String,
    location: String,
    last_access_ts: Option<i64>,
    purpose: Option<String>,
}

/// The media of a stream of pages, one item (or one item's error) per row.
fn records(
    pages: BoxStream<'static, Result<Vec<MediaRow>, DbError>>,
) -> BoxStream<'static, Result<MmrMedia, MmrError>> {
    pages
        .flat_map(|page| match page {
            Ok(rows) => stream::iter(
                rows.into_iter()
                    .map(MediaRow::into_media)
                    .collect::<Vec<_>>(),
            ),
            Err(e) => stream::iter(vec![Err(MmrError::from(e))]),
        })
        .boxed()
}

impl MediaRow {
    fn into_media(self) -> Result<MmrMedia, MmrError> {
        let invalid = |reason: String| {
            MmrError::Db(DbError::InvalidRow {
                table: "media",
                key: format!("{}/{}", self.origin, self.media_id),
                reason,
            })
        };
        let origin: ServerName = self
            .origin
            .parse()
            .map_err(|e| invalid(format!("origin: {e}")))?;
        let media_id: MediaId = self
            .media_id
            .parse()
            .map_err(|e| invalid(format!("media_id: {e}")))?;
        let sha256 = digest(&self.sha256_hash).map_err(&invalid)?;
        let size_bytes = size(self.size_bytes).map_err(&invalid)?;
        let uploader = match self.user_id.as_str() {
            "" => None,
            user => Some(
                user.parse::<UserId>()
                    .map_err(|e| invalid(format!("user_id: {e}")))?,
            ),
        };
        let placement = placement(&self.datastore_id, self.location.clone()).map_err(&invalid)?;
        let non_empty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        Ok(MmrMedia {
            record: MediaRecord {
                key: MediaKey::new(origin, media_id),
                sha256,
                size_bytes,
                upload_name: non_empty(&self.upload_name),
                content_type: non_empty(&self.content_type),
                uploader,
                created_ts: self.creation_ts,
                last_access_ts: self.last_access_ts,
                quarantined: self.quarantined,
                quarantined_by: None,
                purpose: match self.purpose.as_deref() {
                    Some("pinned") => Purpose::Pinned,
                    _ => Purpose::None,
                },
                imported_from: None,
            },
            placement,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ThumbnailRow {
    width: i32,
    height: i32,
    method: String,
    animated: bool,
    content_type: String,
    size_bytes: i64,
    sha256_hash: String,
    creation_ts: i64,
    datastore_id: String,
    location: String,
}

impl ThumbnailRow {
    fn into_thumbnail(self, media: &MediaKey) -> Result<MmrThumbnail, MmrError> {
        let invalid = |reason: String| {
            MmrError::Db(DbError::InvalidRow {
                table: "thumbnails",
                key: format!("{media} {}x{} {}", self.width, self.height, self.method),
                reason,
            })
        };
        let dimension = |value: i32, name: &str| {
            u32::try_from(value).map_err(|_| invalid(format!("{name} {value} is negative")))
        };
        Ok(MmrThumbnail {
            record: ThumbnailRecord {
                media: media.clone(),
                width: dimension(self.width, "width")?,
                height: dimension(self.height, "height")?,
                method: self.method.parse().map_err(&invalid)?,
                content_type: self.content_type.clone(),
                animated: self.animated,
                sha256: digest(&self.sha256_hash).map_err(&invalid)?,
                size_bytes: size(self.size_bytes).map_err(&invalid)?,
                created_ts: self.creation_ts,
            },
            placement: placement(&self.datastore_id, self.location.clone()).map_err(&invalid)?,
        })
    }
}

fn digest(sha256_hash: &str) -> Result<Sha256Hex, String> {
    Sha256Hex::try_from(sha256_hash).map_err(|e| format!("sha256_hash: {e}"))
}

fn size(size_bytes: i64) -> Result<u64, String> {
    u64::try_from(size_bytes).map_err(|_| format!("size_bytes {size_bytes} is negative"))
}

fn placement(datastore_id: &str, location: String) -> Result<Placement, String> {
    let datastore_id = MmrDatastoreId::new(datastore_id)
        .ok_or("datastore_id is empty (a row from before MMR's datastores)")?;
    if location.is_empty() {
        return Err("location is empty".into());
    }
    Ok(Placement {
        datastore_id,
        location,
    })
}
