//! The quarantine change stream: every quarantine and unquarantine of a media, in the
//! order Synapse (or [`quarantine`](crate::quarantine())) recorded it in
//! `quarantined_media_changes` (Synapse 1.152 and later).
//!
//! Read as Synapse's `GET /_synapse/admin/v1/media/quarantine_changes?from=` serves it:
//! the changes after stream position `from`, oldest first, a local media's empty origin
//! shown as the server's name, and a `next_batch` to continue from (the last change's
//! position, else the newest position recorded).

use std::fmt;

use media_core::ids::ServerName;
use media_core::run::{Route, RunMode};
use media_db::DatabaseLocation;
use media_db::connect::{Pool, on_pool};
use media_db::error::QueryContext;
use serde::Serialize;

use crate::error::UpkeepError;
use crate::rows::open_read_only;
use crate::server::local_server_name;

/// Which changes to read.
#[derive(Debug, Clone)]
pub struct ChangesOptions {
    /// Synapse's database.
    pub synapse_db: DatabaseLocation,
    /// The homeserver's name; derived from its users (and checked) when `None`.
    pub server_name: Option<ServerName>,
    /// Changes after this stream position (`0`: from the first).
    pub from: i64,
    /// At most this many changes.
    pub limit: u32,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineChange {
    /// Its position in the stream.
    pub stream_id: i64,
    /// The media's origin (the server's name for local media).
    pub origin: String,
    /// The media's ID.
    pub media_id: String,
    /// Quarantined (`true`) or taken out of quarantine (`false`).
    pub quarantined: bool,
}

/// A page of the quarantine change stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QuarantineChanges {
    /// The Synapse database (password hidden).
    pub route: Route,
    /// The position the changes follow.
    pub from: i64,
    /// Where the next page starts (give it as `--from`).
    pub next_batch: i64,
    /// Whether changes follow this page.
    pub more: bool,
    /// The changes, oldest first.
    pub changes: Vec<QuarantineChange>,
}

impl media_core::run::Report for QuarantineChanges {
    fn mode(&self) -> RunMode {
        RunMode::DryRun
    }

    fn has_failures(&self) -> bool {
        false
    }
}

impl fmt::Display for QuarantineChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "synapse_media: {}: quarantine changes after {}",
            self.route.from, self.from
        )?;
        writeln!(f, "{:>10} {:<13} mxc", "stream_id", "change")?;
        for change in &self.changes {
            writeln!(
                f,
                "{:>10} {:<13} mxc://{}/{}",
                change.stream_id,
                if change.quarantined {
                    "quarantined"
                } else {
                    "unquarantined"
                },
                change.origin,
                change.media_id
            )?;
        }
        write!(
            f,
            "{} changes; next batch: {}",
            self.changes.len(),
            self.next_batch
        )?;
        if self.more {
            write!(f, " (more follow: --from {})", self.next_batch)?;
        }
        writeln!(f)
    }
}

/// Reads the page of the quarantine change stream `options` asks for. A database
/// without the stream (Synapse before 1.152) is an [`UpkeepError::Unsupported`].
pub async fn quarantine_changes(
    options: &ChangesOptions,
) -> Result<QuarantineChanges, UpkeepError> {
    let server = local_server_name(&options.synapse_db, options.server_name.clone()).await?;
    let pool = open_read_only(&options.synapse_db).await?;
    let result = read_page(&pool, &server, options).await;
    on_pool!(&pool, |p| p.close().await);
    result
}

async fn read_page(
    pool: &Pool,
    server: &ServerName,
    options: &ChangesOptions,
) -> Result<QuarantineChanges, UpkeepError> {
    if !pool
        .has_table(
            "quarantined_media_changes",
            "look for the quarantine change stream",
        )
        .await?
    {
        return Err(UpkeepError::Unsupported(
            "this Synapse database keeps no quarantine change stream (no \
             quarantined_media_changes table: Synapse before 1.152)"
                .to_owned(),
        ));
    }
    // One row past the page tells whether more follow.
    let rows: Vec<(i64, Option<String>, String, bool)> = on_pool!(pool, |p| {
        sqlx::query_as(
            "SELECT CAST(stream_id AS BIGINT), origin, media_id, quarantined \
             FROM quarantined_media_changes WHERE stream_id > $1 ORDER BY stream_id LIMIT $2",
        )
        .bind(options.from)
        .bind(i64::from(options.limit) + 1)
        .fetch_all(p)
        .await
        .during("read the quarantine change stream")?
    });
    let more = rows.len() > options.limit as usize;
    let changes: Vec<QuarantineChange> = rows
        .into_iter()
        .take(options.limit as usize)
        .map(
            |(stream_id, origin, media_id, quarantined)| QuarantineChange {
                stream_id,
                origin: origin.unwrap_or_else(|| server.to_string()),
                media_id,
                quarantined,
            },
        )
        .collect();
    // After the last change, or, past the end, the newest position (read only then).
    let next_batch = match changes.last() {
        Some(last) => last.stream_id,
        None => {
            let newest: Option<i64> = on_pool!(pool, |p| {
                sqlx::query_scalar(
                    "SELECT CAST(MAX(stream_id) AS BIGINT) FROM quarantined_media_changes",
                )
                .fetch_one(p)
                .await
                .during("read the quarantine change stream")?
            });
            newest.unwrap_or(0).max(options.from)
        }
    };
    Ok(QuarantineChanges {
        route: Route::new(&options.synapse_db, "standard output"),
        from: options.from,
        next_batch,
        more,
        changes,
    })
}
