//! Synapse's media rows in the order a [walk](crate::walk) finds their files: one
//! streamed, sorted query per kind of row, so a check compares the two side by side
//! without holding either in memory.
//!
//! The order is the byte order of the keys: SQLite's default `BINARY` collation, and
//! `COLLATE "C"` on PostgreSQL (whose default collation may sort `_` or case otherwise).

use futures::StreamExt;
use futures::stream::BoxStream;
use media_core::ids::ServerName;
use media_db::connect::{self, OpenOptions, Pool, on_pool};
use media_db::error::{DbError, QueryContext};
use media_db::{DatabaseLocation, Dialect};
use sqlx::AssertSqlSafe;

use crate::walk::{RowKey, RowSet};

/// One media row, as a check compares it with the media store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// Its key in walk order.
    pub key: RowKey,
    /// The media's `mxc://` URI, as recorded.
    pub mxc: String,
    /// The length Synapse recorded; `None` for a media never uploaded (it has no file).
    pub recorded_length: Option<u64>,
}

/// Synapse's database, read-only, for a check.
#[derive(Debug, Clone)]
pub struct RowsDb {
    pool: Pool,
    dialect: Dialect,
    server_name: ServerName,
}

/// Synapse's database at `location`, opened read-only with one connection.
pub(crate) async fn open_read_only(location: &DatabaseLocation) -> Result<Pool, DbError> {
    connect::open_pool(
        location,
        OpenOptions {
            create: false,
            read_only: true,
            max_connections: 1,
        },
    )
    .await
}

/// Opens Synapse's database at `location` read-only; local media are named with
/// `server_name`.
pub async fn open_rows_db(
    location: &DatabaseLocation,
    server_name: ServerName,
) -> Result<RowsDb, DbError> {
    let pool = open_read_only(location).await?;
    let dialect = match pool {
        Pool::Sqlite(_) => Dialect::Sqlite,
        Pool::Postgres(_) => Dialect::Postgres,
    };
    Ok(RowsDb {
        pool,
        dialect,
        server_name,
    })
}

/// A row as the query returns it: origin, file key, media ID, recorded length.
type RawRow = (String, String, String, Option<i64>);

impl RowsDb {
    /// Closes the connection.
    pub async fn close(&self) {
        on_pool!(&self.pool, |p| p.close().await)
    }

    /// The rows of `set`, sorted by key (see the module documentation).
    pub fn rows(&self, set: RowSet) -> BoxStream<'_, Result<StoredRow, DbError>> {
        let collate = match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " COLLATE \"C\"",
        };
        let sql = match set {
            RowSet::Uploads | RowSet::UrlPreviews => format!(
                "SELECT '', media_id, media_id, CAST(media_length AS BIGINT) \
                 FROM local_media_repository WHERE url_cache IS {} NULL \
                 ORDER BY media_id{collate}",
                if set == RowSet::Uploads { "" } else { "NOT" }
            ),
            RowSet::Remote => format!(
                "SELECT media_origin, filesystem_id, media_id, CAST(media_length AS BIGINT) \
                 FROM remote_media_cache WHERE filesystem_id IS NOT NULL \
                 ORDER BY media_origin{collate}, filesystem_id{collate}"
            ),
        };
        let raw: BoxStream<'_, Result<RawRow, sqlx::Error>> = on_pool!(&self.pool, |p| {
            sqlx::query_as::<_, RawRow>(AssertSqlSafe(sql))
                .fetch(p)
                .boxed()
        });
        let server_name = self.server_name.as_str();
        raw.map(move |row| {
            let (origin, key, media_id, length) = row.during("read Synapse's media rows")?;
            let shown_origin = if origin.is_empty() {
                server_name
            } else {
                origin.as_str()
            };
            Ok(StoredRow {
                mxc: format!("mxc://{shown_origin}/{media_id}"),
                key: (origin, key),
                recorded_length: length.map(|n| n.max(0) as u64),
            })
        })
        .boxed()
    }
}
