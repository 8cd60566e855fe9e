//! `synapse_media`'s command line: the Synapse it works on, its subcommands and their
//! flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use media_cli::{Output, ReportArgs, RunError, Verbosity};
use media_core::ids::{MxcUri, RoomId, ServerName, UserId};
use media_core::moment::Moment;
use media_core::run::RunMode;
use media_db::DatabaseLocation;
use media_synapse::HomeserverConfig;
use media_upkeep::admin_api::{AdminApi, Through};
use media_upkeep::listing::{ListOptions, Listing};
use media_upkeep::quarantine::{Change, Target};
use media_upkeep::quarantine_changes::ChangesOptions;
use media_upkeep::{
    AvatarPolicy, CheckOptions, PurgeOptions, PurgeSelection, QuarantineOptions, UsageBy,
    UsageOptions,
};

const SYNAPSE: &str = "Synapse";
const ADMIN_API: &str = "Through Synapse's admin API";

/// Upkeep of a Synapse media store, directly on its database and media_store folder or
/// through Synapse's admin API (--homeserver-url): purge the remote cache and old local
/// media with Synapse's own semantics, and leave no empty folder behind.
#[derive(Debug, Parser)]
#[command(name = "synapse_media", version, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// Synapse's homeserver.yaml: its database section (sqlite3 or psycopg2),
    /// media_store_path and server_name are used where no flag gives them. Relative
    /// paths in it are taken from the file's folder.
    #[arg(short = 'c', long, global = true, help_heading = SYNAPSE, env = "SYNAPSE_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Synapse's database: the path of homeserver.db, a postgres:// URL or PostgreSQL
    /// key=value settings.
    #[arg(long, global = true, help_heading = SYNAPSE, env = "SYNAPSE_DB")]
    pub(crate) synapse_db: Option<String>,

    /// Synapse's media_store_path.
    #[arg(long, global = true, help_heading = SYNAPSE, env = "SYNAPSE_MEDIA_STORE")]
    pub(crate) media_store: Option<PathBuf>,

    /// The Synapse server's name; derived from its users (and checked) when omitted.
    #[arg(long, global = true, help_heading = SYNAPSE, env = "SYNAPSE_SERVER_NAME")]
    pub(crate) server_name: Option<ServerName>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Delete media: rows, thumbnail rows, files, thumbnail files and the folders left
    /// empty.
    #[command(subcommand)]
    Purge(Purge),
    /// Compare the media store with the database: files no row names, rows without
    /// their file, thumbnail folders of media gone, stray files (temporary or
    /// misplaced), empty folders; bytes per category. Exit 1 when problems remain.
    Check {
        /// Remove what is safe: files and thumbnail folders no row names, stray files
        /// and empty folders (then the folders left empty); never a row. Stop Synapse
        /// first, or rely on --settled-before.
        #[arg(long)]
        fix: bool,

        /// Leave alone what changed at or after this (a date, a time, Unix
        /// milliseconds or an age): Synapse writes a media's file before its row.
        #[arg(long, default_value = "1h")]
        settled_before: Moment,

        #[command(flatten)]
        report: ReportArgs,
    },
    /// Quarantine media as Synapse does: every media with the same sha256 too (local
    /// and remote), never a protected one. Stop Synapse first, or go through its admin
    /// API (--homeserver-url).
    Quarantine {
        #[command(subcommand)]
        target: TargetArgs,

        /// The admin recorded as having quarantined them (quarantined_by).
        #[arg(long, global = true)]
        by: Option<UserId>,
    },
    /// Take media out of quarantine, with every media of the same sha256.
    #[command(subcommand)]
    Unquarantine(TargetArgs),
    /// Protect local media from quarantine (Synapse's safe_from_quarantine).
    Protect(MediaArgs),
    /// Remove that protection.
    Unprotect(MediaArgs),
    /// The quarantine change stream (Synapse 1.152 and later), oldest first, as
    /// Synapse's "list quarantined media changes" serves it; continue with the
    /// next batch it prints as --from.
    QuarantineChanges {
        /// Changes after this stream position (0: from the first).
        #[arg(long, default_value_t = 0)]
        from: i64,

        /// List at most this many changes.
        #[arg(long, default_value_t = 100)]
        limit: u32,

        #[command(flatten)]
        report: ReportArgs,
    },
    /// Look at media rows: a user's uploads, a room's media, one media.
    #[command(subcommand)]
    Media(MediaCommand),
    /// What the store holds, grouped by uploader, room, origin or month, largest first:
    /// media, bytes, thumbnails (and their share), and the bytes Synapse stores twice
    /// (media with the same sha256 under several IDs; media without a sha256, from
    /// before Synapse 1.128, are not compared). Figures are the database's recorded
    /// lengths. --by room counts the media the room's events point at (a media in
    /// several rooms counts in each); --by user counts local media only.
    Usage {
        /// How to group.
        #[arg(long, value_enum, default_value = "origin")]
        by: UsageByArg,

        /// List at most this many groups.
        #[arg(long, default_value_t = 20)]
        limit: usize,

        /// Also write a self-contained page with charts to this file.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,

        #[command(flatten)]
        report: ReportArgs,
    },
}

/// How `usage` groups media.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum UsageByArg {
    /// By uploader (local media).
    User,
    /// By room (the media its events point at).
    Room,
    /// By origin server.
    Origin,
    /// By month of upload or caching (UTC).
    Month,
}

impl From<UsageByArg> for UsageBy {
    fn from(by: UsageByArg) -> Self {
        match by {
            UsageByArg::User => UsageBy::User,
            UsageByArg::Room => UsageBy::Room,
            UsageByArg::Origin => UsageBy::Origin,
            UsageByArg::Month => UsageBy::Month,
        }
    }
}

/// What to look at.
#[derive(Debug, Subcommand)]
pub(crate) enum MediaCommand {
    /// A local user's uploads (--user) or the media a room's events point at (--room).
    List {
        /// The uploader, e.g. @alice:example.org.
        #[arg(long, conflicts_with = "room", required_unless_present = "room")]
        user: Option<UserId>,

        /// The room ID, e.g. !abc:example.org.
        #[arg(long)]
        room: Option<RoomId>,

        #[command(flatten)]
        report: ReportArgs,
    },
    /// One media and its thumbnails.
    Show {
        /// mxc://server/media_id.
        mxc: MxcUri,

        #[command(flatten)]
        report: ReportArgs,
    },
}

/// Which media a quarantine is about.
#[derive(Debug, Subcommand)]
pub(crate) enum TargetArgs {
    /// These media (local or remote).
    Media(MediaArgs),
    /// A local user's uploads.
    User {
        /// The user, e.g. @alice:example.org.
        user: UserId,

        #[command(flatten)]
        run: RunArgs,
    },
    /// The media a room's events point at (content.url, info.thumbnail_url, file.url).
    Room {
        /// The room ID, e.g. !abc:example.org.
        room: RoomId,

        #[command(flatten)]
        run: RunArgs,
    },
}

/// Media named by their MXC URIs.
#[derive(Debug, Args)]
pub(crate) struct MediaArgs {
    /// mxc://server/media_id, one or more.
    #[arg(required = true)]
    mxc: Vec<MxcUri>,

    #[command(flatten)]
    run: RunArgs,
}

impl TargetArgs {
    fn run(&self) -> &RunArgs {
        match self {
            Self::Media(MediaArgs { run, .. })
            | Self::User { run, .. }
            | Self::Room { run, .. } => run,
        }
    }

    fn target(&self) -> Target {
        match self {
            Self::Media(media) => Target::Media(media.mxc.clone()),
            Self::User { user, .. } => Target::User(user.clone()),
            Self::Room { room, .. } => Target::Room(room.clone()),
        }
    }
}

/// What to purge.
#[derive(Debug, Subcommand)]
pub(crate) enum Purge {
    /// Cached remote media last accessed before a time, as Synapse's purge_media_cache
    /// (quarantined media stay; Synapse fetches purged media again when asked). Safe
    /// while Synapse runs.
    Remote {
        /// The cutoff: a date (2026-01-31), a time, Unix milliseconds or an age (30d).
        #[arg(long, visible_alias = "older-than")]
        before: Moment,

        #[command(flatten)]
        run: RunArgs,
    },
    /// Local media last accessed (else created) before a time, as Synapse's "delete
    /// local media by date" (quarantined and protected media, and avatars unless
    /// --keep-avatars=false, stay). Stop Synapse first, or go through its admin API
    /// (--homeserver-url).
    Local {
        /// The cutoff: a date (2026-01-31), a time, Unix milliseconds or an age (30d).
        #[arg(long, visible_alias = "older-than")]
        before: Moment,

        /// Only media larger than this (bytes, or 10MiB, 1.5G…); never-uploaded and empty
        /// media always stay.
        #[arg(long, value_parser = size_or_zero, default_value = "0")]
        size_gt: u64,

        /// Keep media used as profile, member, user-directory or room avatars (Synapse's
        /// keep_profiles).
        #[arg(long, action = clap::ArgAction::Set, default_value_t = true)]
        keep_avatars: bool,

        #[command(flatten)]
        run: RunArgs,
    },
    /// Every local media a user uploaded (URL previews they fetched included), as
    /// Synapse's DELETE /_synapse/admin/v1/users/<user_id>/media: quarantined and
    /// protected media and avatars go too, as with Synapse's API. Stop Synapse first,
    /// or go through its admin API (--homeserver-url).
    User {
        /// The uploader, e.g. @alice:example.org.
        user: UserId,

        /// Only media uploaded before this: a date, a time, Unix milliseconds or an age.
        #[arg(long)]
        before: Option<Moment>,

        #[command(flatten)]
        run: RunArgs,
    },
    /// These media, local or cached remote, as Synapse's DELETE
    /// /_synapse/admin/v1/media/{server}/{media_id}: whatever their state (quarantined,
    /// protected, avatars), as with Synapse's API. A media with no row is a listed
    /// failure (exit 1). Stop Synapse first for local media, or go through its admin
    /// API (--homeserver-url).
    Media {
        /// mxc://server/media_id, one or more.
        #[arg(required = true)]
        mxc: Vec<MxcUri>,

        #[command(flatten)]
        run: RunArgs,
    },
}

/// A subcommand, ready to run.
pub(crate) enum Job {
    /// A purge.
    Purge(PurgeOptions),
    /// A check, or a fix.
    Check(CheckOptions),
    /// A quarantine or protection change.
    Quarantine(QuarantineOptions),
    /// A page of the quarantine change stream.
    QuarantineChanges(ChangesOptions),
    /// A listing of media rows.
    List(ListOptions),
    /// A usage report.
    Usage(UsageOptions),
}

/// The flags of every run: dry run, who applies it, and report.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Change nothing; report what a real run would do (Synapse is not called).
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Have Synapse apply the plan through its admin API at this URL (e.g.
    /// http://localhost:8008), while it runs: the plan is read from the database, Synapse
    /// deletes or changes, then the rows are verified and the files and empty folders
    /// Synapse leaves are removed.
    #[arg(long, value_name = "URL", help_heading = ADMIN_API)]
    pub(crate) homeserver_url: Option<String>,

    /// The access token of a Synapse server admin, for --homeserver-url (never printed).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SYNAPSE_ADMIN_TOKEN",
        hide_env_values = true,
        help_heading = ADMIN_API
    )]
    pub(crate) admin_token: Option<String>,

    #[command(flatten)]
    pub(crate) report: ReportArgs,
}

/// A byte size as `media_cli::parse_byte_size` reads it, or `0` (Synapse's default
/// `size_gt`: every media with bytes).
fn size_or_zero(text: &str) -> Result<u64, String> {
    match text.trim() {
        "0" => Ok(0),
        _ => media_cli::parse_byte_size(text),
    }
}

const EXAMPLES: &str = "\
Examples:
  # What would purging remote media not accessed for 30 days do?
  synapse_media --synapse-db /var/lib/synapse/homeserver.db \\
      --media-store /var/lib/synapse/media_store purge remote --older-than 30d --dry-run

  # Purge local media not accessed since 2025, larger than 10 MiB (Synapse stopped):
  synapse_media --synapse-db postgres://synapse@localhost/synapse \\
      --media-store /var/lib/synapse/media_store purge local --before 2025-01-01 --size-gt 10MiB

  # Which files does no row name, which rows have no file? Then fix what is safe:
  synapse_media --synapse-db /var/lib/synapse/homeserver.db \\
      --media-store /var/lib/synapse/media_store check
  synapse_media ... check --fix

  # The same, with the database, media store and server name from homeserver.yaml:
  synapse_media -c /etc/matrix-synapse/homeserver.yaml purge remote --older-than 30d

  # Delete everything a user uploaded before 2025, or two named media:
  synapse_media -c homeserver.yaml purge user @spammer:example.org --before 2025-01-01
  synapse_media -c homeserver.yaml purge media mxc://example.org/abc mxc://other.org/def

  # Who uses the space, what is stored twice, how much are thumbnails? As a page too:
  synapse_media -c homeserver.yaml usage --by user --limit 10 --html usage.html

  # Quarantine a media and every copy of it (same sha256), then a whole room's media:
  synapse_media ... quarantine --by @admin:example.org media mxc://example.org/abcdef
  synapse_media ... quarantine --by @admin:example.org room '!room:example.org' --dry-run
  synapse_media ... quarantine-changes --from 0   # what was (un)quarantined, oldest first

  # Let a running Synapse delete through its admin API; verify and clean up after it:
  SYNAPSE_ADMIN_TOKEN=syt_... synapse_media -c homeserver.yaml purge remote --older-than 30d \\
      --homeserver-url http://localhost:8008

A killed purge is finished by the next one (its journal sits in the media store).";

impl Cli {
    /// The run flags of a subcommand that has them.
    fn run_args(&self) -> Option<&RunArgs> {
        match &self.command {
            Command::Purge(
                Purge::Remote { run, .. }
                | Purge::Local { run, .. }
                | Purge::User { run, .. }
                | Purge::Media { run, .. },
            ) => Some(run),
            Command::Check { .. }
            | Command::Media(_)
            | Command::Usage { .. }
            | Command::QuarantineChanges { .. } => None,
            Command::Quarantine { target, .. } | Command::Unquarantine(target) => {
                Some(target.run())
            }
            Command::Protect(media) | Command::Unprotect(media) => Some(&media.run),
        }
    }

    fn report_args(&self) -> &ReportArgs {
        match (&self.command, self.run_args()) {
            (
                Command::Check { report, .. }
                | Command::Usage { report, .. }
                | Command::QuarantineChanges { report, .. },
                _,
            )
            | (
                Command::Media(
                    MediaCommand::List { report, .. } | MediaCommand::Show { report, .. },
                ),
                _,
            ) => report,
            (_, Some(run)) => &run.report,
            (_, None) => unreachable!("every other subcommand has run flags"),
        }
    }

    /// A dry run (--dry-run, a check without --fix, a listing) or a real one.
    fn mode(&self) -> RunMode {
        match (&self.command, self.run_args()) {
            (Command::Check { fix, .. }, _) => RunMode::from_dry_run(!fix),
            (_, run) => RunMode::from_dry_run(run.is_some_and(|run| run.dry_run)),
        }
    }

    /// Synapse's homeserver.yaml (-c), read.
    fn homeserver_config(&self) -> Result<Option<HomeserverConfig>, RunError> {
        self.config
            .as_deref()
            .map(HomeserverConfig::load)
            .transpose()
            .map_err(RunError::of)
    }

    /// Synapse's database: --synapse-db, else homeserver.yaml's database section.
    fn synapse_location(
        &self,
        config: Option<&HomeserverConfig>,
    ) -> Result<DatabaseLocation, RunError> {
        if let Some(given) = self.synapse_db.as_deref() {
            return given.parse().map_err(RunError::of);
        }
        match config {
            Some(config) => config.database.clone().ok_or_else(|| {
                self.missing_key("database", "give Synapse's database with --synapse-db")
            }),
            None => Err(RunError::usage(
                "give Synapse's database with --synapse-db (the path of homeserver.db or a \
                 postgres:// URL), or Synapse's homeserver.yaml with -c",
            )),
        }
    }

    /// Synapse's media store (--media-store, else homeserver.yaml's media_store_path),
    /// which must be a folder.
    fn media_store(&self, config: Option<&HomeserverConfig>) -> Result<PathBuf, RunError> {
        let (dir, from) = match (&self.media_store, config) {
            (Some(dir), _) => (dir.clone(), "--media-store"),
            (None, Some(config)) => (
                config.media_store_path.clone().ok_or_else(|| {
                    self.missing_key(
                        "media_store_path",
                        "give Synapse's media_store_path with --media-store",
                    )
                })?,
                "media_store_path",
            ),
            (None, None) => {
                return Err(RunError::usage(
                    "give Synapse's media_store_path with --media-store, or Synapse's \
                     homeserver.yaml with -c",
                ));
            }
        };
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(RunError::usage(format_args!(
                "{from} {} is not a folder: give Synapse's media_store_path",
                dir.display()
            )))
        }
    }

    /// The server name: --server-name, else homeserver.yaml's server_name (which must
    /// be there when -c is given), else derived from the database.
    fn server_name(
        &self,
        config: Option<&HomeserverConfig>,
    ) -> Result<Option<ServerName>, RunError> {
        match (&self.server_name, config) {
            (Some(name), _) => Ok(Some(name.clone())),
            (None, Some(config)) => config
                .server_name
                .clone()
                .map(Some)
                .ok_or_else(|| self.missing_key("server_name", "give it with --server-name")),
            (None, None) => Ok(None),
        }
    }

    /// The usage error of a key homeserver.yaml lacks, with the flag that stands in.
    fn missing_key(&self, key: &str, instead: &str) -> RunError {
        let path = self.config.as_deref().unwrap_or(std::path::Path::new(""));
        RunError::usage(format_args!("{} sets no {key}: {instead}", path.display()))
    }

    /// Who applies the run: Synapse's admin API with --homeserver-url, else this tool.
    fn through(&self) -> Result<Through, RunError> {
        let Some(run) = self.run_args() else {
            return Ok(Through::Direct);
        };
        let Some(url) = run.homeserver_url.as_deref() else {
            return Ok(Through::Direct);
        };
        let token = run.admin_token.as_deref().ok_or_else(|| {
            RunError::usage(
                "--homeserver-url needs the access token of a Synapse server admin: give \
                 --admin-token or set SYNAPSE_ADMIN_TOKEN",
            )
        })?;
        AdminApi::new(url, token)
            .map(Through::AdminApi)
            .map_err(RunError::of)
    }

    /// What a purge subcommand purges.
    fn selection(purge: &Purge) -> PurgeSelection {
        match purge {
            Purge::Remote { before, .. } => PurgeSelection::Remote { before: *before },
            Purge::Local {
                before,
                size_gt,
                keep_avatars,
                ..
            } => PurgeSelection::Local {
                before: *before,
                size_gt: *size_gt,
                avatars: if *keep_avatars {
                    AvatarPolicy::Keep
                } else {
                    AvatarPolicy::Delete
                },
            },
            Purge::User { user, before, .. } => PurgeSelection::User {
                user: user.clone(),
                before: *before,
            },
            Purge::Media { mxc, .. } => PurgeSelection::Media { media: mxc.clone() },
        }
    }

    /// What to run, with its options.
    pub(crate) fn job(&self) -> Result<Job, RunError> {
        let config = self.homeserver_config()?;
        let config = config.as_ref();
        let synapse_db = self.synapse_location(config)?;
        let server_name = self.server_name(config)?;
        let mode = self.mode();
        let through = self.through()?;
        let change = |target: Target, change: Change| {
            Job::Quarantine(QuarantineOptions {
                synapse_db: synapse_db.clone(),
                server_name: server_name.clone(),
                target,
                change,
                mode,
                through: through.clone(),
            })
        };
        Ok(match &self.command {
            Command::Purge(purge) => Job::Purge(PurgeOptions {
                synapse_db: synapse_db.clone(),
                media_store: self.media_store(config)?,
                server_name: server_name.clone(),
                selection: Self::selection(purge),
                mode,
                through: through.clone(),
            }),
            Command::Check { settled_before, .. } => Job::Check(CheckOptions {
                synapse_db: synapse_db.clone(),
                media_store: self.media_store(config)?,
                server_name: server_name.clone(),
                mode,
                settled_before: *settled_before,
            }),
            Command::Quarantine { target, by } => {
                let by = by.clone().ok_or_else(|| {
                    RunError::usage(
                        "give the admin recorded as quarantining them with --by \
                         @admin:your.server",
                    )
                })?;
                change(target.target(), Change::Quarantine { by })
            }
            Command::Unquarantine(target) => change(target.target(), Change::Unquarantine),
            Command::Protect(media) => change(Target::Media(media.mxc.clone()), Change::Protect),
            Command::Unprotect(media) => {
                change(Target::Media(media.mxc.clone()), Change::Unprotect)
            }
            Command::Usage {
                by, limit, html, ..
            } => Job::Usage(UsageOptions {
                synapse_db: synapse_db.clone(),
                server_name: server_name.clone(),
                by: (*by).into(),
                limit: *limit,
                html: html.clone(),
            }),
            Command::QuarantineChanges { from, limit, .. } => {
                Job::QuarantineChanges(ChangesOptions {
                    synapse_db: synapse_db.clone(),
                    server_name: server_name.clone(),
                    from: *from,
                    limit: *limit,
                })
            }
            Command::Media(command) => Job::List(ListOptions {
                synapse_db: synapse_db.clone(),
                server_name: server_name.clone(),
                listing: match command {
                    MediaCommand::List {
                        user: Some(user), ..
                    } => Listing::User(user.clone()),
                    MediaCommand::List {
                        room: Some(room), ..
                    } => Listing::Room(room.clone()),
                    MediaCommand::List { .. } => {
                        return Err(RunError::usage("give --user USER_ID or --room ROOM_ID"));
                    }
                    MediaCommand::Show { mxc, .. } => Listing::Show(mxc.clone()),
                },
            }),
        })
    }
}

impl media_cli::ToolArgs for Cli {
    fn output(&self) -> Output {
        self.report_args().output()
    }

    fn verbosity(&self) -> Verbosity {
        self.report_args().verbosity
    }
}
