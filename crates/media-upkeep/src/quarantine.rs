//! Quarantine and protection of media, directly in Synapse's database, with Synapse's
//! own semantics (its `quarantine_media_by_id`, `quarantine_media_ids_by_user`,
//! `quarantine_media_ids_in_room` and `mark_local_media_as_safe`):
//!
//! * quarantining a media quarantines **every** media, local and remote, with the same
//!   `sha256`; a media without a hash is quarantined alone;
//! * protected local media (`safe_from_quarantine`) are never quarantined, and a
//!   protected media named directly does not lend its hash; unquarantining ignores
//!   protection;
//! * a user's media are their local uploads not yet quarantined; a room's media are
//!   the `content.url` and `content.info.thumbnail_url` MXCs of its events with
//!   `contains_url` (outliers left out);
//! * protection applies to local media only;
//! * each media whose state changes is recorded in `quarantined_media_changes` (the
//!   stream Synapse's quarantine-changes admin API serves) when the table exists.
//!
//! One deliberate difference: a media already quarantined keeps the `quarantined_by`
//! of whoever quarantined it first (Synapse overwrites it) and is reported as
//! `already`. Synapse reads the quarantine state from the database on every download,
//! but numbers the changes stream in memory on SQLite, and its workers learn of changes
//! through replication only when Synapse itself writes them: stop Synapse first.
//!
//! Work goes in batches of [`BATCH`] named media, one transaction each.
//!
//! **Through Synapse's admin API** ([`Through::AdminApi`]) the same plan is read
//! (read-only), then Synapse changes the media: one `media/(un)quarantine/<server>/<id>`
//! or `media/(un)protect/<id>` per named media, or `user/<id>/media/quarantine` and
//! `room/<id>/media/quarantine` for a user's or a room's media. Synapse records the
//! token's admin as `quarantined_by`, so `by` must be that admin. Afterwards the plan is
//! made again: every media it would still change is a listed failure, and so is any
//! change beyond the plan. Synapse has no endpoint that releases a user's or a room's
//! media at once: those are refused (name the media, or apply directly).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use media_core::ids::{MxcUri, RoomId, ServerName, UserId};
use media_core::run::{Classify, ErrorClass, Failures, Reason, Route, RunMode};
use media_db::connect::{self, OpenOptions, Pool, on_pool};
use media_db::error::{DbError, QueryContext};
use media_db::{DatabaseLocation, Dialect};
use serde::{Serialize, Serializer};
use sqlx::AssertSqlSafe;

use crate::admin_api::{AdminApi, ApiError, Protected, Quarantined, Through};
use crate::error::UpkeepError;

/// Named media handled per transaction.
pub const BATCH: usize = 500;

/// Which media a change is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// These media.
    Media(Vec<MxcUri>),
    /// A local user's uploads.
    User(UserId),
    /// The media a room's events point at.
    Room(RoomId),
}

/// What happens to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Quarantine them (and every media with the same hash), recording `by`.
    Quarantine {
        /// The admin recorded in `quarantined_by`.
        by: UserId,
    },
    /// Take them (and every media with the same hash) out of quarantine.
    Unquarantine,
    /// Protect local media from quarantine.
    Protect,
    /// Remove that protection.
    Unprotect,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quarantine { by } => write!(f, "quarantine (by {by})"),
            Self::Unquarantine => f.write_str("unquarantine"),
            Self::Protect => f.write_str("protect"),
            Self::Unprotect => f.write_str("unprotect"),
        }
    }
}

/// A quarantine or protection run.
#[derive(Debug, Clone)]
pub struct QuarantineOptions {
    /// Synapse's database.
    pub synapse_db: DatabaseLocation,
    /// The homeserver's name; derived from its users (and checked) when `None`.
    pub server_name: Option<ServerName>,
    /// Which media.
    pub target: Target,
    /// What happens to them.
    pub change: Change,
    /// Dry run or real run.
    pub mode: RunMode,
    /// Who changes the rows: this toolkit, or Synapse through its admin API.
    pub through: Through,
}

/// Why a named media could not be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineFault {
    /// No media row has this MXC.
    NotFound,
    /// Protection applies to local media only (as in Synapse).
    NotLocal,
    /// Synapse's admin API refused the change (its answer is the detail).
    RefusedBySynapse,
    /// The plan would still change this media after Synapse was asked to.
    NotChangedBySynapse,
    /// Synapse changed more media than the plan named (counted, not named).
    ChangedOutsidePlan,
}

impl Reason for QuarantineFault {
    fn code(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::NotLocal => "not_local",
            Self::RefusedBySynapse => "refused_by_synapse",
            Self::NotChangedBySynapse => "not_changed_by_synapse",
            Self::ChangedOutsidePlan => "changed_outside_plan",
        }
    }
}

/// A count with the first [`Tally::LISTED`] MXCs counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// How many.
    pub count: u64,
    /// The first of them.
    pub listed: Vec<String>,
}

impl Tally {
    /// How many are listed by name.
    pub const LISTED: usize = 1_000;

    fn add(&mut self, mxc: String) {
        self.count += 1;
        if self.listed.len() < Self::LISTED {
            self.listed.push(mxc);
        }
    }
}

/// What a quarantine or protection run changed (in a dry run: would change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QuarantineReport {
    /// A dry run changed nothing (JSON `"dry_run": true`).
    #[serde(rename = "dry_run", serialize_with = "is_dry_run")]
    pub mode: RunMode,
    /// The Synapse database (password hidden).
    pub route: Route,
    /// The change, in words.
    pub change: String,
    /// Media the target named (MXCs given, a user's uploads, a room's MXCs).
    pub named: u64,
    /// Media whose state changed.
    pub changed: Tally,
    /// Of those, media not named but sharing a named media's hash.
    pub changed_by_hash: u64,
    /// Media already in that state.
    pub already: Tally,
    /// Protected media left out of a quarantine.
    pub protected: Tally,
    /// A change through Synapse's admin API: what Synapse was asked and what was
    /// verified (`null` for a direct change).
    pub synapse_api: Option<ApiChangeReport>,
    /// Named media that could not be handled (no row; not local; not changed by
    /// Synapse).
    pub failures: Failures<QuarantineFault>,
}

/// A change applied by Synapse through its admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApiChangeReport {
    /// The admin API's base URL.
    pub api: String,
    /// Media the plan would change (`changed` above).
    pub planned: u64,
    /// Admin requests Synapse accepted.
    pub requests: u64,
    /// What Synapse said it quarantined (a user's or a room's media); `null` where its
    /// answer has no count.
    pub reported_by_synapse: Option<u64>,
    /// Planned media in their new state afterwards.
    pub verified: u64,
}

fn is_dry_run<S: Serializer>(mode: &RunMode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(mode.is_dry_run())
}

impl media_core::run::Report for QuarantineReport {
    fn mode(&self) -> RunMode {
        self.mode
    }

    fn has_failures(&self) -> bool {
        self.failures.any()
    }
}

impl fmt::Display for QuarantineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.route.write_headline(f, "synapse_media", self.mode)?;
        writeln!(f, "  {}: {} media named", self.change, self.named)?;
        writeln!(
            f,
            "  changed: {} ({} by a shared hash), already so: {}, protected left out: {}",
            self.changed.count, self.changed_by_hash, self.already.count, self.protected.count
        )?;
        match (&self.synapse_api, self.mode) {
            (Some(api), RunMode::DryRun) => writeln!(
                f,
                "  through Synapse's admin API {}: {} planned; Synapse not called",
                api.api, api.planned
            )?,
            (Some(api), RunMode::Apply) => writeln!(
                f,
                "  through Synapse's admin API {}: {} planned, {} requests accepted, {} \
                 verified",
                api.api, api.planned, api.requests, api.verified
            )?,
            (None, _) => {}
        }
        for mxc in self
            .changed
            .listed
            .iter()
            .take(Failures::<QuarantineFault>::PRINTED)
        {
            writeln!(f, "    {mxc}")?;
        }
        if self.failures.any() {
            writeln!(f, "  failed: {} items", self.failures.count())?;
            self.failures.write_lines(f)?;
        }
        Ok(())
    }
}

/// Runs a quarantine or protection change and reports it.
pub async fn quarantine(options: &QuarantineOptions) -> Result<QuarantineReport, UpkeepError> {
    let server_name =
        crate::server::local_server_name(&options.synapse_db, options.server_name.clone()).await?;
    let api = match &options.through {
        Through::AdminApi(api) => {
            supported_by_api(options)?;
            Some(api).filter(|_| options.mode.applies())
        }
        Through::Direct => None,
    };
    // Through the API, the database is only read: Synapse writes.
    let db_mode = if api.is_some() {
        RunMode::DryRun
    } else {
        options.mode
    };
    let db = QuarantineDb::open(&options.synapse_db, db_mode, server_name).await?;
    let result = match api {
        Some(api) => change_through_api(&db, api, options).await,
        None => run(&db, options).await,
    };
    db.close().await;
    let mut report = result?;
    if let (Through::AdminApi(api), RunMode::DryRun) = (&options.through, options.mode) {
        report.synapse_api = Some(ApiChangeReport {
            api: api.base().to_string(),
            planned: report.changed.count,
            ..ApiChangeReport::default()
        });
    }
    Ok(report)
}

/// Refuses what Synapse's admin API cannot do: release a user's or a room's media at
/// once.
fn supported_by_api(options: &QuarantineOptions) -> Result<(), ApiError> {
    match (&options.target, &options.change) {
        (Target::User(_) | Target::Room(_), Change::Unquarantine) => Err(ApiError::Config(
            "Synapse's admin API releases media from quarantine one by one only: name the \
             media, or run without --homeserver-url"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// A change applied by Synapse through `api`: plan (read-only), ask Synapse, plan again
/// to verify.
async fn change_through_api(
    db: &QuarantineDb,
    api: &AdminApi,
    options: &QuarantineOptions,
) -> Result<QuarantineReport, UpkeepError> {
    // The token first: nothing changes when Synapse refuses it.
    api.check_admin().await?;
    if let Change::Quarantine { by } = &options.change {
        let admin = api.whoami().await?;
        if admin != *by {
            return Err(ApiError::Config(format!(
                "Synapse records the token's user {admin} as having quarantined them, not \
                 {by}: give --by {admin}"
            ))
            .into());
        }
    }
    let plan_options = QuarantineOptions {
        mode: RunMode::DryRun,
        ..options.clone()
    };
    let mut report = run(db, &plan_options).await?;
    report.mode = RunMode::Apply;
    report.route = Route::new(
        &options.synapse_db,
        format_args!("Synapse's admin API {}", api.base()),
    );
    let state_before = db.count_in_state(&options.change).await?;
    let mut requests = 0;
    let mut reported_by_synapse = None;
    match &options.target {
        Target::Media(mxcs) => {
            for mxc in mxcs {
                let local = *mxc.server() == db.server_name;
                let result = match &options.change {
                    Change::Quarantine { .. } => api.quarantine_media(mxc, Quarantined::Yes).await,
                    Change::Unquarantine => api.quarantine_media(mxc, Quarantined::No).await,
                    // The plan lists remote media as failures: Synapse protects local
                    // media only.
                    Change::Protect | Change::Unprotect if !local => continue,
                    Change::Protect => api.protect_media(mxc.media_id(), Protected::Yes).await,
                    Change::Unprotect => api.protect_media(mxc.media_id(), Protected::No).await,
                };
                match result {
                    Ok(()) => requests += 1,
                    Err(error) if error.class() == ErrorClass::Item => report.failures.push(
                        mxc.to_string(),
                        QuarantineFault::RefusedBySynapse,
                        error.to_string(),
                    ),
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Target::User(user) => {
            reported_by_synapse = Some(api.quarantine_user(user).await?);
            requests += 1;
        }
        Target::Room(room) => {
            reported_by_synapse = Some(api.quarantine_room(room).await?);
            requests += 1;
        }
    }

    // Verify: the plan made again changes nothing, and nothing else changed.
    let again = run(db, &plan_options).await?;
    for mxc in &again.changed.listed {
        report.failures.push(
            mxc.clone(),
            QuarantineFault::NotChangedBySynapse,
            "Synapse was asked to change it, and it is not changed",
        );
    }
    let verified = report.changed.count.saturating_sub(again.changed.count);
    let moved = db
        .count_in_state(&options.change)
        .await?
        .abs_diff(state_before);
    if moved > verified {
        report.failures.push(
            "synapse",
            QuarantineFault::ChangedOutsidePlan,
            format!(
                "{} media changed that the plan did not name (Synapse's selection differs, \
                 or media changed while it ran)",
                moved - verified
            ),
        );
    }
    report.synapse_api = Some(ApiChangeReport {
        api: api.base().to_string(),
        planned: report.changed.count,
        requests,
        reported_by_synapse,
        verified,
    });
    Ok(report)
}

async fn run(
    db: &QuarantineDb,
    options: &QuarantineOptions,
) -> Result<QuarantineReport, UpkeepError> {
    let mut report = QuarantineReport {
        mode: options.mode,
        route: Route::new(&options.synapse_db, "its media rows"),
        change: options.change.to_string(),
        ..QuarantineReport::default()
    };
    match &options.target {
        Target::Media(mxcs) => {
            for chunk in mxcs.chunks(BATCH) {
                db.apply(chunk.to_vec(), options, &mut report).await?;
            }
        }
        Target::User(user) => {
            let mut after = String::new();
            loop {
                let ids = db.user_media_page(user, &after, &options.change).await?;
                let Some(last) = ids.last() else { break };
                after = last.clone();
                let full = ids.len() == BATCH;
                let mxcs = ids
                    .into_iter()
                    .filter_map(|id| Some(MxcUri::new(db.server_name.clone(), id.parse().ok()?)))
                    .collect();
                db.apply(mxcs, options, &mut report).await?;
                if !full {
                    break;
                }
            }
        }
        Target::Room(room) => {
            let mut before = i64::MAX;
            loop {
                let (mxcs, next) =
                    media_synapse::events::room_media_page(&db.pool, room, before).await?;
                db.apply(mxcs, options, &mut report).await?;
                match next {
                    Some(next) => before = next,
                    None => break,
                }
            }
        }
    }
    Ok(report)
}

/// Synapse's database, for quarantine and protection.
#[derive(Debug)]
struct QuarantineDb {
    pool: Pool,
    dialect: Dialect,
    server_name: ServerName,
    local_sha256: bool,
    remote_sha256: bool,
    changes_stream: bool,
}

/// `$first, $first+1, …` for `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(media_origin = $i AND media_id = $i+1) OR …` for `count` pairs.
fn pair_condition(first: usize, count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "(media_origin = ${} AND media_id = ${})",
                first + 2 * i,
                first + 2 * i + 1
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Binds every string of `$binds` to `$query`, in order.
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for value in $binds {
            query = query.bind(value.clone());
        }
        query
    }};
}

/// A local row as a quarantine looks at it: ID, hash, protected, quarantined by.
type LocalState = (String, Option<String>, i64, Option<String>);
/// A remote row: origin, ID, hash, quarantined by.
type RemoteState = (String, String, Option<String>, Option<String>);

impl QuarantineDb {
    async fn open(
        location: &DatabaseLocation,
        mode: RunMode,
        server_name: ServerName,
    ) -> Result<Self, DbError> {
        let pool = connect::open_pool(
            location,
            OpenOptions {
                create: false,
                read_only: mode.is_dry_run(),
                max_connections: 1,
            },
        )
        .await?;
        let dialect = match pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        };
        let mut db = Self {
            pool,
            dialect,
            server_name,
            local_sha256: false,
            remote_sha256: false,
            changes_stream: false,
        };
        db.local_sha256 = db.has_column("local_media_repository", "sha256").await?;
        db.remote_sha256 = db.has_column("remote_media_cache", "sha256").await?;
        db.changes_stream = db
            .has_column("quarantined_media_changes", "stream_id")
            .await?;
        Ok(db)
    }

    async fn close(&self) {
        on_pool!(&self.pool, |p| p.close().await)
    }

    async fn has_column(&self, table: &str, column: &str) -> Result<bool, DbError> {
        let sql = match self.dialect {
            Dialect::Sqlite => "SELECT 1 FROM pragma_table_info($1) WHERE name = $2",
            Dialect::Postgres => {
                "SELECT 1::BIGINT FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
            }
        };
        let found: Option<i64> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(sql)
                .bind(table)
                .bind(column)
                .fetch_optional(p)
                .await
                .during("inspect the Synapse schema")?
        });
        Ok(found.is_some())
    }

    /// How many media are in the state `change` is about: quarantined (local and
    /// remote) or protected.
    async fn count_in_state(&self, change: &Change) -> Result<u64, DbError> {
        let sql = match change {
            Change::Quarantine { .. } | Change::Unquarantine => {
                "SELECT (SELECT COUNT(*) FROM local_media_repository \
                 WHERE quarantined_by IS NOT NULL) + (SELECT COUNT(*) FROM remote_media_cache \
                 WHERE quarantined_by IS NOT NULL)"
            }
            Change::Protect | Change::Unprotect => {
                "SELECT COUNT(*) FROM local_media_repository \
                 WHERE COALESCE(safe_from_quarantine, FALSE)"
            }
        };
        let count: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(sql)
                .fetch_one(p)
                .await
                .during("count the media in a quarantine state")?
        });
        Ok(count as u64)
    }

    /// A page of a user's local media IDs after `after` (for a quarantine, those not
    /// yet quarantined, as Synapse selects them).
    async fn user_media_page(
        &self,
        user: &UserId,
        after: &str,
        change: &Change,
    ) -> Result<Vec<String>, DbError> {
        let only_free = match change {
            Change::Quarantine { .. } => " AND quarantined_by IS NULL",
            _ => "",
        };
        let sql = format!(
            "SELECT media_id FROM local_media_repository WHERE user_id = $1 AND media_id > $2\
             {only_free} ORDER BY media_id LIMIT {BATCH}"
        );
        Ok(on_pool!(&self.pool, |p| {
            sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(user.as_str())
                .bind(after)
                .fetch_all(p)
                .await
                .during("read a user's media")?
        }))
    }

    /// Applies the change to one batch of named media, in one transaction.
    async fn apply(
        &self,
        named: Vec<MxcUri>,
        options: &QuarantineOptions,
        report: &mut QuarantineReport,
    ) -> Result<(), DbError> {
        let named: BTreeSet<MxcUri> = named.into_iter().collect();
        if named.is_empty() {
            return Ok(());
        }
        report.named += named.len() as u64;
        let mut local: Vec<String> = Vec::new();
        let mut remote: Vec<(String, String)> = Vec::new();
        for mxc in &named {
            if *mxc.server() == self.server_name {
                local.push(mxc.media_id().to_string());
            } else {
                remote.push((mxc.server().to_string(), mxc.media_id().to_string()));
            }
        }
        match &options.change {
            Change::Protect | Change::Unprotect => {
                for (origin, id) in &remote {
                    report.failures.push(
                        format!("mxc://{origin}/{id}"),
                        QuarantineFault::NotLocal,
                        "only local media can be protected, as in Synapse",
                    );
                }
                self.protect(local, options, report).await
            }
            Change::Quarantine { .. } | Change::Unquarantine => {
                self.quarantine(local, remote, options, report).await
            }
        }
    }

    async fn protect(
        &self,
        local: Vec<String>,
        options: &QuarantineOptions,
        report: &mut QuarantineReport,
    ) -> Result<(), DbError> {
        if local.is_empty() {
            return Ok(());
        }
        let protect = options.change == Change::Protect;
        let select = format!(
            "SELECT media_id, CAST(CASE WHEN COALESCE(safe_from_quarantine, FALSE) THEN 1 \
             ELSE 0 END AS BIGINT) FROM local_media_repository WHERE media_id IN ({})",
            placeholders(1, local.len())
        );
        let server = self.server_name.clone();
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await.during("begin a protection batch")?;
            let rows: Vec<(String, i64)> =
                bind_all!(sqlx::query_as(AssertSqlSafe(select.clone())), &local)
                    .fetch_all(&mut *tx)
                    .await
                    .during("read media protection")?;
            let found: BTreeMap<String, bool> =
                rows.into_iter().map(|(id, safe)| (id, safe != 0)).collect();
            let mut change = Vec::new();
            for id in &local {
                let mxc = format!("mxc://{server}/{id}");
                match found.get(id) {
                    None => {
                        report
                            .failures
                            .push(mxc, QuarantineFault::NotFound, "no such local media")
                    }
                    Some(safe) if *safe == protect => report.already.add(mxc),
                    Some(_) => {
                        report.changed.add(mxc);
                        change.push(id.clone());
                    }
                }
            }
            if options.mode.applies() && !change.is_empty() {
                let update = format!(
                    "UPDATE local_media_repository SET safe_from_quarantine = $1 \
                     WHERE media_id IN ({})",
                    placeholders(2, change.len())
                );
                bind_all!(sqlx::query(AssertSqlSafe(update)).bind(protect), &change)
                    .execute(&mut *tx)
                    .await
                    .during("protect media")?;
            }
            tx.commit().await.during("commit a protection batch")?;
        });
        Ok(())
    }

    async fn quarantine(
        &self,
        local: Vec<String>,
        remote: Vec<(String, String)>,
        options: &QuarantineOptions,
        report: &mut QuarantineReport,
    ) -> Result<(), DbError> {
        let by = match &options.change {
            Change::Quarantine { by } => Some(by.to_string()),
            _ => None,
        };
        let quarantining = by.is_some();
        let server = self.server_name.clone();
        let local_hash = if self.local_sha256 { "sha256" } else { "NULL" };
        let remote_hash = if self.remote_sha256 { "sha256" } else { "NULL" };
        let local_select = |condition: &str| {
            format!(
                "SELECT media_id, {local_hash}, CAST(CASE WHEN COALESCE(safe_from_quarantine, \
                 FALSE) THEN 1 ELSE 0 END AS BIGINT), quarantined_by \
                 FROM local_media_repository WHERE {condition}"
            )
        };
        let remote_select = |condition: &str| {
            format!(
                "SELECT media_origin, media_id, {remote_hash}, quarantined_by \
                 FROM remote_media_cache WHERE {condition}"
            )
        };
        let remote_binds: Vec<String> = remote
            .iter()
            .flat_map(|(origin, id)| [origin.clone(), id.clone()])
            .collect();
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await.during("begin a quarantine batch")?;
            // The named media: their hashes (or, without one, themselves).
            let named_local: Vec<LocalState> = if local.is_empty() {
                Vec::new()
            } else {
                let sql = local_select(&format!("media_id IN ({})", placeholders(1, local.len())));
                bind_all!(sqlx::query_as(AssertSqlSafe(sql)), &local)
                    .fetch_all(&mut *tx)
                    .await
                    .during("read the named local media")?
            };
            let named_remote: Vec<RemoteState> = if remote.is_empty() {
                Vec::new()
            } else {
                let sql = remote_select(&pair_condition(1, remote.len()));
                bind_all!(sqlx::query_as(AssertSqlSafe(sql)), &remote_binds)
                    .fetch_all(&mut *tx)
                    .await
                    .during("read the named remote media")?
            };
            let found_local: BTreeSet<&String> = named_local.iter().map(|r| &r.0).collect();
            for id in local.iter().filter(|id| !found_local.contains(id)) {
                report.failures.push(
                    format!("mxc://{server}/{id}"),
                    QuarantineFault::NotFound,
                    "no such local media",
                );
            }
            let found_remote: BTreeSet<(&String, &String)> =
                named_remote.iter().map(|r| (&r.0, &r.1)).collect();
            for (origin, id) in remote
                .iter()
                .filter(|(o, i)| !found_remote.contains(&(o, i)))
            {
                report.failures.push(
                    format!("mxc://{origin}/{id}"),
                    QuarantineFault::NotFound,
                    "no such cached remote media",
                );
            }
            let mut hashes: BTreeSet<String> = BTreeSet::new();
            let mut local_ids: BTreeSet<String> = BTreeSet::new();
            let mut remote_keys: BTreeSet<(String, String)> = BTreeSet::new();
            for (id, sha256, protected, _) in &named_local {
                if quarantining && *protected != 0 {
                    report.protected.add(format!("mxc://{server}/{id}"));
                    continue;
                }
                match sha256 {
                    Some(sha256) => hashes.insert(sha256.clone()),
                    None => local_ids.insert(id.clone()),
                };
            }
            for (origin, id, sha256, _) in &named_remote {
                match sha256 {
                    Some(sha256) => hashes.insert(sha256.clone()),
                    None => remote_keys.insert((origin.clone(), id.clone())),
                };
            }
            // Every media those name, by ID or by hash.
            let hash_binds: Vec<String> = hashes.iter().cloned().collect();
            let mut targets_local: Vec<LocalState> = Vec::new();
            if !local_ids.is_empty() || !hash_binds.is_empty() {
                let ids: Vec<String> = local_ids.iter().cloned().collect();
                let mut conditions = Vec::new();
                if !ids.is_empty() {
                    conditions.push(format!("media_id IN ({})", placeholders(1, ids.len())));
                }
                if !hash_binds.is_empty() && self.local_sha256 {
                    conditions.push(format!(
                        "sha256 IN ({})",
                        placeholders(ids.len() + 1, hash_binds.len())
                    ));
                }
                if !conditions.is_empty() {
                    let binds: Vec<String> = ids
                        .iter()
                        .chain(if self.local_sha256 {
                            hash_binds.iter()
                        } else {
                            [].iter()
                        })
                        .cloned()
                        .collect();
                    let sql = local_select(&conditions.join(" OR "));
                    targets_local = bind_all!(sqlx::query_as(AssertSqlSafe(sql)), &binds)
                        .fetch_all(&mut *tx)
                        .await
                        .during("read the local media to change")?;
                }
            }
            let mut targets_remote: Vec<RemoteState> = Vec::new();
            {
                let keys: Vec<String> = remote_keys
                    .iter()
                    .flat_map(|(o, i)| [o.clone(), i.clone()])
                    .collect();
                let mut conditions = Vec::new();
                if !keys.is_empty() {
                    conditions.push(pair_condition(1, remote_keys.len()));
                }
                if !hash_binds.is_empty() && self.remote_sha256 {
                    conditions.push(format!(
                        "sha256 IN ({})",
                        placeholders(keys.len() + 1, hash_binds.len())
                    ));
                }
                if !conditions.is_empty() {
                    let binds: Vec<String> = keys
                        .iter()
                        .chain(if self.remote_sha256 {
                            hash_binds.iter()
                        } else {
                            [].iter()
                        })
                        .cloned()
                        .collect();
                    let sql = remote_select(&conditions.join(" OR "));
                    targets_remote = bind_all!(sqlx::query_as(AssertSqlSafe(sql)), &binds)
                        .fetch_all(&mut *tx)
                        .await
                        .during("read the remote media to change")?;
                }
            }
            // Sort them: protected, already so, or to change.
            let named_text: BTreeSet<String> = named_local_or_remote(&local, &remote, &server);
            let mut change_local = Vec::new();
            for (id, _, protected, quarantined_by) in &targets_local {
                let mxc = format!("mxc://{server}/{id}");
                if quarantining && *protected != 0 {
                    if !report.protected.listed.contains(&mxc) {
                        report.protected.add(mxc);
                    }
                } else if quarantined_by.is_some() == quarantining {
                    report.already.add(mxc);
                } else {
                    change_local.push(id.clone());
                    report.changed_by_hash += u64::from(!named_text.contains(&mxc));
                    report.changed.add(mxc);
                }
            }
            let mut change_remote = Vec::new();
            for (origin, id, _, quarantined_by) in &targets_remote {
                let mxc = format!("mxc://{origin}/{id}");
                if quarantined_by.is_some() == quarantining {
                    report.already.add(mxc);
                } else {
                    change_remote.push((origin.clone(), id.clone()));
                    report.changed_by_hash += u64::from(!named_text.contains(&mxc));
                    report.changed.add(mxc);
                }
            }
            if options.mode.applies() {
                let state = if quarantining {
                    "quarantined_by IS NULL AND NOT COALESCE(safe_from_quarantine, FALSE)"
                } else {
                    "quarantined_by IS NOT NULL"
                };
                if !change_local.is_empty() {
                    let sql = format!(
                        "UPDATE local_media_repository SET quarantined_by = $1 \
                         WHERE {state} AND media_id IN ({})",
                        placeholders(2, change_local.len())
                    );
                    bind_all!(
                        sqlx::query(AssertSqlSafe(sql)).bind(by.clone()),
                        &change_local
                    )
                    .execute(&mut *tx)
                    .await
                    .during("quarantine local media")?;
                }
                if !change_remote.is_empty() {
                    let state = if quarantining {
                        "quarantined_by IS NULL"
                    } else {
                        "quarantined_by IS NOT NULL"
                    };
                    let keys: Vec<String> = change_remote
                        .iter()
                        .flat_map(|(o, i)| [o.clone(), i.clone()])
                        .collect();
                    let sql = format!(
                        "UPDATE remote_media_cache SET quarantined_by = $1 WHERE {state} \
                         AND ({})",
                        pair_condition(2, change_remote.len())
                    );
                    bind_all!(sqlx::query(AssertSqlSafe(sql)).bind(by.clone()), &keys)
                        .execute(&mut *tx)
                        .await
                        .during("quarantine remote media")?;
                }
                if self.changes_stream {
                    let changes = change_local.iter().map(|id| (None, id.clone())).chain(
                        change_remote
                            .iter()
                            .map(|(o, i)| (Some(o.clone()), i.clone())),
                    );
                    for (origin, id) in changes {
                        let next_id = match self.dialect {
                            Dialect::Sqlite => {
                                "SELECT COALESCE(MAX(stream_id), 0) + 1 FROM quarantined_media_changes"
                            }
                            Dialect::Postgres => "SELECT nextval('quarantined_media_id_seq')",
                        };
                        let stream_id: i64 = sqlx::query_scalar(next_id)
                            .fetch_one(&mut *tx)
                            .await
                            .during("number a quarantine change")?;
                        sqlx::query(
                            "INSERT INTO quarantined_media_changes \
                             (stream_id, instance_name, origin, media_id, quarantined) \
                             VALUES ($1, 'master', $2, $3, $4)",
                        )
                        .bind(stream_id)
                        .bind(origin)
                        .bind(id)
                        .bind(quarantining)
                        .execute(&mut *tx)
                        .await
                        .during("record a quarantine change")?;
                    }
                }
            }
            tx.commit().await.during("commit a quarantine batch")?;
        });
        Ok(())
    }
}

/// The named media as MXC text.
fn named_local_or_remote(
    local: &[String],
    remote: &[(String, String)],
    server: &ServerName,
) -> BTreeSet<String> {
    local
        .iter()
        .map(|id| format!("mxc://{server}/{id}"))
        .chain(remote.iter().map(|(o, i)| format!("mxc://{o}/{i}")))
        .collect()
}
