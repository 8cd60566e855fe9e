//! Synapse's database as a purge sees it: the media a [`PurgeSelection`] selects (with
//! Synapse's own SQL semantics), what it keeps and why, and the deletion of a batch of
//! rows in one transaction.
//!
//! Every deleting statement repeats the selection's condition, so a media that changed
//! since it was planned (downloaded again, quarantined, protected, made an avatar) is
//! kept, not deleted on an outdated plan.

use std::collections::HashSet;

use media_core::ids::{MxcUri, ServerName};
use media_core::records::MediaKey;
use media_core::run::RunMode;
use media_db::DatabaseLocation;
use media_db::connect::{self, OpenOptions, Pool, on_pool};
use media_db::error::{DbError, QueryContext};
use sqlx::AssertSqlSafe;

use crate::plan::{AvatarPolicy, MediaTable, PlannedMedia, PurgeSelection, Storage};

/// Media planned (and deleted) per batch: one transaction each.
pub const BATCH_SIZE: i64 = 500;

/// The tables whose avatar column Synapse's `keep_profiles` consults, with that column.
const AVATAR_TABLES: [(&str, &str); 4] = [
    ("profiles", "avatar_url"),
    ("room_memberships", "avatar_url"),
    ("user_directory", "avatar_url"),
    ("room_stats_state", "avatar"),
];

/// Synapse's database, opened for a purge: read-only in a dry run.
#[derive(Debug, Clone)]
pub struct PurgeDb {
    pool: Pool,
    server_name: ServerName,
    /// Of [`AVATAR_TABLES`], those this database has (a test store may lack some).
    avatar_tables: Vec<(&'static str, &'static str)>,
    /// Whether `local_media_repository_url_cache` exists.
    has_url_cache: bool,
    /// The remote files (origin, filesystem ID) more than one row names, read before the
    /// first batch is deleted (see [`PurgeDb::delete_batch`]).
    shared_at_start: tokio::sync::OnceCell<HashSet<(String, String)>>,
}

/// Where a page of candidates starts: after this key (`(origin, media_id)`; the origin
/// is empty for local media).
pub type Cursor = (String, String);

/// One page of the media a selection selects.
#[derive(Debug, Default)]
pub struct CandidatePage {
    /// The media whose identifiers are valid, in key order.
    pub media: Vec<PlannedMedia>,
    /// The rows whose identifiers are not (`(mxc as recorded, why)`): they are kept.
    pub invalid: Vec<(String, String)>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<Cursor>,
}

/// Rows a selection leaves although they are old enough, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeptRows {
    /// Quarantined media.
    pub quarantined: u64,
    /// Protected (`safe_from_quarantine`) media, not quarantined.
    pub protected: u64,
    /// Media in use as avatars, neither quarantined nor protected.
    pub avatar: u64,
}

/// What one batch's transaction deleted.
#[derive(Debug, Default)]
pub struct DeletedBatch {
    /// The media whose rows were deleted and whose files no remaining row names: their
    /// files go.
    pub media: Vec<PlannedMedia>,
    /// Media rows deleted whose files another remaining row still names: kept on disk.
    pub files_shared: u64,
    /// Thumbnail rows deleted.
    pub thumbnails: u64,
    /// Planned media left alone because they no longer match the selection.
    pub changed: u64,
}

/// One value bound to a selection's placeholder.
#[derive(Debug, Clone)]
enum Bound {
    Int(i64),
    Text(String),
}

/// A selection's condition on one table (over `lmr` for local media, `r` for remote),
/// with its bound values in placeholder order from `$1`.
struct Condition {
    sql: String,
    binds: Vec<Bound>,
    /// The part that keeps avatars (`None` without avatars to keep).
    keep: Option<String>,
}

/// Binds a condition's values to a query, in placeholder order.
macro_rules! bind_selection {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for bound in &$binds {
            query = match bound {
                Bound::Int(value) => query.bind(*value),
                Bound::Text(text) => query.bind(text.clone()),
            };
        }
        query
    }};
}

/// The statement that finds which `(origin, filesystem_id)` pairs of `media` (the remote
/// ones) a row of `remote_media_cache` still uses, with its bound values; `None` when
/// there is nothing to look up. One statement per batch: the column has no index.
fn shared_lookup(media: &[PlannedMedia]) -> Option<(String, Vec<String>)> {
    let ids: Vec<String> = media
        .iter()
        .filter_map(|planned| match &planned.storage {
            Storage::Remote { filesystem_id } => Some(filesystem_id.to_string()),
            Storage::Local { .. } => None,
        })
        .collect();
    if ids.is_empty() {
        return None;
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT media_origin, filesystem_id FROM remote_media_cache \
         WHERE filesystem_id IN ({})",
        placeholders.join(", ")
    );
    Some((sql, ids))
}

/// Runs [`shared_lookup`]'s statement for `media` on `executor`: the pairs still in use.
macro_rules! shared_filesystem_ids {
    ($executor:expr, $media:expr) => {
        match shared_lookup($media) {
            None => HashSet::new(),
            Some((sql, ids)) => {
                let mut query = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql));
                for id in ids {
                    query = query.bind(id);
                }
                query
                    .fetch_all($executor)
                    .await
                    .during("look up remote files still in use")?
                    .into_iter()
                    .collect::<HashSet<(String, String)>>()
            }
        }
    };
}

/// The table a media's row is in.
fn table_of(storage: &Storage) -> MediaTable {
    match storage {
        Storage::Local { .. } => MediaTable::Local,
        Storage::Remote { .. } => MediaTable::Remote,
    }
}

/// A media's key as the rows of its table give it back: `(origin, media_id)`, the origin
/// empty for local media (as in a [`Cursor`]).
fn row_key(planned: &PlannedMedia) -> (String, String) {
    let origin = match planned.storage {
        Storage::Local { .. } => String::new(),
        Storage::Remote { .. } => planned.key.origin.to_string(),
    };
    (origin, planned.key.media_id.to_string())
}

/// The file a remote media's row names, `(origin, filesystem ID)`; `None` for local media.
fn remote_file(planned: &PlannedMedia) -> Option<(String, String)> {
    match &planned.storage {
        Storage::Remote { filesystem_id } => {
            Some((planned.key.origin.to_string(), filesystem_id.to_string()))
        }
        Storage::Local { .. } => None,
    }
}

/// The keys of some media of one table as one SQL condition over one bound value, a
/// JSON array of the keys: `media_id IN (…)`, or `(media_origin, media_id) IN (…)` for
/// remote media, the right-hand side reading the array (`json_each` on SQLite,
/// `json_array_elements` on PostgreSQL).
///
/// One value rather than one placeholder per key: binding hundreds of placeholders costs
/// SQLite a search of its parameter names per placeholder, and a row-value `IN (VALUES
/// …)` is searched through the table's key index by some SQLite versions only.
struct KeyList {
    table: MediaTable,
    /// The right-hand side of `IN`.
    list: String,
    binds: Vec<Bound>,
}

impl KeyList {
    /// The keys of `media` (all of `table`) as placeholder `$number` of a statement
    /// on `pool`.
    fn new(pool: &Pool, table: MediaTable, media: &[&PlannedMedia], number: usize) -> Self {
        let keys = media
            .iter()
            .map(|planned| (planned.key.origin.as_str(), planned.key.media_id.as_str()));
        Self::of_keys(pool, table, keys, number)
    }

    /// The `(origin, media_id)` keys `keys` of `table` (the origin unused for local
    /// media) as placeholder `$number` of a statement on `pool`.
    fn of_keys<'k>(
        pool: &Pool,
        table: MediaTable,
        keys: impl Iterator<Item = (&'k str, &'k str)>,
        number: usize,
    ) -> Self {
        let keys: Vec<serde_json::Value> = keys
            .map(|(origin, media_id)| match table {
                MediaTable::Remote => serde_json::json!([origin, media_id]),
                MediaTable::Local => serde_json::json!(media_id),
            })
            .collect();
        let list = match (pool, table) {
            (Pool::Sqlite(_), MediaTable::Remote) => {
                format!("(SELECT value ->> 0, value ->> 1 FROM json_each(${number}))")
            }
            (Pool::Sqlite(_), MediaTable::Local) => {
                format!("(SELECT value FROM json_each(${number}))")
            }
            (Pool::Postgres(_), MediaTable::Remote) => format!(
                "(SELECT k ->> 0, k ->> 1 FROM json_array_elements(CAST(${number} AS json)) AS k)"
            ),
            (Pool::Postgres(_), MediaTable::Local) => {
                format!("(SELECT k FROM json_array_elements_text(CAST(${number} AS json)) AS k)")
            }
        };
        KeyList {
            table,
            list,
            binds: vec![Bound::Text(serde_json::Value::Array(keys).to_string())],
        }
    }

    /// The condition, over columns prefixed with `alias` (`"r."`, or `""`).
    fn condition(&self, alias: &str) -> String {
        match self.table {
            MediaTable::Remote => {
                format!("({alias}media_origin, {alias}media_id) IN {}", self.list)
            }
            MediaTable::Local => format!("{alias}media_id IN {}", self.list),
        }
    }
}

/// The table of the thumbnails of `table`'s media.
fn thumbnail_table(table: MediaTable) -> &'static str {
    match table {
        MediaTable::Remote => "remote_media_cache_thumbnails",
        MediaTable::Local => "local_media_repository_thumbnails",
    }
}

/// Opens Synapse's database at `location` for a purge of the local media of
/// `server_name` (or of its remote cache): read-only when `mode` is a dry run.
pub async fn open_purge_db(
    location: &DatabaseLocation,
    mode: RunMode,
    server_name: ServerName,
) -> Result<PurgeDb, DbError> {
    let pool = connect::open_pool(
        location,
        OpenOptions {
            create: false,
            read_only: mode.is_dry_run(),
            max_connections: 2,
        },
    )
    .await?;
    let mut db = PurgeDb {
        pool,
        server_name,
        avatar_tables: Vec::new(),
        has_url_cache: false,
        shared_at_start: tokio::sync::OnceCell::new(),
    };
    for (table, column) in AVATAR_TABLES {
        if db.has_table(table).await? {
            db.avatar_tables.push((table, column));
        } else {
            tracing::debug!("this Synapse database has no {table} table: no avatars read there");
        }
    }
    db.has_url_cache = db.has_table("local_media_repository_url_cache").await?;
    Ok(db)
}

impl PurgeDb {
    /// Closes the connections.
    pub async fn close(&self) {
        on_pool!(&self.pool, |p| p.close().await)
    }

    /// The homeserver whose local media this purge deletes.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    async fn has_table(&self, table: &str) -> Result<bool, DbError> {
        self.pool
            .has_table(table, "inspect the Synapse schema")
            .await
    }

    /// The SQL condition of a selection on `table`, with its bound values.
    fn condition(&self, selection: &PurgeSelection, table: MediaTable) -> Condition {
        let nothing = || Condition {
            sql: "1 = 0".to_owned(),
            binds: Vec::new(),
            keep: None,
        };
        match (selection, table) {
            (PurgeSelection::Remote { before }, MediaTable::Remote) => Condition {
                sql: "r.last_access_ts < $1 AND r.quarantined_by IS NULL".to_owned(),
                binds: vec![Bound::Int(before.unix_ms())],
                keep: None,
            },
            (
                PurgeSelection::Local {
                    before,
                    size_gt,
                    avatars,
                },
                MediaTable::Local,
            ) => {
                let mut sql = format!(
                    "{LOCAL_AGE_AND_SIZE} AND lmr.quarantined_by IS NULL \
                     AND NOT COALESCE(lmr.safe_from_quarantine, FALSE)"
                );
                let keep =
                    (*avatars == AvatarPolicy::Keep && !self.avatar_tables.is_empty()).then(|| {
                        self.avatar_tables
                            .iter()
                            .map(|(table, column)| {
                                format!(
                                    "NOT EXISTS (SELECT 1 FROM {table} \
                                     WHERE {table}.{column} = $3 || lmr.media_id)"
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" AND ")
                    });
                let mut binds = vec![
                    Bound::Int(before.unix_ms()),
                    Bound::Int(i64::try_from(*size_gt).unwrap_or(i64::MAX)),
                ];
                if let Some(keep) = &keep {
                    sql = format!("{sql} AND {keep}");
                    binds.push(Bound::Text(format!("mxc://{}/", self.server_name)));
                }
                Condition { sql, binds, keep }
            }
            (PurgeSelection::User { user, before }, MediaTable::Local) => {
                let mut sql = "lmr.user_id = $1".to_owned();
                let mut binds = vec![Bound::Text(user.to_string())];
                if let Some(before) = before {
                    sql.push_str(" AND lmr.created_ts < $2");
                    binds.push(Bound::Int(before.unix_ms()));
                }
                Condition {
                    sql,
                    binds,
                    keep: None,
                }
            }
            (PurgeSelection::Media { .. }, table) => {
                let (local, remote) = selection.named_media(&self.server_name);
                let (named, alias) = match table {
                    MediaTable::Local => (local, "lmr."),
                    MediaTable::Remote => (remote, "r."),
                };
                if named.is_empty() {
                    return nothing();
                }
                // One bound value: a list of two per key passed SQLite's limits.
                let keys = named
                    .iter()
                    .map(|mxc| (mxc.server().as_str(), mxc.media_id().as_str()));
                let keys = KeyList::of_keys(&self.pool, table, keys, 1);
                Condition {
                    sql: keys.condition(alias),
                    binds: keys.binds,
                    keep: None,
                }
            }
            _ => nothing(),
        }
    }

    /// How many media the selection selects now.
    pub async fn count_candidates(&self, selection: &PurgeSelection) -> Result<u64, DbError> {
        let mut total = 0;
        for table in selection.tables(&self.server_name) {
            let condition = self.condition(selection, table);
            let sql = match table {
                MediaTable::Remote => format!(
                    "SELECT COUNT(*) FROM remote_media_cache AS r WHERE {}",
                    condition.sql
                ),
                MediaTable::Local => format!(
                    "SELECT COUNT(*) FROM local_media_repository AS lmr WHERE {}",
                    condition.sql
                ),
            };
            let count: i64 = on_pool!(&self.pool, |p| {
                bind_selection!(sqlx::query_scalar(AssertSqlSafe(sql)), condition.binds)
                    .fetch_one(p)
                    .await
                    .during("count the media to purge")?
            });
            total += count as u64;
        }
        Ok(total)
    }

    /// The media an explicit [`PurgeSelection::Media`] names that have no row: Synapse
    /// answers 404 for them (empty for the other selections).
    pub async fn missing_named_media(
        &self,
        selection: &PurgeSelection,
    ) -> Result<Vec<MxcUri>, DbError> {
        let (local, remote) = selection.named_media(&self.server_name);
        let mut missing = Vec::new();
        for (table, named) in [(MediaTable::Local, local), (MediaTable::Remote, remote)] {
            for mxc in named {
                let found: Option<i64> = on_pool!(&self.pool, |p| {
                    match table {
                        MediaTable::Local => sqlx::query_scalar(
                            "SELECT CAST(1 AS BIGINT) FROM local_media_repository \
                             WHERE media_id = $1",
                        )
                        .bind(mxc.media_id().as_str()),
                        MediaTable::Remote => sqlx::query_scalar(
                            "SELECT CAST(1 AS BIGINT) FROM remote_media_cache \
                             WHERE media_origin = $1 AND media_id = $2",
                        )
                        .bind(mxc.server().as_str())
                        .bind(mxc.media_id().as_str()),
                    }
                    .fetch_optional(p)
                    .await
                    .during("look up a named media")?
                });
                if found.is_none() {
                    missing.push(mxc.clone());
                }
            }
        }
        Ok(missing)
    }

    /// The media old enough for the selection that it keeps, by reason (Synapse's order:
    /// quarantined, then protected, then avatars). The explicit forms keep nothing.
    pub async fn kept_rows(&self, selection: &PurgeSelection) -> Result<KeptRows, DbError> {
        match selection {
            PurgeSelection::Remote { before } => {
                let quarantined: i64 = on_pool!(&self.pool, |p| {
                    sqlx::query_scalar(
                        "SELECT COUNT(*) FROM remote_media_cache \
                         WHERE last_access_ts < $1 AND quarantined_by IS NOT NULL",
                    )
                    .bind(before.unix_ms())
                    .fetch_one(p)
                    .await
                    .during("count the quarantined remote media")?
                });
                Ok(KeptRows {
                    quarantined: quarantined as u64,
                    ..KeptRows::default()
                })
            }
            PurgeSelection::Local { .. } => {
                let condition = self.condition(selection, MediaTable::Local);
                let avatar = match condition.keep {
                    Some(keep) => format!("NOT ({keep})"),
                    None => "1 = 0".to_owned(),
                };
                let sql = format!(
                    "SELECT \
                     CAST(COALESCE(SUM(CASE WHEN lmr.quarantined_by IS NOT NULL \
                       THEN 1 ELSE 0 END), 0) AS BIGINT) AS quarantined, \
                     CAST(COALESCE(SUM(CASE WHEN lmr.quarantined_by IS NULL \
                       AND COALESCE(lmr.safe_from_quarantine, FALSE) \
                       THEN 1 ELSE 0 END), 0) AS BIGINT) AS protected, \
                     CAST(COALESCE(SUM(CASE WHEN lmr.quarantined_by IS NULL \
                       AND NOT COALESCE(lmr.safe_from_quarantine, FALSE) AND {avatar} \
                       THEN 1 ELSE 0 END), 0) AS BIGINT) AS avatar \
                     FROM local_media_repository AS lmr WHERE {LOCAL_AGE_AND_SIZE}"
                );
                let (quarantined, protected, avatar): (i64, i64, i64) = on_pool!(&self.pool, |p| {
                    bind_selection!(sqlx::query_as(AssertSqlSafe(sql)), condition.binds)
                        .fetch_one(p)
                        .await
                        .during("count the local media kept")?
                });
                Ok(KeptRows {
                    quarantined: quarantined as u64,
                    protected: protected as u64,
                    avatar: avatar as u64,
                })
            }
            PurgeSelection::User { .. } | PurgeSelection::Media { .. } => Ok(KeptRows::default()),
        }
    }

    /// The page of media the selection selects in `table` after `after`, at most
    /// [`BATCH_SIZE`], in key order.
    pub async fn candidates(
        &self,
        selection: &PurgeSelection,
        table: MediaTable,
        after: &Cursor,
    ) -> Result<CandidatePage, DbError> {
        let Condition {
            sql: condition,
            binds,
            ..
        } = self.condition(selection, table);
        let n = binds.len();
        let mut page = CandidatePage::default();
        match table {
            MediaTable::Remote => {
                let sql = format!(
                    "SELECT r.media_origin, r.media_id, r.filesystem_id \
                     FROM remote_media_cache AS r WHERE {condition} \
                     AND (r.media_origin, r.media_id) > (${a}, ${b}) \
                     ORDER BY r.media_origin, r.media_id LIMIT ${c}",
                    a = n + 1,
                    b = n + 2,
                    c = n + 3
                );
                let rows: Vec<(String, String, Option<String>)> = on_pool!(&self.pool, |p| {
                    bind_selection!(sqlx::query_as(AssertSqlSafe(sql)), binds)
                        .bind(&after.0)
                        .bind(&after.1)
                        .bind(BATCH_SIZE)
                        .fetch_all(p)
                        .await
                        .during("read the remote media to purge")?
                });
                if rows.len() as i64 == BATCH_SIZE {
                    let (origin, id, _) = rows.last().expect("a full page");
                    page.next = Some((origin.clone(), id.clone()));
                }
                for (origin, media_id, filesystem_id) in rows {
                    let shown = format!("mxc://{origin}/{media_id}");
                    match remote_candidate(&origin, &media_id, filesystem_id.as_deref()) {
                        Ok(planned) => page.media.push(planned),
                        Err(reason) => page.invalid.push((shown, reason)),
                    }
                }
            }
            MediaTable::Local => {
                let sql = format!(
                    "SELECT lmr.media_id, CAST(CASE WHEN lmr.url_cache IS NULL THEN 0 ELSE 1 END \
                     AS BIGINT) AS url_preview FROM local_media_repository AS lmr \
                     WHERE {condition} AND lmr.media_id > ${a} ORDER BY lmr.media_id LIMIT ${b}",
                    a = n + 1,
                    b = n + 2
                );
                let rows: Vec<(String, i64)> = on_pool!(&self.pool, |p| {
                    bind_selection!(sqlx::query_as(AssertSqlSafe(sql)), binds)
                        .bind(&after.1)
                        .bind(BATCH_SIZE)
                        .fetch_all(p)
                        .await
                        .during("read the local media to purge")?
                });
                if rows.len() as i64 == BATCH_SIZE {
                    let (id, _) = rows.last().expect("a full page");
                    page.next = Some((String::new(), id.clone()));
                }
                for (media_id, url_preview) in rows {
                    let shown = format!("mxc://{}/{media_id}", self.server_name);
                    let planned = media_id.parse().map_err(|e| format!("{e}")).and_then(|id| {
                        PlannedMedia::local(&self.server_name, id, url_preview != 0)
                            .ok_or_else(|| "the media ID maps to no Synapse path".to_owned())
                    });
                    match planned {
                        Ok(planned) => page.media.push(planned),
                        Err(reason) => page.invalid.push((shown, reason)),
                    }
                }
            }
        }
        Ok(page)
    }

    /// Thumbnail rows of `media` (what a dry run reports it would delete): one count per
    /// table per [`BATCH_SIZE`] media.
    pub async fn count_thumbnails(&self, media: &[PlannedMedia]) -> Result<u64, DbError> {
        let mut total = 0;
        for table in [MediaTable::Local, MediaTable::Remote] {
            let of_table: Vec<&PlannedMedia> = media
                .iter()
                .filter(|planned| table_of(&planned.storage) == table)
                .collect();
            for chunk in of_table.chunks(BATCH_SIZE as usize) {
                let keys = KeyList::new(&self.pool, table, chunk, 1);
                let sql = format!(
                    "SELECT COUNT(*) FROM {} WHERE {}",
                    thumbnail_table(table),
                    keys.condition("")
                );
                let count: i64 = on_pool!(&self.pool, |p| {
                    bind_selection!(sqlx::query_scalar(AssertSqlSafe(sql)), keys.binds)
                        .fetch_one(p)
                        .await
                        .during("count thumbnail rows")?
                });
                total += count as u64;
            }
        }
        Ok(total)
    }

    /// Deletes, in one transaction, the rows of every media of `batch` that the selection
    /// still selects, with their thumbnail rows (and, for local media, their URL-cache
    /// rows, as Synapse does). The media whose files another remaining row names (a
    /// remote filesystem ID in use twice) are returned apart: their files stay.
    ///
    /// Set-based: one statement per table per chunk of [`BATCH_SIZE`] media. A media
    /// counts as deleted only when its own row went (the media statement returns the keys
    /// it deleted); the others changed since they were planned and are counted so.
    ///
    /// `filesystem_id` has no index, so whether a file is still named is asked (a read of
    /// the whole table) only for the files more than one row named when the run began,
    /// found in one read before the first batch. Synapse gives every remote download a
    /// new random filesystem ID, so no row written since shares a file.
    pub async fn delete_batch(
        &self,
        selection: &PurgeSelection,
        batch: &[PlannedMedia],
    ) -> Result<DeletedBatch, DbError> {
        let mut deleted = DeletedBatch::default();
        let mut gone = Vec::with_capacity(batch.len());
        let shared_at_start = self.files_shared_at_start().await?;
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await.during("begin a purge batch")?;
            for table in [MediaTable::Local, MediaTable::Remote] {
                let of_table: Vec<&PlannedMedia> = batch
                    .iter()
                    .filter(|planned| table_of(&planned.storage) == table)
                    .collect();
                for chunk in of_table.chunks(BATCH_SIZE as usize) {
                    let Condition {
                        sql: condition,
                        binds,
                        ..
                    } = self.condition(selection, table);
                    let planned = KeyList::new(&self.pool, table, chunk, binds.len() + 1);
                    let sql = match table {
                        MediaTable::Remote => format!(
                            "DELETE FROM remote_media_cache AS r WHERE {condition} \
                             AND {} RETURNING media_origin, media_id",
                            planned.condition("r.")
                        ),
                        MediaTable::Local => format!(
                            "DELETE FROM local_media_repository AS lmr WHERE {condition} \
                             AND {} RETURNING '', media_id",
                            planned.condition("lmr.")
                        ),
                    };
                    let query = bind_selection!(
                        sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql)),
                        binds
                    );
                    let rows: HashSet<(String, String)> = bind_selection!(query, planned.binds)
                        .fetch_all(&mut *tx)
                        .await
                        .during("delete media rows")?
                        .into_iter()
                        .collect();
                    let (went, changed): (Vec<&PlannedMedia>, Vec<&PlannedMedia>) = chunk
                        .iter()
                        .partition(|planned| rows.contains(&row_key(planned)));
                    deleted.changed += changed.len() as u64;
                    if went.is_empty() {
                        continue;
                    }
                    let went_keys = KeyList::new(&self.pool, table, &went, 1);
                    deleted.thumbnails += bind_selection!(
                        sqlx::query(AssertSqlSafe(format!(
                            "DELETE FROM {} WHERE {}",
                            thumbnail_table(table),
                            went_keys.condition("")
                        ))),
                        went_keys.binds
                    )
                    .execute(&mut *tx)
                    .await
                    .during("delete thumbnail rows")?
                    .rows_affected();
                    if self.has_url_cache && table == MediaTable::Local {
                        bind_selection!(
                            sqlx::query(AssertSqlSafe(format!(
                                "DELETE FROM local_media_repository_url_cache WHERE {}",
                                went_keys.condition("")
                            ))),
                            went_keys.binds
                        )
                        .execute(&mut *tx)
                        .await
                        .during("delete URL-cache rows")?;
                    }
                    gone.extend(went.into_iter().cloned());
                }
            }
            let maybe_shared: Vec<PlannedMedia> = gone
                .iter()
                .filter(|planned| {
                    remote_file(planned).is_some_and(|f| shared_at_start.contains(&f))
                })
                .cloned()
                .collect();
            let shared = shared_filesystem_ids!(&mut *tx, &maybe_shared);
            tx.commit().await.during("commit a purge batch")?;
            for planned in gone {
                if remote_file(&planned).is_some_and(|file| shared.contains(&file)) {
                    deleted.files_shared += 1;
                } else {
                    deleted.media.push(planned);
                }
            }
        });
        Ok(deleted)
    }

    /// The remote files more than one row names, read once (one pass over the table).
    async fn files_shared_at_start(&self) -> Result<&HashSet<(String, String)>, DbError> {
        self.shared_at_start
            .get_or_try_init(|| async {
                let files: Vec<(String, String)> = on_pool!(&self.pool, |p| {
                    sqlx::query_as(
                        "SELECT media_origin, filesystem_id FROM remote_media_cache \
                         WHERE filesystem_id IS NOT NULL \
                         GROUP BY media_origin, filesystem_id HAVING COUNT(*) > 1",
                    )
                    .fetch_all(p)
                    .await
                    .during("find the remote files more than one row names")?
                });
                Ok(files.into_iter().collect())
            })
            .await
    }

    /// `media` split into those whose row is gone and those whose row is still there.
    pub async fn split_by_row(
        &self,
        media: Vec<PlannedMedia>,
    ) -> Result<(Vec<PlannedMedia>, Vec<PlannedMedia>), DbError> {
        let mut without_row = Vec::with_capacity(media.len());
        let mut with_row = Vec::new();
        for planned in media {
            let (origin, id) = (planned.key.origin.as_str(), planned.key.media_id.as_str());
            let found: Option<i64> = on_pool!(&self.pool, |p| {
                match planned.storage {
                    Storage::Local { .. } => sqlx::query_scalar(
                        "SELECT CAST(1 AS BIGINT) FROM local_media_repository WHERE media_id = $1",
                    )
                    .bind(id),
                    Storage::Remote { .. } => sqlx::query_scalar(
                        "SELECT CAST(1 AS BIGINT) FROM remote_media_cache WHERE media_origin = $1 \
                         AND media_id = $2",
                    )
                    .bind(origin)
                    .bind(id),
                }
                .fetch_optional(p)
                .await
                .during("look up whether a media's row is still there")?
            });
            match found {
                None => without_row.push(planned),
                Some(_) => with_row.push(planned),
            }
        }
        Ok((without_row, with_row))
    }

    /// The rows of `table`.
    pub async fn count_media(&self, table: MediaTable) -> Result<u64, DbError> {
        let sql = match table {
            MediaTable::Local => "SELECT COUNT(*) FROM local_media_repository",
            MediaTable::Remote => "SELECT COUNT(*) FROM remote_media_cache",
        };
        let count: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(sql)
                .fetch_one(p)
                .await
                .during("count media rows")?
        });
        Ok(count as u64)
    }

    /// Of `media` (listed by an interrupted run), those whose files nothing names any
    /// more: their row is gone, and (remote) no other row uses their filesystem ID.
    pub async fn unreferenced(
        &self,
        media: Vec<PlannedMedia>,
    ) -> Result<Vec<PlannedMedia>, DbError> {
        let (mut without_row, _) = self.split_by_row(media).await?;
        let shared = on_pool!(&self.pool, |p| shared_filesystem_ids!(p, &without_row));
        without_row.retain(|planned| !remote_file(planned).is_some_and(|f| shared.contains(&f)));
        Ok(without_row)
    }
}

/// The age and size part of Synapse's local selection (`$1` the cutoff, `$2` size_gt).
const LOCAL_AGE_AND_SIZE: &str = "(lmr.last_access_ts < $1 \
     OR (lmr.created_ts < $1 AND lmr.last_access_ts IS NULL)) AND lmr.media_length > $2";

/// A remote candidate row as a planned media, or why it cannot be one.
fn remote_candidate(
    origin: &str,
    media_id: &str,
    filesystem_id: Option<&str>,
) -> Result<PlannedMedia, String> {
    let origin: ServerName = origin.parse().map_err(|e| format!("origin: {e}"))?;
    let media_id = media_id.parse().map_err(|e| format!("media ID: {e}"))?;
    let filesystem_id = filesystem_id
        .ok_or("filesystem_id is NULL")?
        .parse()
        .map_err(|e| format!("filesystem_id: {e}"))?;
    PlannedMedia::remote(MediaKey::new(origin, media_id), filesystem_id)
        .ok_or_else(|| "the filesystem ID maps to no Synapse path".to_owned())
}
