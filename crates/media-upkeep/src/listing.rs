//! Media rows as an operator looks at them: a user's uploads (Synapse's "list media
//! uploaded by a user"), a room's media (its "list media in a room"), or one media with
//! its thumbnails ("query media").
//!
//! A listing holds the rows it lists: its size is the answer's size (a user's uploads,
//! a room's media), read page by page.

use std::fmt;

use media_core::ids::{MxcUri, RoomId, ServerName, UserId};
use media_core::moment::Moment;
use media_core::run::{Failures, Reason, Route, RunMode};
use media_db::DatabaseLocation;
use media_db::connect::{Pool, on_pool};
use media_db::error::{DbError, QueryContext};
use media_synapse::events::room_media_page;
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::error::UpkeepError;
use crate::rows::open_read_only;
use crate::server::local_server_name;

/// Rows read per query.
const PAGE: usize = 500;

/// What to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// A local user's uploads, oldest first.
    User(UserId),
    /// The media a room's events point at, newest event first.
    Room(RoomId),
    /// One media, with its thumbnails.
    Show(MxcUri),
}

/// A listing to make.
#[derive(Debug, Clone)]
pub struct ListOptions {
    /// Synapse's database.
    pub synapse_db: DatabaseLocation,
    /// The homeserver's name; derived from its users (and checked) when `None`.
    pub server_name: Option<ServerName>,
    /// What to list.
    pub listing: Listing,
}

/// One media row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MediaRow {
    /// `mxc://origin/media_id`.
    pub mxc: String,
    /// Its MIME type.
    pub media_type: Option<String>,
    /// Its length; `None` when never uploaded.
    pub media_length: Option<u64>,
    /// The file name it was uploaded with.
    pub upload_name: Option<String>,
    /// When it was uploaded or cached (Unix milliseconds).
    pub created_ts: Option<i64>,
    /// When it was last downloaded (Unix milliseconds).
    pub last_access_ts: Option<i64>,
    /// Its uploader (local media).
    pub user_id: Option<String>,
    /// Who quarantined it.
    pub quarantined_by: Option<String>,
    /// Whether it is protected from quarantine (local media).
    pub protected: bool,
    /// Its content hash, when recorded.
    pub sha256: Option<String>,
    /// Whether it is a URL-preview media.
    pub url_preview: bool,
}

/// One thumbnail row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThumbnailRow {
    /// Width.
    pub width: i64,
    /// Height.
    pub height: i64,
    /// MIME type.
    pub content_type: String,
    /// `crop` or `scale`.
    pub method: String,
    /// Length, when recorded.
    pub length: Option<i64>,
}

/// Why a media named could not be listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFault {
    /// No row has this MXC (a room may point at media this server never fetched).
    NotFound,
}

impl Reason for ListFault {
    fn code(self) -> &'static str {
        "not_found"
    }
}

/// A listing's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MediaListing {
    /// The Synapse database (password hidden).
    pub route: Route,
    /// What was listed, in words.
    pub listing: String,
    /// The media rows.
    pub media: Vec<MediaRow>,
    /// The thumbnails of the media shown (`media show` only).
    pub thumbnails: Vec<ThumbnailRow>,
    /// MXCs named (by a room, or given) that have no row.
    pub failures: Failures<ListFault>,
}

impl media_core::run::Report for MediaListing {
    fn mode(&self) -> RunMode {
        RunMode::DryRun
    }

    fn has_failures(&self) -> bool {
        self.failures.any()
    }
}

fn when(ts: Option<i64>) -> String {
    ts.map_or_else(|| "-".to_owned(), |ts| Moment::from_unix_ms(ts).to_string())
}

impl fmt::Display for MediaListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "synapse_media: {}: {}", self.route.from, self.listing)?;
        writeln!(
            f,
            "{:<60} {:<24} {:>10} {:<24} {:<24} {:<11} name",
            "mxc", "type", "bytes", "created", "last access", "state"
        )?;
        for row in &self.media {
            let state = match (&row.quarantined_by, row.protected) {
                (Some(_), _) => "quarantined",
                (None, true) => "protected",
                (None, false) => "-",
            };
            writeln!(
                f,
                "{:<60} {:<24} {:>10} {:<24} {:<24} {:<11} {}",
                row.mxc,
                row.media_type.as_deref().unwrap_or("-"),
                row.media_length
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                when(row.created_ts),
                when(row.last_access_ts),
                state,
                row.upload_name.as_deref().unwrap_or("-"),
            )?;
        }
        for t in &self.thumbnails {
            writeln!(
                f,
                "  thumbnail {}x{} {} {} ({} bytes)",
                t.width,
                t.height,
                t.content_type,
                t.method,
                t.length.map_or_else(|| "?".to_owned(), |n| n.to_string())
            )?;
        }
        writeln!(f, "{} media", self.media.len())?;
        if self.failures.any() {
            writeln!(f, "not found: {}", self.failures.count())?;
            self.failures.write_lines(f)?;
        }
        Ok(())
    }
}

/// The columns of a local row, in [`LocalRaw`] order.
const LOCAL_COLUMNS: &str = "media_id, media_type, CAST(media_length AS BIGINT), upload_name, \
     created_ts, last_access_ts, user_id, quarantined_by, \
     CAST(CASE WHEN COALESCE(safe_from_quarantine, FALSE) THEN 1 ELSE 0 END AS BIGINT), \
     sha256, CAST(CASE WHEN url_cache IS NULL THEN 0 ELSE 1 END AS BIGINT)";
type LocalRaw = (
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    i64,
);
/// The columns of a remote row, in [`RemoteRaw`] order.
const REMOTE_COLUMNS: &str = "media_origin, media_id, media_type, CAST(media_length AS BIGINT), \
     upload_name, created_ts, last_access_ts, quarantined_by, sha256";
type RemoteRaw = (
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

fn local_row(server: &ServerName, raw: LocalRaw) -> MediaRow {
    let (id, media_type, length, name, created, accessed, user, quarantined, safe, sha, url) = raw;
    MediaRow {
        mxc: format!("mxc://{server}/{id}"),
        media_type,
        media_length: length.map(|n| n.max(0) as u64),
        upload_name: name,
        created_ts: created,
        last_access_ts: accessed,
        user_id: user,
        quarantined_by: quarantined,
        protected: safe != 0,
        sha256: sha,
        url_preview: url != 0,
    }
}

fn remote_row(raw: RemoteRaw) -> MediaRow {
    let (origin, id, media_type, length, name, created, accessed, quarantined, sha) = raw;
    MediaRow {
        mxc: format!("mxc://{origin}/{id}"),
        media_type,
        media_length: length.map(|n| n.max(0) as u64),
        upload_name: name,
        created_ts: created,
        last_access_ts: accessed,
        quarantined_by: quarantined,
        sha256: sha,
        ..MediaRow::default()
    }
}

/// Lists what `options` asks for.
pub async fn list(options: &ListOptions) -> Result<MediaListing, UpkeepError> {
    let server = local_server_name(&options.synapse_db, options.server_name.clone()).await?;
    let pool = open_read_only(&options.synapse_db).await?;
    let result = list_with(&pool, &server, options).await;
    on_pool!(&pool, |p| p.close().await);
    result.map_err(UpkeepError::from)
}

async fn list_with(
    pool: &Pool,
    server: &ServerName,
    options: &ListOptions,
) -> Result<MediaListing, DbError> {
    let mut listing = MediaListing {
        route: Route::new(&options.synapse_db, "standard output"),
        ..MediaListing::default()
    };
    match &options.listing {
        Listing::User(user) => {
            listing.listing = format!("media uploaded by {user}");
            let (mut created, mut id) = (i64::MIN, String::new());
            loop {
                let sql = format!(
                    "SELECT {LOCAL_COLUMNS} FROM local_media_repository WHERE user_id = $1 \
                     AND (COALESCE(created_ts, 0) > $2 OR (COALESCE(created_ts, 0) = $2 \
                     AND media_id > $3)) ORDER BY COALESCE(created_ts, 0), media_id LIMIT {PAGE}"
                );
                let rows: Vec<LocalRaw> = on_pool!(pool, |p| {
                    sqlx::query_as(AssertSqlSafe(sql))
                        .bind(user.as_str())
                        .bind(created)
                        .bind(&id)
                        .fetch_all(p)
                        .await
                        .during("read a user's media")?
                });
                let full = rows.len() == PAGE;
                if let Some(last) = rows.last() {
                    (created, id) = (last.4.unwrap_or(0), last.0.clone());
                }
                listing
                    .media
                    .extend(rows.into_iter().map(|raw| local_row(server, raw)));
                if !full {
                    break;
                }
            }
        }
        Listing::Room(room_id) => {
            listing.listing = format!("media of the events of {room_id}");
            let mut before = i64::MAX;
            let mut seen = std::collections::HashSet::new();
            loop {
                let (mxcs, next) = room_media_page(pool, room_id, before).await?;
                for mxc in mxcs {
                    let mxc_text = mxc.to_string();
                    if !seen.insert(mxc_text.clone()) {
                        continue;
                    }
                    match one(pool, server, &mxc).await? {
                        Some(row) => listing.media.push(row),
                        None => listing.failures.push(
                            mxc_text,
                            ListFault::NotFound,
                            "the room points at it, but no media row has it",
                        ),
                    }
                }
                match next {
                    Some(next) => before = next,
                    None => break,
                }
            }
        }
        Listing::Show(mxc) => {
            listing.listing = format!("media {mxc}");
            match one(pool, server, mxc).await? {
                Some(row) => listing.media.push(row),
                None => {
                    listing
                        .failures
                        .push(mxc.to_string(), ListFault::NotFound, "no such media");
                    return Ok(listing);
                }
            }
            let local = mxc.server() == server;
            let (table, origin) = if local {
                ("local_media_repository_thumbnails", "")
            } else {
                ("remote_media_cache_thumbnails", " AND media_origin = $2")
            };
            let sql = format!(
                "SELECT CAST(thumbnail_width AS BIGINT), CAST(thumbnail_height AS BIGINT), \
                 thumbnail_type, thumbnail_method, CAST(thumbnail_length AS BIGINT) FROM {table} \
                 WHERE media_id = $1{origin} ORDER BY thumbnail_width, thumbnail_height"
            );
            let rows: Vec<(i64, i64, String, String, Option<i64>)> = on_pool!(pool, |p| {
                let query = sqlx::query_as(AssertSqlSafe(sql)).bind(mxc.media_id().as_str());
                let query = if local {
                    query
                } else {
                    query.bind(mxc.server().as_str())
                };
                query.fetch_all(p).await.during("read thumbnails")?
            });
            listing.thumbnails = rows
                .into_iter()
                .map(
                    |(width, height, content_type, method, length)| ThumbnailRow {
                        width,
                        height,
                        content_type,
                        method,
                        length,
                    },
                )
                .collect();
        }
    }
    Ok(listing)
}

/// The row of one media, if any.
async fn one(pool: &Pool, server: &ServerName, mxc: &MxcUri) -> Result<Option<MediaRow>, DbError> {
    if mxc.server() == server {
        let sql = format!("SELECT {LOCAL_COLUMNS} FROM local_media_repository WHERE media_id = $1");
        let raw: Option<LocalRaw> = on_pool!(pool, |p| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(mxc.media_id().as_str())
                .fetch_optional(p)
                .await
                .during("read a media")?
        });
        Ok(raw.map(|raw| local_row(server, raw)))
    } else {
        let sql = format!(
            "SELECT {REMOTE_COLUMNS} FROM remote_media_cache \
             WHERE media_origin = $1 AND media_id = $2"
        );
        let raw: Option<RemoteRaw> = on_pool!(pool, |p| {
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(mxc.server().as_str())
                .bind(mxc.media_id().as_str())
                .fetch_optional(p)
                .await
                .during("read a media")?
        });
        Ok(raw.map(remote_row))
    }
}
