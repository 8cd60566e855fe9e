//! A read-only adapter over a Synapse database: its media tables and the avatars in use.
//!
//! SQLite files are opened read-only; PostgreSQL sessions are set to read-only
//! transactions. Every table is read with keyset pagination, one page at a time. Rows come
//! back as Synapse stored them (strings, not validated identifiers): validating them is the
//! importer's job, so that one bad row is reported and skipped instead of ending the stream.

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use sqlx::Row;

use media_core::ids::UserId;

use media_db::DbError;
use media_db::Dialect;
use media_db::connect::{self, OpenOptions, Pool, on_pool};
use media_db::error::QueryContext;
use media_db::paging::{full_page, keyset_pages};

/// Rows per page.
const PAGE_SIZE: i64 = 1_000;

/// A Synapse database, opened read-only.
#[derive(Debug, Clone)]
pub struct SynapseDb {
    pool: Pool,
    dialect: Dialect,
    shown_url: String,
    local_has_sha256: bool,
    remote_has_sha256: bool,
}

/// A row of `local_media_repository` (media uploaded to this server, and URL previews).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LocalMediaRow {
    /// The media ID (24 letters for uploads, `YYYY-MM-DD_…` for URL previews).
    pub media_id: String,
    /// MIME type; `None`/empty when created but never uploaded.
    pub media_type: Option<String>,
    /// Length in bytes; `None` when never uploaded.
    pub media_length: Option<i64>,
    /// Creation time, ms.
    pub created_ts: i64,
    /// Upload file name.
    pub upload_name: Option<String>,
    /// Uploader's user ID.
    pub user_id: Option<String>,
    /// The admin who quarantined it.
    pub quarantined_by: Option<String>,
    /// Set for URL-preview media.
    pub url_cache: Option<String>,
    /// Last download, ms.
    pub last_access_ts: Option<i64>,
    /// "Protected" media: cannot be quarantined.
    pub safe_from_quarantine: bool,
    /// SHA-256 as Synapse recorded it (absent before Synapse 1.128).
    pub sha256: Option<String>,
}

/// A row of `remote_media_cache` (cached copies of other servers' media).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RemoteMediaRow {
    /// The origin server.
    pub media_origin: String,
    /// The media ID at the origin.
    pub media_id: String,
    /// MIME type.
    pub media_type: Option<String>,
    /// Length in bytes.
    pub media_length: Option<i64>,
    /// When it was cached, ms.
    pub created_ts: i64,
    /// Upload file name.
    pub upload_name: Option<String>,
    /// The local file name (decides the path; not the media ID).
    pub filesystem_id: Option<String>,
    /// Last download, ms.
    pub last_access_ts: Option<i64>,
    /// The admin who quarantined it.
    pub quarantined_by: Option<String>,
    /// SHA-256 as Synapse recorded it (absent before Synapse 1.128).
    pub sha256: Option<String>,
}

/// A row of `local_media_repository_thumbnails` or `remote_media_cache_thumbnails`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ThumbnailRow {
    /// The media's origin; `None` for local thumbnails.
    pub media_origin: Option<String>,
    /// The media ID.
    pub media_id: String,
    /// Width (the requested one for dynamic thumbnails).
    pub thumbnail_width: i64,
    /// Height (the requested one for dynamic thumbnails).
    pub thumbnail_height: i64,
    /// MIME type.
    pub thumbnail_type: String,
    /// `crop` or `scale`.
    pub thumbnail_method: String,
    /// Length in bytes.
    pub thumbnail_length: Option<i64>,
    /// The remote media's file name; `None` for local thumbnails.
    pub filesystem_id: Option<String>,
}

/// Where an avatar MXC was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AvatarSource {
    /// `profiles.avatar_url`.
    Profile,
    /// The current `m.room.avatar` of a room.
    Room,
    /// A current `m.room.member` event's `avatar_url`.
    Member,
}

/// Opens a Synapse database read-only: a [`DatabaseLocation`](media_db::DatabaseLocation)
/// or any text it parses from (a `postgres://` URL, `key=value` settings, a `sqlite://`
/// URL or a bare path to `homeserver.db`).
pub async fn open_synapse(
    location: impl media_db::IntoDatabaseLocation,
) -> Result<SynapseDb, DbError> {
    let location = location.into_database_location()?;
    if location.is_missing_sqlite_file() {
        return Err(DbError::InvalidUrl {
            url: location.to_string(),
            reason: "no such file: give the path of Synapse's homeserver.db, or a \
                     postgres:// URL"
                .into(),
        });
    }
    let pool = connect::open_pool(
        &location,
        OpenOptions {
            create: false,
            read_only: true,
            max_connections: 4,
        },
    )
    .await?;
    let dialect = match pool {
        Pool::Sqlite(_) => Dialect::Sqlite,
        Pool::Postgres(_) => Dialect::Postgres,
    };
    let mut db = SynapseDb {
        pool,
        dialect,
        shown_url: location.to_string(),
        local_has_sha256: false,
        remote_has_sha256: false,
    };
    if !db.has_table("local_media_repository").await? {
        return Err(DbError::InvalidUrl {
            url: db.shown_url.clone(),
            reason: "this database has no local_media_repository table: is it Synapse's?".into(),
        });
    }
    db.local_has_sha256 = db.has_column("local_media_repository", "sha256").await?;
    db.remote_has_sha256 = db.has_column("remote_media_cache", "sha256").await?;
    Ok(db)
}

impl SynapseDb {
    /// The database's URL, password hidden.
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// The connections, for the readers of other modules.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes the connections.
    pub async fn close(&self) {
        on_pool!(&self.pool, |p| p.close().await)
    }

    async fn has_table(&self, table: &str) -> Result<bool, DbError> {
        self.pool
            .has_table(table, "inspect the Synapse schema")
            .await
    }

    async fn has_column(&self, table: &str, column: &str) -> Result<bool, DbError> {
        let found: Option<i64> = on_pool!(&self.pool, |p| {
            let sql = match self.dialect {
                Dialect::Sqlite => "SELECT 1 FROM pragma_table_info($1) WHERE name = $2",
                Dialect::Postgres => {
                    "SELECT 1::BIGINT FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 \
                     AND column_name = $2"
                }
            };
            sqlx::query_scalar(sql)
                .bind(table)
                .bind(column)
                .fetch_optional(p)
                .await
                .during("inspect the Synapse schema")?
        });
        Ok(found.is_some())
    }

    /// The distinct server parts of the local users' IDs (at most 10), to derive and
    /// check the server name.
    pub async fn user_server_names(&self) -> Result<Vec<String>, DbError> {
        Ok(on_pool!(&self.pool, |p| {
            let sql = match self.dialect {
                Dialect::Sqlite => {
                    "SELECT DISTINCT substr(name, instr(name, ':') + 1) FROM users LIMIT 10"
                }
                Dialect::Postgres => {
                    "SELECT DISTINCT substring(name from position(':' in name) + 1) \
                     FROM users LIMIT 10"
                }
            };
            sqlx::query_scalar(sql)
                .fetch_all(p)
                .await
                .during("read Synapse users")?
        }))
    }

    /// How many local and remote media rows there are, for progress totals.
    pub async fn media_counts(&self) -> Result<(u64, u64), DbError> {
        let mut counts = [0u64; 2];
        for (slot, sql) in counts.iter_mut().zip([
            "SELECT COUNT(*) FROM local_media_repository",
            "SELECT COUNT(*) FROM remote_media_cache",
        ]) {
            let n: i64 = on_pool!(&self.pool, |p| {
                sqlx::query_scalar(sql)
                    .fetch_one(p)
                    .await
                    .during("count Synapse media")?
            });
            *slot = n as u64;
        }
        Ok((counts[0], counts[1]))
    }

    /// Pages of `local_media_repository`, ordered by media_id, each row decoded on its
    /// own: a row whose values cannot be read (text that is not UTF-8, text in a number
    /// column) is a [`DbError::InvalidRow`] naming it, and the rows after it still come.
    pub fn local_media_rows(
        &self,
    ) -> BoxStream<'static, Result<DecodedPage<LocalMediaRow>, DbError>> {
        self.local_rows(None)
    }

    /// Like [`SynapseDb::local_media_rows`], for the uploads of one user only (selected
    /// in SQL, so a row of theirs that cannot be decoded is still known to be theirs).
    pub fn local_media_rows_of(
        &self,
        user: &UserId,
    ) -> BoxStream<'static, Result<DecodedPage<LocalMediaRow>, DbError>> {
        self.local_rows(Some(user.to_string()))
    }

    fn local_rows(
        &self,
        user: Option<String>,
    ) -> BoxStream<'static, Result<DecodedPage<LocalMediaRow>, DbError>> {
        let db = self.clone();
        keyset_pages(String::new(), move |after: String| {
            let db = db.clone();
            let user = user.clone();
            async move {
                let sql = match (db.local_has_sha256, user.is_some()) {
                    (true, false) => LOCAL_MEDIA_SQL,
                    (false, false) => LOCAL_MEDIA_SQL_WITHOUT_SHA256,
                    (true, true) => LOCAL_MEDIA_OF_USER_SQL,
                    (false, true) => LOCAL_MEDIA_OF_USER_SQL_WITHOUT_SHA256,
                };
                let (rows, last_key) = on_pool!(&db.pool, |p| {
                    let mut query = sqlx::query(sql).bind(&after).bind(PAGE_SIZE);
                    if let Some(user) = &user {
                        query = query.bind(user);
                    }
                    let rows = query
                        .fetch_all(p)
                        .await
                        .during("read Synapse local media")?;
                    let last_key = rows.last().map(|row| row.try_get::<String, _>("media_id"));
                    let rows: DecodedPage<LocalMediaRow> = rows
                        .iter()
                        .map(|row| {
                            decode_row(row, "local_media_repository", |row| {
                                row.try_get::<String, _>("media_id")
                            })
                        })
                        .collect();
                    (rows, last_key)
                });
                let next = match (full_page(&rows, PAGE_SIZE), last_key) {
                    (Some(_), Some(key)) => {
                        Some(key.map_err(|e| unreadable_cursor("local_media_repository", e))?)
                    }
                    _ => None,
                };
                Ok((rows, next))
            }
        })
    }

    /// Pages of `remote_media_cache`, ordered by (media_origin, media_id), each row
    /// decoded on its own (see [`SynapseDb::local_media_rows`]).
    pub fn remote_media_rows(
        &self,
    ) -> BoxStream<'static, Result<DecodedPage<RemoteMediaRow>, DbError>> {
        let db = self.clone();
        keyset_pages((String::new(), String::new()), move |(origin, id)| {
            let db = db.clone();
            async move {
                let sql = if db.remote_has_sha256 {
                    REMOTE_MEDIA_SQL
                } else {
                    REMOTE_MEDIA_SQL_WITHOUT_SHA256
                };
                let (rows, last_key) = on_pool!(&db.pool, |p| {
                    let rows = sqlx::query(sql)
                        .bind(&origin)
                        .bind(&id)
                        .bind(PAGE_SIZE)
                        .fetch_all(p)
                        .await
                        .during("read Synapse remote media")?;
                    let key = |row: &_| -> Result<(String, String), sqlx::Error> {
                        Ok((row_get(row, "media_origin")?, row_get(row, "media_id")?))
                    };
                    let last_key = rows.last().map(key);
                    let rows: DecodedPage<RemoteMediaRow> = rows
                        .iter()
                        .map(|row| {
                            decode_row(row, "remote_media_cache", |row| {
                                key(row).map(|(origin, id)| format!("{origin}/{id}"))
                            })
                        })
                        .collect();
                    (rows, last_key)
                });
                let next = match (full_page(&rows, PAGE_SIZE), last_key) {
                    (Some(_), Some(key)) => {
                        Some(key.map_err(|e| unreadable_cursor("remote_media_cache", e))?)
                    }
                    _ => None,
                };
                Ok((rows, next))
            }
        })
    }

    /// The thumbnails of local media with `first <= media_id <= last` (one page's range),
    /// each row decoded on its own (see [`SynapseDb::local_media_rows`]).
    pub async fn local_thumbnails_between(
        &self,
        first: &str,
        last: &str,
    ) -> Result<DecodedPage<ThumbnailRow>, DbError> {
        Ok(on_pool!(&self.pool, |p| {
            sqlx::query(
                "SELECT CAST(NULL AS TEXT) AS media_origin, media_id, \
                 CAST(thumbnail_width AS BIGINT) AS thumbnail_width, \
                 CAST(thumbnail_height AS BIGINT) AS thumbnail_height, \
                 thumbnail_type, thumbnail_method, \
                 CAST(thumbnail_length AS BIGINT) AS thumbnail_length, \
                 CAST(NULL AS TEXT) AS filesystem_id \
                 FROM local_media_repository_thumbnails \
                 WHERE media_id >= $1 AND media_id <= $2 ORDER BY media_id",
            )
            .bind(first)
            .bind(last)
            .fetch_all(p)
            .await
            .during("read Synapse local thumbnails")?
            .iter()
            .map(|row| {
                decode_row(row, "local_media_repository_thumbnails", |row| {
                    row_get(row, "media_id")
                })
            })
            .collect()
        }))
    }

    /// The thumbnails of remote media between two (origin, media_id) keys, inclusive,
    /// each row decoded on its own (see [`SynapseDb::local_media_rows`]).
    pub async fn remote_thumbnails_between(
        &self,
        first: (&str, &str),
        last: (&str, &str),
    ) -> Result<DecodedPage<ThumbnailRow>, DbError> {
        Ok(on_pool!(&self.pool, |p| {
            sqlx::query(
                "SELECT media_origin, media_id, \
                 CAST(thumbnail_width AS BIGINT) AS thumbnail_width, \
                 CAST(thumbnail_height AS BIGINT) AS thumbnail_height, \
                 thumbnail_type, thumbnail_method, \
                 CAST(thumbnail_length AS BIGINT) AS thumbnail_length, filesystem_id \
                 FROM remote_media_cache_thumbnails \
                 WHERE media_origin BETWEEN $1 AND $3 \
                 AND (media_origin, media_id) >= ($1, $2) \
                 AND (media_origin, media_id) <= ($3, $4) \
                 ORDER BY media_origin, media_id",
            )
            .bind(first.0)
            .bind(first.1)
            .bind(last.0)
            .bind(last.1)
            .fetch_all(p)
            .await
            .during("read Synapse remote thumbnails")?
            .iter()
            .map(|row| {
                decode_row(row, "remote_media_cache_thumbnails", |row| {
                    Ok(format!(
                        "{}/{}",
                        row_get::<_, String>(row, "media_origin")?,
                        row_get::<_, String>(row, "media_id")?
                    ))
                })
            })
            .collect()
        }))
    }

    /// Every MXC URI in use as a profile, room or member avatar (as written, not yet
    /// validated; one MXC may come several times), a page at a time. Each row is decoded
    /// on its own: a row that cannot be read (text that is not UTF-8, event JSON that
    /// does not parse) is a [`DbError::InvalidRow`] naming it, and the rows after it are
    /// still read.
    pub fn avatars(&self) -> BoxStream<'static, Result<DecodedPage<AvatarRow>, DbError>> {
        let profiles = self.avatar_pages(AvatarSource::Profile);
        let rooms = self.avatar_pages(AvatarSource::Room);
        let members = self.avatar_pages(AvatarSource::Member);
        profiles.chain(rooms).chain(members).boxed()
    }

    fn avatar_pages(
        &self,
        source: AvatarSource,
    ) -> BoxStream<'static, Result<DecodedPage<AvatarRow>, DbError>> {
        let db = self.clone();
        let sql = match source {
            AvatarSource::Profile => {
                "SELECT user_id AS k, avatar_url AS v FROM profiles \
                 WHERE user_id > $1 AND avatar_url LIKE 'mxc://%' ORDER BY user_id LIMIT $2"
            }
            AvatarSource::Room => {
                "SELECT room_id AS k, avatar AS v FROM room_stats_state \
                 WHERE room_id > $1 AND avatar LIKE 'mxc://%' ORDER BY room_id LIMIT $2"
            }
            AvatarSource::Member => {
                "SELECT c.event_id AS k, j.json AS v FROM current_state_events AS c \
                 JOIN event_json AS j ON j.event_id = c.event_id \
                 WHERE c.type = 'm.room.member' AND c.event_id > $1 \
                 ORDER BY c.event_id LIMIT $2"
            }
        };
        keyset_pages(String::new(), move |after: String| {
            let db = db.clone();
            async move {
                // Member events without an avatar stay in the page (as `None`) until the
                // cursor is computed: a page is full or not by its rows, not its avatars.
                let (rows, last_key): (Vec<Option<Result<AvatarRow, DbError>>>, _) =
                    on_pool!(&db.pool, |p| {
                        let rows = sqlx::query(sql)
                            .bind(&after)
                            .bind(PAGE_SIZE)
                            .fetch_all(p)
                            .await
                            .during("read Synapse avatars")?;
                        let last_key = rows.last().map(|row| row_get::<_, String>(row, "k"));
                        let decoded = rows.iter().map(|row| avatar_of(row, source)).collect();
                        (decoded, last_key)
                    });
                let next = match (full_page(&rows, PAGE_SIZE), last_key) {
                    (Some(_), Some(key)) => {
                        Some(key.map_err(|e| unreadable_cursor(source.table(), e))?)
                    }
                    _ => None,
                };
                Ok((rows, next))
            }
        })
        .map_ok(|page| page.into_iter().flatten().collect())
        .boxed()
    }
}

/// One avatar reference found in Synapse's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarRow {
    /// Where it was found.
    pub source: AvatarSource,
    /// The row it was found in: a user ID, a room ID or a member event's ID.
    pub key: String,
    /// The MXC URI as written there (not yet validated).
    pub url: String,
}

impl AvatarSource {
    /// The table the avatar is read from, for messages.
    pub fn table(self) -> &'static str {
        match self {
            AvatarSource::Profile => "profiles",
            AvatarSource::Room => "room_stats_state",
            AvatarSource::Member => "event_json",
        }
    }
}

/// The avatar of one row (`k`: its key, `v`: the URL or the member event's JSON): `None`
/// for a member event without an MXC avatar, an [`DbError::InvalidRow`] naming the row
/// when it cannot be read.
fn avatar_of<R>(row: &R, source: AvatarSource) -> Option<Result<AvatarRow, DbError>>
where
    R: Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    let table = source.table();
    let key = row_get::<_, String>(row, "k");
    let shown = match &key {
        Ok(key) => key.clone(),
        Err(e) => format!("key unreadable: {e}"),
    };
    let bad = |reason: String| DbError::InvalidRow {
        table,
        key: shown.clone(),
        reason: format!(
            "{reason}: its avatar is not pinned; fix or delete this row in Synapse's database"
        ),
    };
    let value = match row_get::<_, String>(row, "v") {
        Ok(value) => value,
        Err(e) => return Some(Err(bad(e.to_string()))),
    };
    let url = match source {
        AvatarSource::Member => match member_avatar_url(&value) {
            Ok(Some(url)) => url,
            Ok(None) => return None,
            Err(reason) => return Some(Err(bad(reason))),
        },
        AvatarSource::Profile | AvatarSource::Room => value,
    };
    match key {
        Ok(key) => Some(Ok(AvatarRow { source, key, url })),
        Err(_) => Some(Err(bad("its key cannot be read".into()))),
    }
}

/// A page of rows, each decoded on its own: a row that cannot be read is a
/// [`DbError::InvalidRow`] naming it.
pub type DecodedPage<T> = Vec<Result<T, DbError>>;

/// A column of a row, by name.
fn row_get<'r, R, T>(row: &'r R, column: &str) -> Result<T, sqlx::Error>
where
    R: Row,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    row.try_get(column)
}

/// Decodes one row, or says which row could not be decoded and why. `key` reads what
/// identifies the row (when even that cannot be read, the row is named by its position
/// in the table's order, after the previous readable key).
fn decode_row<'r, R, T>(
    row: &'r R,
    table: &'static str,
    key: impl Fn(&'r R) -> Result<String, sqlx::Error>,
) -> Result<T, DbError>
where
    R: Row,
    T: sqlx::FromRow<'r, R>,
{
    T::from_row(row).map_err(|error| DbError::InvalidRow {
        table,
        key: key(row).unwrap_or_else(|e| format!("key unreadable: {e}")),
        reason: format!("{error}: fix or delete this row in Synapse's database to import it"),
    })
}

/// The error for a page whose last key cannot be read: the next page cannot be found.
fn unreadable_cursor(table: &'static str, error: sqlx::Error) -> DbError {
    DbError::InvalidRow {
        table,
        key: "the last row of a page".into(),
        reason: format!(
            "its key cannot be read ({error}), so the rows after it cannot be found: fix \
             this row in Synapse's database"
        ),
    }
}

/// The `content.avatar_url` of a member event's JSON when it is an MXC URI, `None` when
/// the event has no such avatar, or why the JSON cannot be read.
fn member_avatar_url(event_json: &str) -> Result<Option<String>, String> {
    let event: serde_json::Value = serde_json::from_str(event_json)
        .map_err(|e| format!("the event's JSON does not parse ({e})"))?;
    let url = event
        .get("content")
        .and_then(|c| c.get("avatar_url"))
        .and_then(|u| u.as_str());
    Ok(url.filter(|u| u.starts_with("mxc://")).map(str::to_owned))
}

macro_rules! local_media_sql {
    ($sha256:literal) => {
        local_media_sql!($sha256, "")
    };
    ($sha256:literal, $filter:literal) => {
        concat!(
            "SELECT media_id, media_type, CAST(media_length AS BIGINT) AS media_length, \
             COALESCE(created_ts, 0) AS created_ts, upload_name, user_id, \
             quarantined_by, url_cache, last_access_ts, \
             COALESCE(safe_from_quarantine, FALSE) AS safe_from_quarantine, ",
            $sha256,
            " AS sha256 FROM local_media_repository WHERE media_id > $1",
            $filter,
            " ORDER BY media_id LIMIT $2"
        )
    };
}

macro_rules! remote_media_sql {
    ($sha256:literal) => {
        concat!(
            "SELECT media_origin, media_id, media_type, \
             CAST(media_length AS BIGINT) AS media_length, \
             COALESCE(created_ts, 0) AS created_ts, upload_name, \
             filesystem_id, last_access_ts, quarantined_by, ",
            $sha256,
            " AS sha256 FROM remote_media_cache \
             WHERE (media_origin, media_id) > ($1, $2) \
             ORDER BY media_origin, media_id LIMIT $3"
        )
    };
}

const LOCAL_MEDIA_SQL: &str = local_media_sql!("sha256");
const LOCAL_MEDIA_SQL_WITHOUT_SHA256: &str = local_media_sql!("CAST(NULL AS TEXT)");
const LOCAL_MEDIA_OF_USER_SQL: &str = local_media_sql!("sha256", " AND user_id = $3");
const LOCAL_MEDIA_OF_USER_SQL_WITHOUT_SHA256: &str =
    local_media_sql!("CAST(NULL AS TEXT)", " AND user_id = $3");
const REMOTE_MEDIA_SQL: &str = remote_media_sql!("sha256");
const REMOTE_MEDIA_SQL_WITHOUT_SHA256: &str = remote_media_sql!("CAST(NULL AS TEXT)");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_avatars_are_read_from_event_content() {
        let event = r#"{"type":"m.room.member","content":{"membership":"join","avatar_url":"mxc://a.example/xyz"}}"#;
        assert_eq!(
            member_avatar_url(event),
            Ok(Some("mxc://a.example/xyz".to_owned()))
        );
        assert_eq!(
            member_avatar_url(r#"{"content":{"avatar_url":null}}"#),
            Ok(None)
        );
        assert_eq!(
            member_avatar_url(r#"{"content":{"avatar_url":"https://x/y"}}"#),
            Ok(None)
        );
        assert!(member_avatar_url("not json").is_err());
    }
}
