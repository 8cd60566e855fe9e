//! What a Synapse media store holds, grouped by uploader, room, origin or month: media,
//! bytes and thumbnails, largest first, with the bytes Synapse stores twice and the share
//! of thumbnails; optionally as a self-contained page with charts.
//!
//! **The figures are the database's**: `media_length` and `thumbnail_length` as Synapse
//! recorded them (a never-uploaded media counts 0 bytes), not the files on disk (`check`
//! compares the two).
//!
//! **Stored twice.** Synapse keeps one file per media ID, even for identical bytes. Media
//! with the same `sha256` (the column Synapse fills since 1.128, local and remote alike)
//! are one content stored several times: every copy but the first (oldest, then by
//! origin and media ID) is a duplicate, and its bytes are what a move to a deduplicating
//! repository would save. Media without a `sha256` are not grouped (their duplicates are
//! unknown); the report counts them. A group's duplicate bytes are those of its copies
//! that are duplicates.
//!
//! **By room**: a room's media are those its events with `contains_url` point at (as
//! `media list --room` and Synapse's "list media in a room" find them); a media in
//! several rooms counts in each. **By user**: local media only (remote media have no
//! uploader here).

use std::collections::HashSet;
use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;

use media_core::html::{self, Bar};
use media_core::ids::{MxcUri, ServerName};
use media_core::progress::human_size;
use media_core::run::{Route, RunMode};
use media_db::DatabaseLocation;
use media_db::connect::{Pool, on_pool};
use media_db::error::{DbError, QueryContext};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::error::UpkeepError;
use crate::rows::open_read_only;
use crate::server::local_server_name;
use media_core::ids::RoomId;
use media_synapse::events::room_media_page;

/// Media looked up per statement when summing a room's media.
const ROOM_CHUNK: usize = 200;

/// How usage is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageBy {
    /// By uploader (local media).
    User,
    /// By room (the media its events point at).
    Room,
    /// By origin server (this server for local media).
    Origin,
    /// By month of upload or caching (UTC, `YYYY-MM`).
    Month,
}

impl fmt::Display for UsageBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::User => "uploader",
            Self::Room => "room",
            Self::Origin => "origin",
            Self::Month => "month",
        })
    }
}

/// A usage report to make.
#[derive(Debug, Clone)]
pub struct UsageOptions {
    /// Synapse's database.
    pub synapse_db: DatabaseLocation,
    /// The homeserver's name; derived from its users (and checked) when `None`.
    pub server_name: Option<ServerName>,
    /// How to group.
    pub by: UsageBy,
    /// How many groups to list, largest first.
    pub limit: usize,
    /// Where to write the page with charts, if anywhere.
    pub html: Option<PathBuf>,
}

/// Media, bytes, thumbnails and duplicates of some media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// Media rows.
    pub media: u64,
    /// Their bytes (`media_length`).
    pub bytes: u64,
    /// Their thumbnail rows.
    pub thumbnails: u64,
    /// The thumbnails' bytes (`thumbnail_length`).
    pub thumbnail_bytes: u64,
    /// Media whose `sha256` an older media already has: stored twice.
    pub duplicate_media: u64,
    /// Their bytes: what a deduplicating store would not keep again.
    pub duplicate_bytes: u64,
    /// Media without a `sha256`, not grouped into duplicates.
    pub media_without_sha256: u64,
}

impl Figures {
    /// Media and thumbnail bytes together.
    pub fn total_bytes(&self) -> u64 {
        self.bytes + self.thumbnail_bytes
    }

    /// The share of thumbnails in [`Figures::total_bytes`], from 0 to 1.
    pub fn thumbnail_share(&self) -> f64 {
        match self.total_bytes() {
            0 => 0.0,
            total => self.thumbnail_bytes as f64 / total as f64,
        }
    }

    fn add(&mut self, other: &Figures) {
        self.media += other.media;
        self.bytes += other.bytes;
        self.thumbnails += other.thumbnails;
        self.thumbnail_bytes += other.thumbnail_bytes;
        self.duplicate_media += other.duplicate_media;
        self.duplicate_bytes += other.duplicate_bytes;
        self.media_without_sha256 += other.media_without_sha256;
    }
}

/// One group of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageGroup {
    /// The uploader, room, origin or month.
    pub key: String,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
    /// Its share of thumbnails in bytes, from 0 to 1.
    pub thumbnail_share: f64,
}

/// The totals of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageTotals {
    /// The figures of every media, local and remote.
    #[serde(flatten)]
    pub figures: Figures,
    /// The share of thumbnails in bytes, from 0 to 1.
    pub thumbnail_share: f64,
}

/// A usage report: the totals, then the largest groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    /// The Synapse database (password hidden) and where the report went.
    pub route: Route,
    /// How the groups are made.
    pub by: UsageBy,
    /// Every media of the store.
    pub totals: UsageTotals,
    /// How duplicates were found, in words.
    pub duplicates_found_by: String,
    /// The largest groups, by media and thumbnail bytes, largest first.
    pub groups: Vec<UsageGroup>,
    /// Groups beyond the limit, not listed.
    pub groups_not_listed: u64,
    /// The page written, if any.
    pub html: Option<PathBuf>,
}

impl media_core::run::Report for UsageReport {
    fn mode(&self) -> RunMode {
        RunMode::DryRun
    }

    fn has_failures(&self) -> bool {
        false
    }
}

impl fmt::Display for UsageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let totals = &self.totals.figures;
        writeln!(
            f,
            "synapse_media usage by {} ({})",
            self.by, self.route.from
        )?;
        writeln!(
            f,
            "  total: {} media, {} ({} bytes); {} thumbnails, {} ({} bytes, {:.1}% of all \
             bytes)",
            totals.media,
            human_size(totals.bytes),
            totals.bytes,
            totals.thumbnails,
            human_size(totals.thumbnail_bytes),
            totals.thumbnail_bytes,
            100.0 * self.totals.thumbnail_share
        )?;
        writeln!(
            f,
            "  stored twice: {} media, {} ({} bytes); {} media without sha256 not compared",
            totals.duplicate_media,
            human_size(totals.duplicate_bytes),
            totals.duplicate_bytes,
            totals.media_without_sha256
        )?;
        writeln!(
            f,
            "  {:<40} {:>8} {:>12} {:>8} {:>12} {:>6} {:>12}",
            self.by.to_string(),
            "media",
            "bytes",
            "thumbs",
            "thumb bytes",
            "thumb%",
            "twice"
        )?;
        for group in &self.groups {
            let g = &group.figures;
            writeln!(
                f,
                "  {:<40} {:>8} {:>12} {:>8} {:>12} {:>5.1}% {:>12}",
                group.key,
                g.media,
                human_size(g.bytes),
                g.thumbnails,
                human_size(g.thumbnail_bytes),
                100.0 * group.thumbnail_share,
                human_size(g.duplicate_bytes)
            )?;
        }
        if self.groups_not_listed > 0 {
            writeln!(f, "  … and {} more (raise --limit)", self.groups_not_listed)?;
        }
        if let Some(page) = &self.html {
            writeln!(f, "  page: {}", page.display())?;
        }
        Ok(())
    }
}

/// Makes a usage report (and its page, with [`UsageOptions::html`]).
pub async fn usage(options: &UsageOptions) -> Result<UsageReport, UpkeepError> {
    let server = local_server_name(&options.synapse_db, options.server_name.clone()).await?;
    let pool = open_read_only(&options.synapse_db).await?;
    let result = usage_with(&pool, &server, options).await;
    on_pool!(&pool, |p| p.close().await);
    let report = result?;
    if let Some(path) = &options.html {
        tokio::fs::write(path, render_page(&report))
            .await
            .map_err(|source| UpkeepError::Io {
                path: path.clone(),
                source,
            })?;
    }
    Ok(report)
}

async fn usage_with(
    pool: &Pool,
    server: &ServerName,
    options: &UsageOptions,
) -> Result<UsageReport, DbError> {
    let figures = FiguresQuery::new(pool, server).await?;
    let totals = figures.run(None, None).await?;
    let totals = totals
        .into_iter()
        .next()
        .map(|(_, f)| f)
        .unwrap_or_default();
    let mut groups = match options.by {
        UsageBy::Room => by_room(pool, &figures).await?,
        UsageBy::User => {
            figures
                .grouped("d.user_id", "d.user_id IS NOT NULL")
                .await?
        }
        UsageBy::Origin => figures.grouped("d.origin", "1 = 1").await?,
        UsageBy::Month => figures.grouped(figures.month_expression(), "1 = 1").await?,
    };
    let total_groups = groups.len();
    groups.sort_by(|(ka, a), (kb, b)| b.total_bytes().cmp(&a.total_bytes()).then(ka.cmp(kb)));
    groups.truncate(options.limit);
    let listed = groups.len();
    Ok(UsageReport {
        route: Route::new(
            &options.synapse_db,
            options
                .html
                .as_ref()
                .map_or("standard output".to_owned(), |p| p.display().to_string()),
        ),
        by: options.by,
        totals: UsageTotals {
            thumbnail_share: totals.thumbnail_share(),
            figures: totals,
        },
        duplicates_found_by: if figures.has_sha256 {
            "equal sha256 columns (local and remote media); media without one are not \
             compared"
                .to_owned()
        } else {
            "not found: this Synapse (before 1.128) records no sha256".to_owned()
        },
        groups: groups
            .into_iter()
            .map(|(key, figures)| UsageGroup {
                key,
                thumbnail_share: figures.thumbnail_share(),
                figures,
            })
            .collect(),
        groups_not_listed: (total_groups - listed) as u64,
        html: options.html.clone(),
    })
}

/// The groups of `--by room`: every room with events with URLs, and its media's figures.
async fn by_room(
    pool: &Pool,
    figures: &FiguresQuery<'_>,
) -> Result<Vec<(String, Figures)>, DbError> {
    let rooms: Vec<String> = on_pool!(pool, |p| {
        sqlx::query_scalar(
            "SELECT DISTINCT room_id FROM events WHERE contains_url = TRUE \
             AND outlier = FALSE ORDER BY room_id",
        )
        .fetch_all(p)
        .await
        .during("list the rooms with media")?
    });
    let mut groups = Vec::with_capacity(rooms.len());
    for room_id in rooms {
        let Ok(room) = room_id.parse::<RoomId>() else {
            continue;
        };
        let mut media: HashSet<MxcUri> = HashSet::new();
        let mut before = i64::MAX;
        loop {
            let (mxcs, next) = room_media_page(pool, &room, before).await?;
            media.extend(mxcs);
            match next {
                Some(next) => before = next,
                None => break,
            }
        }
        let media: Vec<MxcUri> = media.into_iter().collect();
        let mut sum = Figures::default();
        for chunk in media.chunks(ROOM_CHUNK) {
            let pairs: Vec<String> = (0..chunk.len())
                .map(|i| {
                    format!(
                        "(d.origin = ${} AND d.media_id = ${})",
                        2 * i + 2,
                        2 * i + 3
                    )
                })
                .collect();
            let filter = format!("({})", pairs.join(" OR "));
            let binds = chunk
                .iter()
                .flat_map(|mxc| [mxc.server().to_string(), mxc.media_id().to_string()])
                .collect();
            for (_, figures) in figures.run(None, Some((&filter, binds))).await? {
                sum.add(&figures);
            }
        }
        groups.push((room.to_string(), sum));
    }
    Ok(groups)
}

/// The statement that sums media figures over every media, local and remote.
struct FiguresQuery<'a> {
    pool: &'a Pool,
    server: &'a ServerName,
    has_sha256: bool,
}

impl<'a> FiguresQuery<'a> {
    async fn new(pool: &'a Pool, server: &'a ServerName) -> Result<Self, DbError> {
        let probe: Result<Vec<Option<String>>, sqlx::Error> = on_pool!(pool, |p| {
            sqlx::query_scalar(
                "SELECT l.sha256 FROM local_media_repository AS l, remote_media_cache AS r \
                 WHERE 1 = 0",
            )
            .fetch_all(p)
            .await
        });
        Ok(Self {
            pool,
            server,
            has_sha256: probe.is_ok(),
        })
    }

    /// The month of a media's `created_ts`, `YYYY-MM` in UTC, in this dialect.
    fn month_expression(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "strftime('%Y-%m', d.created_ts / 1000, 'unixepoch')",
            Pool::Postgres(_) => {
                "to_char(to_timestamp(d.created_ts / 1000) AT TIME ZONE 'UTC', 'YYYY-MM')"
            }
        }
    }

    /// The figures of every group of `key`, of the media `filter` keeps.
    async fn grouped(&self, key: &str, filter: &str) -> Result<Vec<(String, Figures)>, DbError> {
        self.run(Some(key), Some((filter, Vec::new()))).await
    }

    /// The figures grouped by `key` (one group of every media without one), of the media
    /// `filter` keeps (with its bound values from `$2`; `$1` is the server name).
    async fn run(
        &self,
        key: Option<&str>,
        filter: Option<(&str, Vec<String>)>,
    ) -> Result<Vec<(String, Figures)>, DbError> {
        let sha = |table: &str| match self.has_sha256 {
            true => format!("{table}.sha256"),
            false => "CAST(NULL AS TEXT)".to_owned(),
        };
        let (filter, binds) = filter.unwrap_or(("1 = 1", Vec::new()));
        let (key_column, group_by) = match key {
            Some(key) => (
                format!("COALESCE({key}, '(unknown)')"),
                "GROUP BY 1".to_owned(),
            ),
            None => ("''".to_owned(), String::new()),
        };
        let sql = format!(
            "WITH m AS (\
               SELECT CAST($1 AS TEXT) AS origin, l.media_id, l.user_id, l.created_ts, \
                 CAST(COALESCE(l.media_length, 0) AS BIGINT) AS bytes, {local_sha} AS sha256, \
                 (SELECT COUNT(*) FROM local_media_repository_thumbnails AS t \
                   WHERE t.media_id = l.media_id) AS thumbnails, \
                 (SELECT CAST(COALESCE(SUM(t.thumbnail_length), 0) AS BIGINT) \
                   FROM local_media_repository_thumbnails AS t \
                   WHERE t.media_id = l.media_id) AS thumbnail_bytes \
               FROM local_media_repository AS l \
               UNION ALL \
               SELECT r.media_origin, r.media_id, NULL, r.created_ts, \
                 CAST(COALESCE(r.media_length, 0) AS BIGINT), {remote_sha}, \
                 (SELECT COUNT(*) FROM remote_media_cache_thumbnails AS t \
                   WHERE t.media_origin = r.media_origin AND t.media_id = r.media_id), \
                 (SELECT CAST(COALESCE(SUM(t.thumbnail_length), 0) AS BIGINT) \
                   FROM remote_media_cache_thumbnails AS t \
                   WHERE t.media_origin = r.media_origin AND t.media_id = r.media_id) \
               FROM remote_media_cache AS r\
             ), d AS (\
               SELECT m.*, CASE WHEN m.sha256 IS NOT NULL AND ROW_NUMBER() OVER (\
                 PARTITION BY m.sha256 ORDER BY m.created_ts, m.origin, m.media_id) > 1 \
                 THEN 1 ELSE 0 END AS duplicate \
               FROM m\
             ) \
             SELECT {key_column} AS grp, COUNT(*) AS media, \
               CAST(COALESCE(SUM(d.bytes), 0) AS BIGINT), \
               CAST(COALESCE(SUM(d.thumbnails), 0) AS BIGINT), \
               CAST(COALESCE(SUM(d.thumbnail_bytes), 0) AS BIGINT), \
               CAST(COALESCE(SUM(d.duplicate), 0) AS BIGINT), \
               CAST(COALESCE(SUM(d.duplicate * d.bytes), 0) AS BIGINT), \
               CAST(COALESCE(SUM(CASE WHEN d.sha256 IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM d WHERE {filter} {group_by}",
            local_sha = sha("l"),
            remote_sha = sha("r"),
        );
        type Row = (String, i64, i64, i64, i64, i64, i64, i64);
        let rows: Vec<Row> = on_pool!(self.pool, |p| {
            let mut query = sqlx::query_as(AssertSqlSafe(sql)).bind(self.server.as_str());
            for bound in &binds {
                query = query.bind(bound.clone());
            }
            query.fetch_all(p).await.during("sum the media figures")?
        });
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(rows
            .into_iter()
            .map(
                |(key, media, bytes, thumbnails, thumbnail_bytes, dup, dup_bytes, unhashed)| {
                    (
                        key,
                        Figures {
                            media: count(media),
                            bytes: count(bytes),
                            thumbnails: count(thumbnails),
                            thumbnail_bytes: count(thumbnail_bytes),
                            duplicate_media: count(dup),
                            duplicate_bytes: count(dup_bytes),
                            media_without_sha256: count(unhashed),
                        },
                    )
                },
            )
            .collect())
    }
}

/// The usage page: the totals, then charts of the groups' bytes, thumbnail bytes and
/// bytes stored twice.
pub fn render_page(report: &UsageReport) -> String {
    let title = format!("Synapse media usage by {}", report.by);
    let mut page = html::page_start(&title, html::CHART_STYLE);
    let totals = &report.totals.figures;
    let _ = writeln!(
        page,
        "<h1>{}</h1>\n<p>{} media, {} bytes ({}); {} thumbnails, {} bytes ({}), {:.1}% of \
         all bytes. Stored twice: {} media, {} bytes ({}). Media without sha256, not \
         compared: {}.</p>",
        html::escape(&title),
        totals.media,
        totals.bytes,
        human_size(totals.bytes),
        totals.thumbnails,
        totals.thumbnail_bytes,
        human_size(totals.thumbnail_bytes),
        100.0 * report.totals.thumbnail_share,
        totals.duplicate_media,
        totals.duplicate_bytes,
        human_size(totals.duplicate_bytes),
        totals.media_without_sha256,
    );
    let bars = |value: fn(&Figures) -> u64, what: &str| -> Vec<Bar> {
        report
            .groups
            .iter()
            .map(|group| Bar {
                label: group.key.clone(),
                value: value(&group.figures),
                title: format!(
                    "{}: {} bytes {what} ({} media, {} thumbnails)",
                    group.key,
                    value(&group.figures),
                    group.figures.media,
                    group.figures.thumbnails
                ),
            })
            .collect()
    };
    let by = report.by;
    html::bar_chart(
        &mut page,
        &format!("Media bytes by {by}"),
        "bar",
        &bars(|f| f.bytes, "of media"),
    );
    html::bar_chart(
        &mut page,
        &format!("Thumbnail bytes by {by}"),
        "thumbnail",
        &bars(|f| f.thumbnail_bytes, "of thumbnails"),
    );
    html::bar_chart(
        &mut page,
        &format!("Bytes stored twice, by {by}"),
        "saved",
        &bars(|f| f.duplicate_bytes, "stored twice"),
    );
    page.push_str(html::PAGE_END);
    page
}
