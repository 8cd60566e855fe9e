//! Purges (`media_admin purge`): which media a [`PurgeSelection`] selects, as one SQL
//! predicate over a media row `m`; its pages, in (origin, media_id) order; what deleting
//! a page does (a dry run's tally) and the deletion itself, one transaction per page.
//!
//! A blob is freed when no media or thumbnail row references it any more (the rule of
//! [`crate::DeletionQueue::delete_media`], checked in the deleting transaction). A dry
//! run counts, for a page, the blobs whose every reference is a media of the selection
//! at or before the page's last key (or a thumbnail of one): exactly those the real run
//! frees when it deletes that page, the pages before it being gone by then.
//!
//! What a purge leaves behind: the IDs of purged media of our own servers in
//! `reserved_media`, and the bytes of purged quarantined media in `blocked_hashes` (which
//! [`crate::Quarantine::is_hash_quarantined`] consults), in the same transaction.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use media_core::ids::{ServerName, Sha256Hex};
use media_core::now_ms;
use media_core::records::MediaKey;

use super::Repository;
use super::deletion::{KEYS_PER_STATEMENT, delete_media_in, dequeue_in};
use super::sql::{retrying_deadlocks, values_list};
use crate::Dialect;
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::{PurgeCandidate, PurgeSelection, PurgeTally, PurgedBatch, TaskKind};
use crate::roles::Purge;
use crate::rows::media_key;

/// Why a media ID is reserved, as `reserved_media.reason` records it.
const RESERVED_BY_PURGE: &str = "purged";

/// Why bytes are blocked, as `blocked_hashes.reason` records it.
const BLOCKED_BY_PURGE: &str = "purged while quarantined";

/// A value bound to a numbered parameter.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Int(i64),
}

/// What the bulk forms spare: pinned and quarantined media.
const BULK: &str = "m.purpose <> 'pinned' AND NOT m.quarantined";

/// A statement being written, with the values of its numbered parameters (`$1`, `$2`…).
/// A parameter is numbered when first written, so the numbers rise through the text:
/// SQLite numbers named parameters by first appearance, PostgreSQL by their digits, and
/// both agree. A parameter written again reuses its value.
#[derive(Debug)]
struct Statement {
    dialect: Dialect,
    text: String,
    values: Vec<Value>,
}

impl Statement {
    /// An empty statement of `dialect`.
    fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            text: String::new(),
            values: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Writes a new parameter for `value`; returns its placeholder.
    fn param(&mut self, value: Value) -> String {
        self.values.push(value);
        let placeholder = format!("${}", self.values.len());
        self.text.push_str(&placeholder);
        placeholder
    }

    /// Writes a comma-separated list of new parameters, one per value.
    fn list(&mut self, values: impl IntoIterator<Item = Value>) {
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.param(value);
        }
    }

    /// Writes ` AND column < $` when there is a moment to compare with.
    fn before(&mut self, column: &str, before: Option<i64>) {
        if let Some(before) = before {
            self.push(&format!(" AND {column} < "));
            self.param(Value::Int(before));
        }
    }

    /// Writes the condition that `m` is one of the media `selection` selects; returns
    /// the condition's text, to be written again (its parameters reused).
    fn selection(&mut self, selection: &PurgeSelection) -> String {
        let start = self.text.len();
        let spare = |s: &mut Self, spare: &[ServerName]| {
            if !spare.is_empty() {
                s.push(" AND m.origin NOT IN (");
                s.list(spare.iter().map(|o| Value::Text(o.to_string())));
                s.push(")");
            }
        };
        self.push("(");
        match selection {
            PurgeSelection::Remote {
                spare: ours,
                before: at,
            } => {
                self.push(BULK);
                spare(self, ours);
                self.before("m.created_ts", Some(*at));
            }
            PurgeSelection::Quarantined => {
                self.push(
                    "m.purpose <> 'pinned' AND (EXISTS (SELECT 1 FROM media AS q \
                     WHERE q.sha256 = m.sha256 AND q.quarantined) \
                     OR EXISTS (SELECT 1 FROM blocked_hashes AS h WHERE h.sha256 = m.sha256))",
                );
            }
            PurgeSelection::Media(keys) => self.named_keys("m", keys),
            PurgeSelection::User { user, before: at } => {
                self.push(BULK);
                self.push(" AND m.user_id = ");
                self.param(Value::Text(user.to_string()));
                self.before("m.created_ts", *at);
            }
            PurgeSelection::Server { origin, before: at } => {
                self.push(BULK);
                self.push(" AND m.origin = ");
                self.param(Value::Text(origin.to_string()));
                self.before("m.created_ts", *at);
            }
            PurgeSelection::Room { room, before: at } => {
                self.push(BULK);
                // Driven by the room's links (its primary key), not a walk of every media.
                // `page_statement` selects the same media by joining the links.
                self.push(
                    " AND (m.origin, m.media_id) IN (SELECT r.origin, r.media_id \
                     FROM room_media AS r WHERE r.room_id = ",
                );
                self.param(Value::Text(room.to_string()));
                self.push(")");
                self.before("m.created_ts", *at);
            }
            PurgeSelection::Unaccessed { since, spare: ours } => {
                self.push(BULK);
                spare(self, ours);
                self.before("COALESCE(m.last_access_ts, m.created_ts)", Some(*since));
            }
        }
        self.push(")");
        self.text[start..].to_owned()
    }

    /// Writes the condition that the key of the row `alias` is on the `bound` side of
    /// `key`; returns its text. A row-value comparison, which both engines read as a
    /// range of the key's index: the equivalent `origin > $1 OR (origin = $1 AND
    /// media_id > $2)` made each page scan every row before it again.
    fn key_order(&mut self, alias: &str, bound: KeyBound, key: &MediaKey) -> String {
        let start = self.text.len();
        let comparison = match bound {
            KeyBound::After => ">",
            KeyBound::UpTo => "<=",
        };
        self.push(&format!(
            "({alias}.origin, {alias}.media_id) {comparison} ("
        ));
        self.param(Value::Text(key.origin.to_string()));
        self.push(", ");
        self.param(Value::Text(key.media_id.to_string()));
        self.push(")");
        self.text[start..].to_owned()
    }

    /// Writes `(alias.origin, alias.media_id) IN (…)` over `keys` bound as one JSON array
    /// of `[origin, media_id]` pairs: as many as an operator names (a list of values takes
    /// two bound values a key, and SQLite takes 32,766).
    fn named_keys(&mut self, alias: &str, keys: &[MediaKey]) {
        let pairs: Vec<[&str; 2]> = keys
            .iter()
            .map(|key| [key.origin.as_str(), key.media_id.as_str()])
            .collect();
        let pairs = serde_json::to_string(&pairs).expect("strings serialize");
        self.push(&format!("({alias}.origin, {alias}.media_id) IN ("));
        match self.dialect {
            Dialect::Sqlite => {
                self.push("SELECT value ->> 0, value ->> 1 FROM json_each(");
                self.param(Value::Text(pairs));
                self.push(")");
            }
            Dialect::Postgres => {
                self.push("SELECT k ->> 0, k ->> 1 FROM json_array_elements(CAST(");
                self.param(Value::Text(pairs));
                self.push(" AS json)) AS k");
            }
        }
        self.push(")");
    }
}

/// Which side of a key, in (origin, media_id) order, a condition keeps.
#[derive(Debug, Clone, Copy)]
enum KeyBound {
    /// Strictly after it (the next page).
    After,
    /// At or before it (this page and those before).
    UpTo,
}

/// The statement of a page of `selection`: the first `limit` media after `after`, in
/// key order.
fn page_statement(
    dialect: Dialect,
    selection: &PurgeSelection,
    after: Option<&MediaKey>,
    limit: i64,
) -> Statement {
    let mut s = Statement::new(dialect);
    s.push("SELECT m.origin, m.media_id, m.sha256, m.quarantined FROM ");
    if let PurgeSelection::Room { room, before } = selection {
        // The room's links, walked in their key order (the media's): selecting the media
        // `IN` the room made each page sort every link of the room again.
        s.push("room_media AS r JOIN media AS m USING (origin, media_id) WHERE r.room_id = ");
        s.param(Value::Text(room.to_string()));
        s.push(&format!(" AND {BULK}"));
        s.before("m.created_ts", *before);
        if let Some(after) = after {
            s.push(" AND ");
            s.key_order("r", KeyBound::After, after);
        }
        s.push(" ORDER BY r.origin, r.media_id LIMIT ");
        s.param(Value::Int(limit));
        return s;
    }
    s.push("media AS m WHERE ");
    s.selection(selection);
    match (after, selection) {
        (None, _) => {}
        // Every media of the selection has `after`'s origin: SQLite reads a range of
        // media IDs within the origin only when told so.
        (Some(after), PurgeSelection::Server { .. }) => {
            s.push(" AND m.media_id > ");
            s.param(Value::Text(after.media_id.to_string()));
        }
        (Some(after), _) => {
            s.push(" AND ");
            s.key_order("m", KeyBound::After, after);
        }
    }
    s.push(" ORDER BY m.origin, m.media_id LIMIT ");
    s.param(Value::Int(limit));
    s
}

/// Binds the values of a [`Statement`] to `$query`, in order.
macro_rules! bind_values {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                Value::Text(text) => query.bind(text.clone()),
                Value::Int(n) => query.bind(*n),
            };
        }
        query
    }};
}

#[async_trait]
impl Purge for Repository {
    async fn count_purge(&self, selection: &PurgeSelection) -> Result<u64, DbError> {
        let mut s = Statement::new(self.dialect);
        s.push("SELECT COUNT(*) FROM media AS m WHERE ");
        s.selection(selection);
        let count: i64 = on_pool!(&self.pool, |p| {
            bind_values!(
                sqlx::query_scalar(sqlx::AssertSqlSafe(s.text.clone())),
                &s.values
            )
            .fetch_one(p)
            .await
            .during("count the media of a purge")?
        });
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn purge_page(
        &self,
        selection: &PurgeSelection,
        after: Option<&MediaKey>,
        limit: i64,
    ) -> Result<Vec<PurgeCandidate>, DbError> {
        let s = page_statement(self.dialect, selection, after, limit);
        let rows: Vec<(String, String, String, bool)> = on_pool!(&self.pool, |p| {
            bind_values!(
                sqlx::query_as(sqlx::AssertSqlSafe(s.text.clone())),
                &s.values
            )
            .fetch_all(p)
            .await
            .during("read a page of a purge")?
        });
        rows.into_iter()
            .map(|(origin, media_id, sha256, quarantined)| {
                let key = media_key("media", &origin, &media_id)?;
                Ok(PurgeCandidate {
                    sha256: Sha256Hex::try_from(sha256.as_str()).map_err(|e| {
                        DbError::InvalidRow {
                            table: "media",
                            key: key.to_string(),
                            reason: e.to_string(),
                        }
                    })?,
                    key,
                    quarantined,
                })
            })
            .collect()
    }

    async fn tally_purge(
        &self,
        selection: &PurgeSelection,
        batch: &[PurgeCandidate],
        ours: &[ServerName],
    ) -> Result<PurgeTally, DbError> {
        let Some(last) = batch.last() else {
            return Ok(PurgeTally::default());
        };
        let keys: Vec<MediaKey> = batch.iter().map(|c| c.key.clone()).collect();
        let mut thumbnails = Statement::new(self.dialect);
        thumbnails.push("SELECT t.sha256 FROM thumbnails AS t WHERE ");
        thumbnails.named_keys("t", &keys);
        let thumbnail_digests: Vec<String> = on_pool!(&self.pool, |p| {
            bind_values!(
                sqlx::query_scalar(sqlx::AssertSqlSafe(thumbnails.text.clone())),
                &thumbnails.values
            )
            .fetch_all(p)
            .await
            .during("read the thumbnails of a purge")?
        });
        let digests: BTreeSet<String> = batch
            .iter()
            .map(|c| c.sha256.to_string())
            .chain(thumbnail_digests.iter().cloned())
            .collect();
        let digests: Vec<String> = digests.into_iter().collect();
        let mut sizes: Vec<i64> = Vec::new();
        for chunk in digests.chunks(KEYS_PER_STATEMENT) {
            // A blob is freed when none of its references survives: every media holding
            // it (or holding a thumbnail made of it) is selected and at or before this
            // page.
            let mut freed = Statement::new(self.dialect);
            freed.push("SELECT b.size_bytes FROM blobs AS b WHERE b.sha256 IN (");
            freed.list(chunk.iter().cloned().map(Value::Text));
            freed.push(
                ") AND NOT EXISTS (SELECT 1 FROM media AS m WHERE m.sha256 = b.sha256 \
                 AND NOT COALESCE(",
            );
            let selected = freed.selection(selection);
            freed.push(" AND ");
            let up_to = freed.key_order("m", KeyBound::UpTo, &last.key);
            freed.push(&format!(
                ", FALSE)) AND NOT EXISTS (SELECT 1 FROM thumbnails AS t JOIN media AS m \
                 ON m.origin = t.origin AND m.media_id = t.media_id WHERE t.sha256 = b.sha256 \
                 AND NOT COALESCE({selected} AND {up_to}, FALSE))"
            ));
            let chunk_sizes: Vec<i64> = on_pool!(&self.pool, |p| {
                bind_values!(
                    sqlx::query_scalar(sqlx::AssertSqlSafe(freed.text.clone())),
                    &freed.values
                )
                .fetch_all(p)
                .await
                .during("tally the blobs a purge frees")?
            });
            sizes.extend(chunk_sizes);
        }
        Ok(PurgeTally {
            media: batch.len() as u64,
            thumbnails: thumbnail_digests.len() as u64,
            blobs_freed: sizes.len() as u64,
            bytes_freed: sizes.iter().map(|n| u64::try_from(*n).unwrap_or(0)).sum(),
            reserved: batch
                .iter()
                .filter(|c| ours.contains(&c.key.origin))
                .count() as u64,
        })
    }

    async fn purge_batch(
        &self,
        batch: &[PurgeCandidate],
        ours: &[ServerName],
        acknowledged: &[i64],
    ) -> Result<PurgedBatch, DbError> {
        // A purge deletes media, then their blobs; an import records blobs, then media:
        // when both meet on the same bytes, the database may abort either.
        retrying_deadlocks(|| self.purge_batch_once(batch, ours, acknowledged)).await
    }

    async fn recorded_own_servers(&self) -> Result<Vec<ServerName>, DbError> {
        let params: Vec<String> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar("SELECT params FROM tasks WHERE kind = $1 ORDER BY id")
                .bind(TaskKind::ImportSynapse.as_str())
                .fetch_all(p)
                .await
                .during("read the server names of recorded imports")?
        });
        let names: BTreeSet<ServerName> = params
            .iter()
            .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .filter_map(|p| p.get("server_name")?.as_str()?.parse().ok())
            .collect();
        Ok(names.into_iter().collect())
    }

    async fn is_reserved(&self, key: &MediaKey) -> Result<bool, DbError> {
        let found: Option<i64> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM reserved_media WHERE origin = $1 AND media_id = $2",
            )
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .fetch_optional(p)
            .await
            .during("look up a reserved media ID")?
        });
        Ok(found.is_some())
    }

    async fn reserved_media_ids(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, String>, DbError> {
        let rows: Vec<(String, String)> = self
            .rows_of_media(
                "media_id, reason FROM reserved_media",
                origin,
                media_ids,
                "look up reserved media IDs",
            )
            .await?;
        Ok(rows.into_iter().collect())
    }
}

impl Repository {
    /// One try at [`Purge::purge_batch`].
    async fn purge_batch_once(
        &self,
        batch: &[PurgeCandidate],
        ours: &[ServerName],
        acknowledged: &[i64],
    ) -> Result<PurgedBatch, DbError> {
        let ts = now_ms();
        let keys: Vec<MediaKey> = batch.iter().map(|c| c.key.clone()).collect();
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            dequeue_in!(&mut *tx, self.dialect, acknowledged)?;
            let deleted = delete_media_in!(&mut *tx, self.dialect, &keys, ts, Some(ts))?;
            let purged = batch.iter().filter(|c| !deleted.not_found.contains(&c.key));
            let blocked: BTreeSet<&str> = purged
                .clone()
                .filter(|c| c.quarantined)
                .map(|c| c.sha256.as_str())
                .collect();
            let reserved: BTreeSet<&MediaKey> = purged
                .filter(|c| ours.contains(&c.key.origin))
                .map(|c| &c.key)
                .collect();
            let blocked: Vec<&str> = blocked.into_iter().collect();
            for chunk in blocked.chunks(KEYS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO blocked_hashes (sha256, reason, blocked_ts) VALUES {} \
                     ON CONFLICT (sha256) DO NOTHING",
                    values_list(self.dialect, chunk.len(), 3)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                for sha256 in chunk {
                    query = query.bind(*sha256).bind(BLOCKED_BY_PURGE).bind(ts);
                }
                query
                    .execute(&mut *tx)
                    .await
                    .during("block the bytes of purged quarantined media")?;
            }
            let reserved: Vec<&MediaKey> = reserved.into_iter().collect();
            for chunk in reserved.chunks(KEYS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO reserved_media (origin, media_id, reason, reserved_ts) \
                     VALUES {} ON CONFLICT (origin, media_id) DO NOTHING",
                    values_list(self.dialect, chunk.len(), 4)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                for key in chunk {
                    query = query
                        .bind(key.origin.as_str())
                        .bind(key.media_id.as_str())
                        .bind(RESERVED_BY_PURGE)
                        .bind(ts);
                }
                query
                    .execute(&mut *tx)
                    .await
                    .during("reserve purged media IDs")?;
            }
            let reserved = reserved.len() as u64;
            tx.commit().await.during("commit a purge")?;
            Ok(PurgedBatch {
                tally: PurgeTally {
                    media: deleted.media.len() as u64,
                    thumbnails: deleted.thumbnails,
                    blobs_freed: deleted.enqueued.len() as u64,
                    bytes_freed: deleted.bytes_freed,
                    reserved,
                },
                claimed: deleted.enqueued,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Pool;

    #[tokio::test]
    async fn every_page_of_a_purge_starts_where_the_last_one_ended_in_an_index() {
        let repo = crate::connect("sqlite::memory:").await.unwrap();
        let Pool::Sqlite(pool) = &repo.pool else {
            panic!("an in-memory repository is SQLite");
        };
        let key = |origin: &str, media_id: &str| MediaKey {
            origin: origin.parse().unwrap(),
            media_id: media_id.parse().unwrap(),
        };
        let ours: Vec<ServerName> = vec!["example.org".parse().unwrap()];
        for selection in [
            PurgeSelection::Remote {
                spare: ours.clone(),
                before: 1,
            },
            PurgeSelection::Quarantined,
            PurgeSelection::User {
                user: "@alice:example.org".parse().unwrap(),
                before: Some(1),
            },
            PurgeSelection::Server {
                origin: "example.org".parse().unwrap(),
                before: None,
            },
            PurgeSelection::Room {
                room: "!room:example.org".parse().unwrap(),
                before: Some(1),
            },
            PurgeSelection::Unaccessed {
                since: 1,
                spare: Vec::new(),
            },
        ] {
            let s = page_statement(
                Dialect::Sqlite,
                &selection,
                Some(&key("example.org", "abc")),
                10,
            );
            let plan: Vec<(i64, i64, i64, String)> = bind_values!(
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "EXPLAIN QUERY PLAN {}",
                    s.text
                ))),
                &s.values
            )
            .fetch_all(pool)
            .await
            .unwrap();
            crate::repo::sql::assert_reads_a_key_range(&plan, &format!("{selection:?}"));
        }
    }
}
