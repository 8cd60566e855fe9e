//! An adapter over Dendrite's databases: its media tables (read, and deleted from by a
//! purge) and the avatars in use (read only).
//!
//! Dendrite may keep the media, user and sync tables in one database or in three; each is
//! opened on its own as a [`DendriteDb`] with the [`Component`] it is for. Media rows are
//! read in pages of whole **content groups** (every row sharing one `base64hash`), so the
//! retention policy can decide whether a hash directory survives without a second look,
//! and memory stays bounded by the page size.
//!
//! Rows are read as Dendrite stored them ([`DendriteMediaRow`]); a purge decodes each
//! page ([`MediaPage::decode`]) into rows with valid identifiers ([`MediaRow`]) and the
//! rows it cannot use ([`InvalidMediaRow`]), one by one, so one bad row never stops the
//! others.

use std::collections::HashSet;
use std::ops::Bound;

use futures::TryStreamExt;
use futures::stream::{self, BoxStream, StreamExt};
use media_core::ids::{IdError, MediaId, UserId};
use media_core::records::MediaKey;

use media_db::Dialect;
use media_db::connect::{self, OpenOptions, Pool, on_pool};
use media_db::error::{DbError, QueryContext};
use media_db::paging::keyset_pages;

/// Media rows deleted, or media keys looked up, per statement.
const KEYS_PER_STATEMENT: usize = 500;

/// Hashes looked up per statement: each lookup scans the table (Dendrite has no index on
/// base64hash), so few large statements beat many small ones.
const HASHES_PER_LOOKUP: usize = 20_000;

/// Avatar rows read per page.
const AVATAR_PAGE_SIZE: i64 = 1_000;

/// The Dendrite component a database is opened for, and the table that proves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// `media_api.database`: media and thumbnail rows.
    MediaApi,
    /// `user_api.account_database`: user profiles.
    UserApi,
    /// `sync_api.database`: current room state.
    SyncApi,
}

impl Component {
    /// The table this component's database must have.
    pub fn table(self) -> &'static str {
        match self {
            Component::MediaApi => "mediaapi_media_repository",
            Component::UserApi => "userapi_profiles",
            Component::SyncApi => "syncapi_current_room_state",
        }
    }

    /// The config key of this component's connection string, for messages.
    pub fn config_key(self) -> &'static str {
        match self {
            Component::MediaApi => "media_api.database.connection_string",
            Component::UserApi => "user_api.account_database.connection_string",
            Component::SyncApi => "sync_api.database.connection_string",
        }
    }
}

/// One Dendrite database, opened for one component.
#[derive(Debug, Clone)]
pub struct DendriteDb {
    pool: Pool,
    shown_url: String,
}

/// How a Dendrite database is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading only: a dry run, or the user and sync databases.
    ReadOnly,
    /// Reading and deleting: the media database of a real purge.
    ReadWrite,
}

/// A row of `mediaapi_media_repository`, as Dendrite stored it (not validated).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DendriteMediaRow {
    /// The media ID.
    pub media_id: String,
    /// The origin server.
    pub media_origin: String,
    /// The uploader for local media; empty for remote media.
    pub user_id: String,
    /// When the row was inserted, ms.
    pub creation_ts: i64,
    /// The content's SHA-256, base64url without padding: decides the directory.
    pub base64hash: String,
    /// The content's size.
    pub file_size_bytes: i64,
}

impl DendriteMediaRow {
    /// The row's `mxc://origin/media_id` as recorded, for messages (not validated).
    pub fn mxc(&self) -> String {
        format!("mxc://{}/{}", self.media_origin, self.media_id)
    }

    /// The row with its origin, media ID and uploader validated (boxed when invalid:
    /// rare, and large).
    pub fn decode(self) -> Result<MediaRow, Box<InvalidMediaRow>> {
        match self.identifiers() {
            Ok((key, uploader)) => Ok(MediaRow {
                key,
                uploader,
                creation_ts: self.creation_ts,
                base64hash: self.base64hash,
                file_size_bytes: self.file_size_bytes,
            }),
            Err(error) => Err(Box::new(InvalidMediaRow { row: self, error })),
        }
    }

    fn identifiers(&self) -> Result<(MediaKey, Option<UserId>), IdError> {
        let key = MediaKey::new(self.media_origin.parse()?, self.media_id.parse()?);
        let uploader = match self.user_id.as_str() {
            "" => None,
            user_id => Some(user_id.parse()?),
        };
        Ok((key, uploader))
    }
}

/// A media row whose identifiers are valid: what a purge plans with and deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    /// Its origin and media ID.
    pub key: MediaKey,
    /// The uploader for local media; `None` for remote media.
    pub uploader: Option<UserId>,
    /// When the row was inserted, ms.
    pub creation_ts: i64,
    /// The content's SHA-256, base64url without padding, as recorded: validated (as a
    /// `ContentHash`) before it becomes a path.
    pub base64hash: String,
    /// The content's size as recorded.
    pub file_size_bytes: i64,
}

/// A media row whose origin, media ID or uploader is not a valid identifier: it is
/// never deleted, and neither is its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct InvalidMediaRow {
    /// The row as recorded.
    pub row: DendriteMediaRow,
    /// What is wrong with it.
    pub error: IdError,
}

/// One page of content groups, each row decoded on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaPage {
    /// The rows with valid identifiers, in the page's order (a group's rows stay
    /// together).
    pub rows: Vec<MediaRow>,
    /// The rows that could not be decoded, each with why.
    pub invalid: Vec<InvalidMediaRow>,
    /// The hashes the invalid rows use: their contents stay whatever happens to the
    /// valid rows.
    invalid_contents: HashSet<String>,
}

impl MediaPage {
    /// Decodes every row of a page.
    pub fn decode(rows: Vec<DendriteMediaRow>) -> Self {
        let mut page = Self::default();
        for row in rows {
            match row.decode() {
                Ok(row) => page.rows.push(row),
                Err(invalid) => {
                    page.invalid_contents.insert(invalid.row.base64hash.clone());
                    page.invalid.push(*invalid);
                }
            }
        }
        page
    }

    /// Whether a row that could not be decoded uses this hash.
    pub fn invalid_rows_use(&self, base64hash: &str) -> bool {
        self.invalid_contents.contains(base64hash)
    }
}

/// Rows deleted from the media tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletedRows {
    /// `mediaapi_media_repository` rows.
    pub media: u64,
    /// `mediaapi_thumbnail` rows.
    pub thumbnails: u64,
}

/// Opens a Dendrite database for `component`, with `access`. Accepts `sqlite://` and
/// `postgres://` URLs; refuses a database without the component's table.
pub async fn open_dendrite(
    location: impl media_db::IntoDatabaseLocation,
    component: Component,
    access: Access,
) -> Result<DendriteDb, DbError> {
    let location = location.into_database_location()?;
    let pool = connect::open_pool(
        &location,
        OpenOptions {
            create: false,
            read_only: access == Access::ReadOnly,
            max_connections: 2,
        },
    )
    .await?;
    let db = DendriteDb {
        pool,
        shown_url: location.to_string(),
    };
    if !db.has_table(component.table()).await? {
        return Err(DbError::InvalidUrl {
            url: db.shown_url.clone(),
            reason: format!(
                "this database has no {} table: is {} right?",
                component.table(),
                component.config_key()
            ),
        });
    }
    Ok(db)
}

/// The `n`th (from 1) bind placeholder: `$n` for PostgreSQL, `?` for SQLite (which looks
/// numbered placeholders up linearly on every bind: quadratic in long statements).
fn placeholder(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Sqlite => "?".to_owned(),
        Dialect::Postgres => format!("${n}"),
    }
}

/// `media_id IN ($1, …, $k) AND (media_id, media_origin) IN (VALUES ($k+1, $k+2), …)`
/// for `keys` media keys: bind every media ID, then every (media ID, origin) pair. The
/// first part lets both databases use the (media_id, media_origin) index; a row-value
/// `IN` alone makes SQLite scan the table.
fn media_keys_clause(dialect: Dialect, keys: usize) -> String {
    let pairs: Vec<String> = (0..keys)
        .map(|i| {
            format!(
                "({}, {})",
                placeholder(dialect, keys + 2 * i + 1),
                placeholder(dialect, keys + 2 * i + 2)
            )
        })
        .collect();
    format!(
        "media_id IN ({}) AND (media_id, media_origin) IN (VALUES {})",
        placeholders(dialect, keys),
        pairs.join(", ")
    )
}

/// `$1, $2, …, $n` (or `?, ?, …`).
fn placeholders(dialect: Dialect, n: usize) -> String {
    (1..=n)
        .map(|i| placeholder(dialect, i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns of a [`DendriteMediaRow`].
macro_rules! media_columns {
    () => {
        "SELECT media_id, media_origin, user_id, CAST(creation_ts AS BIGINT) AS creation_ts, \
         base64hash, CAST(file_size_bytes AS BIGINT) AS file_size_bytes \
         FROM mediaapi_media_repository "
    };
}

/// Every media row in (hash, origin, media ID) order, for one streamed sort.
const ALL_GROUPS_SQL: &str = concat!(
    media_columns!(),
    "ORDER BY base64hash, media_origin, media_id"
);

/// PostgreSQL's [`DendriteDb::content_group_pages`]: one sorted query streamed on its
/// own connection by a task, cut into pages of whole groups. The task reserves the
/// channel's slot before it reads a page, so it holds at most one page besides the
/// caller's.
fn streamed_group_pages(
    pool: sqlx::PgPool,
    rows_per_page: i64,
) -> BoxStream<'static, Result<Vec<DendriteMediaRow>, DbError>> {
    const CONTEXT: &str = "read Dendrite media";
    let rows_per_page = usize::try_from(rows_per_page).unwrap_or(1).max(1);
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        // A caller that stopped has dropped the receiver.
        let Ok(mut slot) = sender.reserve().await else {
            return;
        };
        let walk = async {
            // Out of the pool: its session setting below must not reach other statements,
            // and it closes when the walk ends.
            let mut conn = pool.acquire().await.during(CONTEXT)?.detach();
            // The one query runs as long as the walk: a role's statement timeout (made
            // for Dendrite's short queries) must not cut it.
            sqlx::query("SET statement_timeout = 0")
                .execute(&mut conn)
                .await
                .during(CONTEXT)?;
            let mut rows = sqlx::query_as::<_, DendriteMediaRow>(ALL_GROUPS_SQL).fetch(&mut conn);
            let mut page: Vec<DendriteMediaRow> = Vec::new();
            while let Some(row) = rows.try_next().await.during(CONTEXT)? {
                let group_ends = page.last().is_some_and(|l| l.base64hash != row.base64hash);
                if page.len() >= rows_per_page && group_ends {
                    slot.send(Ok(std::mem::take(&mut page)));
                    let Ok(next) = sender.reserve().await else {
                        return Ok(None);
                    };
                    slot = next;
                }
                page.push(row);
            }
            Ok(Some((slot, page)))
        };
        match walk.await {
            Ok(Some((slot, page))) if !page.is_empty() => slot.send(Ok(page)),
            Ok(_) => {}
            Err(e) => {
                if let Ok(slot) = sender.reserve().await {
                    slot.send(Err(e));
                }
            }
        }
    });
    stream::unfold(receiver, |mut receiver| async move {
        let page = receiver.recv().await?;
        Some((page, receiver))
    })
    .boxed()
}

/// The temporary table of [`hash_order_on_sqlite`]: every media row's hash and rowid, in
/// that order (its primary key is the index pages walk).
const HASH_ORDER_TABLE: &str = "CREATE TEMP TABLE cleanmedia_hash_order \
     (base64hash TEXT NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (base64hash, row)) \
     WITHOUT ROWID";

/// Fills [`HASH_ORDER_TABLE`] in one table scan (sorted once, so the inserts append).
const HASH_ORDER_FILL: &str = "INSERT INTO cleanmedia_hash_order (base64hash, row) \
     SELECT base64hash, rowid FROM main.mediaapi_media_repository ORDER BY 1, 2";

/// The extent of the next page: how many of the next `$2` (hash, rowid) entries from
/// the cursor there are, and their first and last hash, along the temporary table's
/// primary key. `{from}` is the cursor's condition on `base64hash`.
const HASH_ORDER_EXTENT_SQL: &str = "SELECT COUNT(*), MIN(base64hash), MAX(base64hash) FROM \
     (SELECT base64hash FROM cleanmedia_hash_order WHERE base64hash {from} $1 \
     ORDER BY base64hash, row LIMIT $2)";

/// The live rows of the entries with a hash from `$1` up to `$2` (`{from}` and `{to}` are
/// the comparisons), each looked up by rowid. A row deleted since the scan is gone; a
/// rowid reused by a row of another hash is skipped (the run's snapshot does not know
/// it; a hash directory's removal is checked against the live table anyway).
const HASH_ORDER_PAGE_SQL: &str = "SELECT m.media_id, m.media_origin, m.user_id, \
     CAST(m.creation_ts AS BIGINT) AS creation_ts, m.base64hash, \
     CAST(m.file_size_bytes AS BIGINT) AS file_size_bytes \
     FROM cleanmedia_hash_order AS h \
     JOIN main.mediaapi_media_repository AS m ON m.rowid = h.row AND m.base64hash = h.base64hash \
     WHERE h.base64hash {from} $1 AND h.base64hash {to} $2";

/// A connection of its own (out of the pool: its temporary table must live as long as
/// the walk, and goes when the walk drops it) holding every media row's (hash, rowid) in
/// hash order, read in one table scan.
async fn hash_order_on_sqlite(pool: sqlx::SqlitePool) -> Result<sqlx::SqliteConnection, DbError> {
    const CONTEXT: &str = "index Dendrite media by hash";
    let mut conn = pool.acquire().await.during(CONTEXT)?.detach();
    sqlx::query(HASH_ORDER_TABLE)
        .execute(&mut conn)
        .await
        .during(CONTEXT)?;
    sqlx::query(HASH_ORDER_FILL)
        .execute(&mut conn)
        .await
        .during(CONTEXT)?;
    Ok(conn)
}

/// SQLite's [`DendriteDb::content_group_pages`]: keyset pages along the temporary hash
/// index of [`hash_order_on_sqlite`], cut to whole groups, each in (hash, origin, media
/// ID) order.
fn sqlite_group_pages(
    pool: sqlx::SqlitePool,
    rows_per_page: i64,
) -> BoxStream<'static, Result<Vec<DendriteMediaRow>, DbError>> {
    stream::once(hash_order_on_sqlite(pool))
        .map_ok(move |conn| {
            keyset_pages(
                (conn, Bound::Unbounded),
                move |(mut conn, from)| async move {
                    // Rows deleted since the scan can empty a page that is not the last, and
                    // an empty page ends the walk: read on to the next rows or the end.
                    let mut from = from;
                    loop {
                        let (rows, next) = hash_order_page(&mut conn, from, rows_per_page).await?;
                        match next {
                            Some(next) if rows.is_empty() => from = next,
                            next => return Ok((rows, next.map(|next| (conn, next)))),
                        }
                    }
                },
            )
        })
        .try_flatten()
        .boxed()
}

/// One page of [`sqlite_group_pages`] from `from`, and where the next one starts (none
/// after the last).
async fn hash_order_page(
    conn: &mut sqlx::SqliteConnection,
    from: Bound<String>,
    rows_per_page: i64,
) -> Result<(Vec<DendriteMediaRow>, Option<Bound<String>>), DbError> {
    const CONTEXT: &str = "read Dendrite media";
    let (from_op, from_hash) = match from {
        Bound::Included(hash) => (">=", hash),
        Bound::Excluded(hash) => (">", hash),
        Bound::Unbounded => (">=", String::new()),
    };
    let extent = HASH_ORDER_EXTENT_SQL.replace("{from}", from_op);
    let (entries, first, last): (i64, Option<String>, Option<String>) =
        sqlx::query_as(sqlx::AssertSqlSafe(extent))
            .bind(&from_hash)
            .bind(rows_per_page)
            .fetch_one(&mut *conn)
            .await
            .during(CONTEXT)?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok((Vec::new(), None));
    };
    // The limit may cut the last group: unless it is the page's only one, it starts the
    // next page; an only group is read whole, however large.
    let (to_op, next) = if entries < rows_per_page {
        ("<=", None)
    } else if first == last {
        ("<=", Some(Bound::Excluded(last.clone())))
    } else {
        ("<", Some(Bound::Included(last.clone())))
    };
    let page = HASH_ORDER_PAGE_SQL
        .replace("{from}", from_op)
        .replace("{to}", to_op);
    let mut rows: Vec<DendriteMediaRow> = sqlx::query_as(sqlx::AssertSqlSafe(page))
        .bind(&from_hash)
        .bind(&last)
        .fetch_all(&mut *conn)
        .await
        .during(CONTEXT)?;
    rows.sort_unstable_by(|a, b| {
        (&a.base64hash, &a.media_origin, &a.media_id).cmp(&(
            &b.base64hash,
            &b.media_origin,
            &b.media_id,
        ))
    });
    Ok((rows, next))
}

/// Thumbnail rows whose media row (same media ID AND origin) is gone.
const ORPHAN_THUMBNAILS: &str = "FROM mediaapi_thumbnail WHERE NOT EXISTS \
     (SELECT 1 FROM mediaapi_media_repository AS m \
     WHERE m.media_id = mediaapi_thumbnail.media_id \
     AND m.media_origin = mediaapi_thumbnail.media_origin)";

impl DendriteDb {
    /// The database's URL, password hidden.
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// The dialect of the database.
    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Closes the connections.
    pub async fn close(&self) {
        on_pool!(&self.pool, |p| p.close().await)
    }

    async fn has_table(&self, table: &str) -> Result<bool, DbError> {
        self.pool
            .has_table(table, "inspect the Dendrite schema")
            .await
    }

    /// Pages of media rows holding whole content groups (every row of each hash in the
    /// page), in (base64hash, origin, media_id) order. A page has about `rows_per_page`
    /// rows and never splits a group: a group larger than a page makes a larger page.
    ///
    /// Dendrite has no index on base64hash. On PostgreSQL one query sorts the table once
    /// and streams it on a connection of its own (MVCC keeps its snapshot readable beside
    /// the caller's deletes); the next page is read while the caller works on this one.
    /// On SQLite a long read outside WAL mode would hold off every writer, Dendrite's too,
    /// so one table scan copies each row's (hash, rowid) into a temporary table of that
    /// connection (`hash_order_on_sqlite`), and pages walk its index, each one joined to
    /// the live rows: the cost of a page is its own rows, not the table.
    pub fn content_group_pages(
        &self,
        rows_per_page: i64,
    ) -> BoxStream<'static, Result<Vec<DendriteMediaRow>, DbError>> {
        match &self.pool {
            Pool::Postgres(pool) => streamed_group_pages(pool.clone(), rows_per_page),
            Pool::Sqlite(pool) => sqlite_group_pages(pool.clone(), rows_per_page),
        }
    }

    /// How many media rows there are (one table scan).
    pub async fn count_media(&self) -> Result<u64, DbError> {
        let count: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar("SELECT COUNT(*) FROM mediaapi_media_repository")
                .fetch_one(p)
                .await
                .during("count Dendrite media")?
        });
        Ok(count as u64)
    }

    /// Up to `n` media rows picked at random (one table scan), to check a sample of
    /// them against the media folder before anything is changed.
    pub async fn sample_media(&self, n: i64) -> Result<Vec<DendriteMediaRow>, DbError> {
        Ok(on_pool!(&self.pool, |p| {
            sqlx::query_as(concat!(media_columns!(), "ORDER BY random() LIMIT $1"))
                .bind(n)
                .fetch_all(p)
                .await
                .during("sample Dendrite media")?
        }))
    }

    /// The origins that have a media with this media ID (at most 20), to tell whether a
    /// bare media ID names one media.
    pub async fn origins_of_media_id(&self, media_id: &MediaId) -> Result<Vec<String>, DbError> {
        Ok(on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT media_origin FROM mediaapi_media_repository WHERE media_id = $1 \
                 ORDER BY media_origin LIMIT 20",
            )
            .bind(media_id.as_str())
            .fetch_all(p)
            .await
            .during("look up a Dendrite media ID")?
        }))
    }

    /// The thumbnail rows of these media.
    pub async fn count_thumbnails(&self, media: &[MediaKey]) -> Result<u64, DbError> {
        let mut total = 0;
        for chunk in media.chunks(KEYS_PER_STATEMENT) {
            let sql = format!(
                "SELECT COUNT(*) FROM mediaapi_thumbnail WHERE {}",
                media_keys_clause(self.dialect(), chunk.len())
            );
            let n: i64 = on_pool!(&self.pool, |p| {
                // Statements with thousands of placeholders are not worth caching: each
                // cached one holds its whole compiled program.
                let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).persistent(false);
                for key in chunk {
                    query = query.bind(key.media_id.as_str());
                }
                for key in chunk {
                    query = query.bind(key.media_id.as_str()).bind(key.origin.as_str());
                }
                query
                    .fetch_one(p)
                    .await
                    .during("count Dendrite thumbnails")?
            });
            total += n as u64;
        }
        Ok(total)
    }

    /// Deletes these media rows and their thumbnail rows, each matched on media ID AND
    /// origin, in one transaction.
    pub async fn delete_media(&self, media: &[MediaKey]) -> Result<DeletedRows, DbError> {
        let mut deleted = DeletedRows::default();
        const TABLES: [&str; 2] = ["mediaapi_thumbnail", "mediaapi_media_repository"];
        match &self.pool {
            // PostgreSQL: one statement per table, the keys as two arrays.
            Pool::Postgres(p) => {
                let ids: Vec<&str> = media.iter().map(|k| k.media_id.as_str()).collect();
                let origins: Vec<&str> = media.iter().map(|k| k.origin.as_str()).collect();
                let mut tx = p.begin().await.during("begin a Dendrite purge")?;
                for (table, count) in TABLES
                    .into_iter()
                    .zip([&mut deleted.thumbnails, &mut deleted.media])
                {
                    let sql = format!(
                        "DELETE FROM {table} AS t USING unnest($1::TEXT[], $2::TEXT[]) \
                         AS d(media_id, media_origin) \
                         WHERE t.media_id = d.media_id AND t.media_origin = d.media_origin"
                    );
                    *count += sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&ids)
                        .bind(&origins)
                        .execute(&mut *tx)
                        .await
                        .during("delete Dendrite media rows")?
                        .rows_affected();
                }
                tx.commit().await.during("commit a Dendrite purge")?;
            }
            // SQLite has no arrays: statements of KEYS_PER_STATEMENT keys.
            Pool::Sqlite(p) => {
                let mut tx = p.begin().await.during("begin a Dendrite purge")?;
                for chunk in media.chunks(KEYS_PER_STATEMENT) {
                    let clause = media_keys_clause(Dialect::Sqlite, chunk.len());
                    for (table, count) in TABLES
                        .into_iter()
                        .zip([&mut deleted.thumbnails, &mut deleted.media])
                    {
                        let sql = format!("DELETE FROM {table} WHERE {clause}");
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                        for key in chunk {
                            query = query.bind(key.media_id.as_str());
                        }
                        for key in chunk {
                            query = query.bind(key.media_id.as_str()).bind(key.origin.as_str());
                        }
                        *count += query
                            .execute(&mut *tx)
                            .await
                            .during("delete Dendrite media rows")?
                            .rows_affected();
                    }
                }
                tx.commit().await.during("commit a Dendrite purge")?;
            }
        }
        Ok(deleted)
    }

    /// Which of these base64hashes some media row still uses.
    pub async fn contents_in_use(&self, hashes: &[String]) -> Result<HashSet<String>, DbError> {
        const CONTEXT: &str = "check which Dendrite contents are in use";
        let mut in_use = HashSet::new();
        for chunk in hashes.chunks(HASHES_PER_LOOKUP) {
            let found: Vec<String> = match &self.pool {
                // One array parameter: thousands of placeholders cost PostgreSQL more to
                // parse and plan than the scan itself. Not a cached statement: only a plan
                // made for the array's value hashes it; a generic plan (which PostgreSQL
                // may switch to after five runs) compares every row with every element,
                // 20 s instead of 50 ms here.
                Pool::Postgres(p) => sqlx::query_scalar(
                    "SELECT DISTINCT base64hash FROM mediaapi_media_repository \
                     WHERE base64hash = ANY($1)",
                )
                .persistent(false)
                .bind(chunk)
                .fetch_all(p)
                .await
                .during(CONTEXT)?,
                Pool::Sqlite(p) => {
                    let sql = format!(
                        "SELECT DISTINCT base64hash FROM mediaapi_media_repository \
                         WHERE base64hash IN ({})",
                        placeholders(Dialect::Sqlite, chunk.len())
                    );
                    // Statements with thousands of placeholders are not worth caching:
                    // each cached one holds its whole compiled program.
                    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).persistent(false);
                    for hash in chunk {
                        query = query.bind(hash);
                    }
                    query.fetch_all(p).await.during(CONTEXT)?
                }
            };
            in_use.extend(found);
        }
        Ok(in_use)
    }

    /// How many thumbnail rows have no media row (matched on media ID AND origin), and up
    /// to `sample` of their media as `mxc://` URIs as recorded (not validated: they are
    /// only listed).
    pub async fn orphan_thumbnails(&self, sample: i64) -> Result<(u64, Vec<String>), DbError> {
        let count_sql = format!("SELECT COUNT(*) {ORPHAN_THUMBNAILS}");
        let sample_sql = format!(
            "SELECT DISTINCT media_origin, media_id {ORPHAN_THUMBNAILS} \
             ORDER BY media_origin, media_id LIMIT $1"
        );
        let (count, keys): (i64, Vec<(String, String)>) = on_pool!(&self.pool, |p| {
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
                .fetch_one(p)
                .await
                .during("count orphan Dendrite thumbnails")?;
            // The sample costs a sort of every thumbnail row: only when there is one.
            let keys = if count == 0 {
                Vec::new()
            } else {
                sqlx::query_as(sqlx::AssertSqlSafe(sample_sql))
                    .bind(sample)
                    .fetch_all(p)
                    .await
                    .during("list orphan Dendrite thumbnails")?
            };
            (count, keys)
        });
        let keys = keys
            .into_iter()
            .map(|(origin, media_id)| format!("mxc://{origin}/{media_id}"))
            .collect();
        Ok((count as u64, keys))
    }

    /// Deletes every thumbnail row without a media row; returns how many.
    pub async fn delete_orphan_thumbnails(&self) -> Result<u64, DbError> {
        let sql = format!("DELETE {ORPHAN_THUMBNAILS}");
        Ok(on_pool!(&self.pool, |p| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .during("delete orphan Dendrite thumbnails")?
                .rows_affected()
        }))
    }

    /// Pages of distinct `userapi_profiles.avatar_url` values that are MXC URIs.
    pub fn profile_avatar_pages(&self) -> BoxStream<'static, Result<Vec<String>, DbError>> {
        let db = self.clone();
        keyset_pages(String::new(), move |after: String| {
            let db = db.clone();
            async move {
                let urls: Vec<String> = on_pool!(&db.pool, |p| {
                    sqlx::query_scalar(
                        "SELECT DISTINCT avatar_url FROM userapi_profiles \
                         WHERE avatar_url > $1 AND avatar_url LIKE 'mxc://%' \
                         ORDER BY avatar_url LIMIT $2",
                    )
                    .bind(&after)
                    .bind(AVATAR_PAGE_SIZE)
                    .fetch_all(p)
                    .await
                    .during("read Dendrite profile avatars")?
                });
                let next = urls
                    .last()
                    .filter(|_| urls.len() as i64 == AVATAR_PAGE_SIZE)
                    .cloned();
                Ok((urls, next))
            }
        })
    }

    /// Pages of the MXC URIs the current room state uses as avatars: each room's
    /// `m.room.avatar` (`content.url`) and every member event's `content.avatar_url`.
    /// (`contains_url` is not trusted: Dendrite leaves it false.)
    pub fn room_state_avatar_pages(&self) -> BoxStream<'static, Result<Vec<String>, DbError>> {
        let db = self.clone();
        keyset_pages(String::new(), move |after: String| {
            let db = db.clone();
            async move {
                let rows: Vec<(String, String, String)> = on_pool!(&db.pool, |p| {
                    sqlx::query_as(
                        "SELECT event_id, type, headered_event_json \
                         FROM syncapi_current_room_state WHERE event_id > $1 \
                         AND ((type = 'm.room.avatar' AND state_key = '') \
                         OR type = 'm.room.member') \
                         ORDER BY event_id LIMIT $2",
                    )
                    .bind(&after)
                    .bind(AVATAR_PAGE_SIZE)
                    .fetch_all(p)
                    .await
                    .during("read Dendrite room state")?
                });
                let next = rows
                    .last()
                    .filter(|_| rows.len() as i64 == AVATAR_PAGE_SIZE)
                    .map(|r| r.0.clone());
                let urls = rows
                    .iter()
                    .filter_map(|(_, kind, json)| state_avatar_url(kind, json))
                    .collect();
                Ok((urls, next))
            }
        })
    }
}

/// The avatar MXC of a state event's JSON: `content.url` of `m.room.avatar`,
/// `content.avatar_url` of `m.room.member`.
fn state_avatar_url(event_type: &str, event_json: &str) -> Option<String> {
    let field = match event_type {
        "m.room.avatar" => "url",
        "m.room.member" => "avatar_url",
        _ => return None,
    };
    let event: serde_json::Value = serde_json::from_str(event_json).ok()?;
    let url = event.get("content")?.get(field)?.as_str()?;
    url.starts_with("mxc://").then(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avatars_are_read_from_the_right_content_field() {
        let room = r#"{"type":"m.room.avatar","content":{"url":"mxc://a.example/r"}}"#;
        let member = r#"{"content":{"membership":"join","avatar_url":"mxc://b.example/m"}}"#;
        assert_eq!(
            state_avatar_url("m.room.avatar", room).as_deref(),
            Some("mxc://a.example/r")
        );
        assert_eq!(
            state_avatar_url("m.room.member", member).as_deref(),
            Some("mxc://b.example/m")
        );
        assert_eq!(state_avatar_url("m.room.member", room), None);
        assert_eq!(state_avatar_url("m.room.avatar", member), None);
        assert_eq!(
            state_avatar_url(
                "m.room.member",
                r#"{"content":{"avatar_url":"https://x/y"}}"#
            ),
            None
        );
        assert_eq!(state_avatar_url("m.room.member", "{"), None);
    }

    fn row(origin: &str, media_id: &str, user_id: &str, hash: &str) -> DendriteMediaRow {
        DendriteMediaRow {
            media_id: media_id.into(),
            media_origin: origin.into(),
            user_id: user_id.into(),
            creation_ts: 1,
            base64hash: hash.into(),
            file_size_bytes: 2,
        }
    }

    #[test]
    fn rows_are_decoded_one_by_one() {
        let page = MediaPage::decode(vec![
            row("here.example", "ok", "@alice:here.example", "h1"),
            row("there.example", "remote", "", "h1"),
            row("there.example", "dot.ted", "", "h2"),
            row("bad origin", "x", "", "h3"),
            row("here.example", "y", "alice", "h3"),
        ]);
        let keys: Vec<String> = page.rows.iter().map(|r| r.key.to_string()).collect();
        assert_eq!(
            keys,
            ["mxc://here.example/ok", "mxc://there.example/remote"]
        );
        assert_eq!(
            page.rows[0].uploader,
            Some("@alice:here.example".parse().unwrap())
        );
        assert_eq!(page.rows[1].uploader, None);
        let invalid: Vec<String> = page.invalid.iter().map(|r| r.row.mxc()).collect();
        assert_eq!(
            invalid,
            [
                "mxc://there.example/dot.ted",
                "mxc://bad origin/x",
                "mxc://here.example/y"
            ]
        );
        assert_eq!(page.invalid[0].error.kind(), "media ID");
        assert_eq!(page.invalid[1].error.kind(), "server name");
        assert!(!page.invalid_rows_use("h1"));
        assert!(page.invalid_rows_use("h2") && page.invalid_rows_use("h3"));
    }

    #[test]
    fn media_keys_are_matched_as_pairs() {
        assert_eq!(
            media_keys_clause(Dialect::Postgres, 2),
            "media_id IN ($1, $2) AND (media_id, media_origin) IN (VALUES ($3, $4), ($5, $6))"
        );
        assert_eq!(
            media_keys_clause(Dialect::Sqlite, 1),
            "media_id IN (?) AND (media_id, media_origin) IN (VALUES (?, ?))"
        );
        assert_eq!(placeholders(Dialect::Postgres, 3), "$1, $2, $3");
        assert_eq!(placeholders(Dialect::Sqlite, 2), "?, ?");
    }
}
