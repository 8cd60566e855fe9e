//! `media_admin`'s command line: its subcommands, their flags and help texts.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use media_admin::{DatastoreSelector, Locality, PurgeTarget, QuarantineTarget, Verify};
use media_cli::{Output, REPOSITORY_HEADING, ReportArgs, Verbosity};
use media_core::ids::{MxcUri, RoomId, ServerName, UserId};
use media_core::moment::Moment;
use media_core::records::MediaKey;

/// Administer our media repository: its datastores and lossless transfers between them
/// (file ⇄ S3, S3 → S3), media attributes, quarantine, purges, the task log, who uses
/// the space, and a check of the datastores against the rows.
#[derive(Debug, Parser)]
#[command(name = "media_admin", version, after_help = EXAMPLES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What to administer.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The datastores holding the repository's bytes.
    #[command(subcommand)]
    Datastores(Datastores),
    /// A media's attributes: its purpose, `none` or `pinned` (a pinned media is never
    /// quarantined, nor purged by the bulk purges).
    #[command(subcommand)]
    Attributes(Attributes),
    /// Quarantine media: each takes every media with the same bytes with it (pinned
    /// media excepted: skipped and listed); every change joins the quarantine change
    /// stream.
    #[command(subcommand)]
    Quarantine(QuarantineWhat),
    /// Lift a quarantine, the same way.
    #[command(subcommand)]
    Unquarantine(QuarantineWhat),
    /// Delete media the repository no longer needs. Bytes go only when no remaining
    /// media or thumbnail uses them; the bulk forms spare pinned media, and all but
    /// `quarantined` and `media` spare quarantined media; purged IDs of our own servers
    /// stay reserved. Rows go first, one transaction per batch, their objects queued;
    /// the objects are deleted afterwards. Safe to stop anywhere (even kill -9) and run
    /// again.
    #[command(subcommand)]
    Purge(PurgeWhat),
    /// The runs the task log records: imports, exports, transfers, purges, quarantines.
    #[command(subcommand)]
    Tasks(Tasks),
    /// Who uses the space, largest first: media and bytes as uploaded, and the bytes
    /// stored once deduplicated (what deduplication saves). Aggregated by the
    /// database; only the first --limit entries are fetched. `usage --html FILE` writes
    /// it all as one self-contained page of charts.
    Usage(UsageCommand),
    /// Move a whole repository between ours and a matrix-media-repo deployment, media by
    /// media, without an archive: `push` ours into MMR, `pull` MMR into ours.
    #[command(subcommand)]
    Mmr(MmrMove),
    /// Check every recorded datastore against the rows: rows whose object is missing,
    /// objects no row points at (orphans), stale temporary files, queued deletions not
    /// yet carried out, and with --deep objects whose size or SHA-256 differ from their
    /// row. Changes nothing unless --fix. Exit code 1 when problems remain.
    Check {
        /// Read and hash every object (as long as reading the whole store takes).
        #[arg(long)]
        deep: bool,
        /// Repair what is safe to repair: delete orphan objects (through the deletion
        /// queue) and stale temporary files, carry out queued deletions. A missing or
        /// damaged object is only reported: its rows are kept, for a restore or a new
        /// import.
        #[arg(long)]
        fix: bool,
        #[command(flatten)]
        repository: RepoDb,
        #[command(flatten)]
        report: ReportArgs,
    },
}

/// `media_admin mmr …`: which way a whole repository moves. Each media is read where
/// its row says, its bytes copied (hashed while they stream, checked against the row)
/// only when the destination does not hold them already, and recorded with its
/// thumbnails, a page at a time. Resumable and idempotent: a re-run skips what the
/// destination records and writes nothing more. Exit code 1 when some media failed
/// (they are listed; nothing of them was written).
#[derive(Debug, Subcommand)]
pub(crate) enum MmrMove {
    /// Our repository into the matrix-media-repo deployment: rows as MMR writes them,
    /// bytes content-addressed into the datastore MMR picks for each kind.
    Push {
        #[command(flatten)]
        mmr: MmrArgs,
        #[command(flatten)]
        repository: RepoDb,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// The matrix-media-repo deployment into our repository (created if missing): new
    /// bytes go to --datastore.
    Pull {
        #[command(flatten)]
        mmr: MmrArgs,
        #[command(flatten)]
        repository: media_cli::RepositoryArgs,
        #[command(flatten)]
        report: ReportArgs,
    },
}

/// The deployment and the run's flags, for both directions.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MmrArgs {
    /// The deployment's media-repo.yaml (MMR's -config).
    #[arg(long, env = "MMR_CONFIG", value_name = "MEDIA_REPO_YAML")]
    pub(crate) mmr_config: PathBuf,
    /// Report what would move; copy, record and delete nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Copies in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) workers: u16,
}

impl MmrMove {
    /// The deployment and run flags.
    pub(crate) fn mmr(&self) -> &MmrArgs {
        match self {
            Self::Push { mmr, .. } | Self::Pull { mmr, .. } => mmr,
        }
    }
}

/// `media_admin usage …`: a ranking, or with --html the page of charts.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct UsageCommand {
    /// Write a self-contained HTML page (inline SVG charts, no script, no external file):
    /// bytes by origin, by uploader and by month of upload, and what deduplication saves
    /// per origin (the --limit largest origins and uploaders).
    #[arg(long, value_name = "FILE", required = true)]
    pub(crate) html: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) run: UsageRun,
    #[command(subcommand)]
    pub(crate) what: Option<UsageWhat>,
}

impl UsageCommand {
    /// The flags of the ranking given, or of the page.
    pub(crate) fn run(&self) -> &UsageRun {
        self.what.as_ref().map_or(&self.run, UsageWhat::run)
    }
}

/// What `usage` ranks.
#[derive(Debug, Subcommand)]
pub(crate) enum UsageWhat {
    /// Servers (media origins), local and remote.
    Servers {
        #[command(flatten)]
        run: UsageRun,
    },
    /// Uploaders of local media.
    Users {
        /// Only these users (@NAME:SERVER); every uploader when none is given.
        users: Vec<UserId>,
        #[command(flatten)]
        run: UsageRun,
    },
    /// Media, by size.
    Uploads {
        /// Only these media (mxc://SERVER/MEDIA_ID); every media when none is given.
        mxc: Vec<MxcUri>,
        #[command(flatten)]
        run: UsageRun,
    },
}

/// The flags every usage form takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct UsageRun {
    /// List at most this many, the largest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) limit: u32,
    #[command(flatten)]
    pub(crate) repository: RepoDb,
    #[command(flatten)]
    pub(crate) report: ReportArgs,
}

impl UsageWhat {
    /// The flags every form shares.
    pub(crate) fn run(&self) -> &UsageRun {
        match self {
            Self::Servers { run } | Self::Users { run, .. } | Self::Uploads { run, .. } => run,
        }
    }
}

/// `media_admin attributes …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Attributes {
    /// Show a media's attributes.
    Get {
        /// The media: mxc://SERVER/MEDIA_ID.
        mxc: MxcUri,
        #[command(flatten)]
        repository: RepoDb,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Set a media's attributes.
    Set {
        /// The media: mxc://SERVER/MEDIA_ID.
        mxc: MxcUri,
        /// Its purpose.
        #[arg(long, value_enum)]
        purpose: PurposeArg,
        #[command(flatten)]
        repository: RepoDb,
        #[command(flatten)]
        report: ReportArgs,
    },
}

/// `--purpose` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PurposeArg {
    /// An ordinary media.
    None,
    /// Never quarantined, nor purged by the bulk purges.
    Pinned,
}

impl From<PurposeArg> for media_core::records::Purpose {
    fn from(arg: PurposeArg) -> Self {
        match arg {
            PurposeArg::None => Self::None,
            PurposeArg::Pinned => Self::Pinned,
        }
    }
}

/// What `quarantine`/`unquarantine` applies to.
#[derive(Debug, Subcommand)]
pub(crate) enum QuarantineWhat {
    /// Named media.
    Media {
        /// The media: mxc://SERVER/MEDIA_ID, one or more.
        #[arg(required = true)]
        mxc: Vec<MxcUri>,
        #[command(flatten)]
        run: QuarantineRun,
    },
    /// Every media a user uploaded.
    User {
        /// The user: @NAME:SERVER.
        user: UserId,
        #[command(flatten)]
        run: QuarantineRun,
    },
    /// Every media of a server recorded now (the server is not flagged for the future).
    Server {
        /// The server name.
        name: ServerName,
        #[command(flatten)]
        run: QuarantineRun,
    },
    /// Every media posted in a room, as import_synapse --include rooms recorded it
    /// from the room's events.
    Room {
        /// The room ID: !OPAQUE:SERVER.
        room: RoomId,
        #[command(flatten)]
        run: QuarantineRun,
    },
}

/// The flags every quarantine form takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct QuarantineRun {
    /// Who quarantines, recorded with the media (e.g. @admin:example.org).
    #[arg(long, value_name = "USER_ID")]
    pub(crate) by: Option<UserId>,
    /// Media per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) batch: u32,
    #[command(flatten)]
    pub(crate) repository: RepoDb,
    #[command(flatten)]
    pub(crate) report: ReportArgs,
}

/// What `purge` deletes.
#[derive(Debug, Subcommand)]
pub(crate) enum PurgeWhat {
    /// Media of origins that are not ours, downloaded before a moment. Ours: those
    /// given with --local-server and those the repository's import_synapse runs
    /// recorded.
    Remote {
        /// A date (2026-01-31), a time (2026-01-31T12:00:00Z), Unix milliseconds or an
        /// age (30d, 12h).
        #[arg(long, value_name = "MOMENT")]
        before: Moment,
        #[command(flatten)]
        run: PurgeRun,
    },
    /// Quarantined media, local or remote, and the unpinned media sharing their bytes;
    /// the bytes are deleted and stay blocked for every import.
    Quarantined {
        #[command(flatten)]
        run: PurgeRun,
    },
    /// Named media, pinned and quarantined ones too.
    Media {
        /// The media: mxc://SERVER/MEDIA_ID, one or more.
        #[arg(required = true)]
        mxc: Vec<MxcUri>,
        #[command(flatten)]
        run: PurgeRun,
    },
    /// Media a user uploaded.
    User {
        /// The user: @NAME:SERVER.
        user: UserId,
        /// Only media uploaded before this moment.
        #[arg(long, value_name = "MOMENT")]
        before: Option<Moment>,
        #[command(flatten)]
        run: PurgeRun,
    },
    /// Media of a server, local or remote.
    Server {
        /// The server name.
        name: ServerName,
        /// Only media created before this moment.
        #[arg(long, value_name = "MOMENT")]
        before: Option<Moment>,
        #[command(flatten)]
        run: PurgeRun,
    },
    /// Media posted in a room, as import_synapse --include rooms recorded it from the
    /// room's events.
    Room {
        /// The room ID: !OPAQUE:SERVER.
        room: RoomId,
        /// Only media created before this moment.
        #[arg(long, value_name = "MOMENT")]
        before: Option<Moment>,
        #[command(flatten)]
        run: PurgeRun,
    },
    /// Media nobody accessed since a moment (never accessed: created before it); remote
    /// only unless --include-local.
    Old {
        /// The moment.
        #[arg(long, value_name = "MOMENT")]
        unaccessed_since: Moment,
        /// Purge our own servers' media too.
        #[arg(long)]
        include_local: bool,
        #[command(flatten)]
        run: PurgeRun,
    },
}

/// The flags every purge form takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PurgeRun {
    /// Report what would be purged; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// A server of ours (repeatable), added to those the repository's imports recorded.
    #[arg(long = "local-server", value_name = "NAME")]
    pub(crate) local_servers: Vec<ServerName>,
    /// Media per transaction.
    #[arg(long, default_value_t = media_admin::purge::DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) batch: u32,
    #[command(flatten)]
    pub(crate) repository: RepoDb,
    #[command(flatten)]
    pub(crate) report: ReportArgs,
}

/// `media_admin tasks …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Tasks {
    /// Every recorded run, oldest first.
    List {
        /// Only runs not recorded as finished (running, or stopped).
        #[arg(long)]
        unfinished: bool,
        #[command(flatten)]
        repository: RepoDb,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// One recorded run.
    Show {
        /// Its ID.
        id: i64,
        #[command(flatten)]
        repository: RepoDb,
        #[command(flatten)]
        report: ReportArgs,
    },
}

/// `media_admin datastores …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Datastores {
    /// Each datastore the repository records: ID, URI, identity marker, media, blobs,
    /// bytes, thumbnails and queued deletions. Reads the repository only: no datastore
    /// is opened, so it works while one is offline.
    List {
        #[command(flatten)]
        repository: RepoDb,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// What a transfer out of a datastore would move: distinct blobs and bytes.
    Estimate {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        repository: RepoDb,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Move every blob of a datastore into another: each blob is copied (hashed while it
    /// streams), verified in the destination, its row switched in one transaction per
    /// batch, and its source object deleted after commit. Safe to stop anywhere (even
    /// kill -9) and run again: nothing is lost and no stray object stays. Exit code 1
    /// when some blobs failed (they are listed; their source is untouched), 3 when the
    /// destination refused too many writes in a row.
    Transfer {
        #[command(flatten)]
        source: Source,
        /// The destination datastore: file:///path, a bare path or s3://bucket/prefix?…;
        /// recorded (and marked) like any new datastore.
        #[arg(long, value_name = "URI")]
        to: String,
        /// The source's location when it is no longer where the repository records it
        /// (it is checked by its identity marker).
        #[arg(long, value_name = "URI")]
        from_uri: Option<String>,
        /// Report what would move; write, record and delete nothing (the destination is
        /// not even recorded).
        #[arg(long)]
        dry_run: bool,
        /// Copies in flight at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: u16,
        /// How each copy is checked in the destination before its row is switched (its
        /// bytes are always hashed on the way in and checked against the row):
        /// `received` trusts what the destination confirmed receiving (S3 checks each
        /// body's signed SHA-256) and reads back copies it already held; `hash` reads
        /// every copy back and hashes it; `size` checks sizes only.
        #[arg(long, value_enum, default_value_t = VerifyArg::Received)]
        verify: VerifyArg,
        #[command(flatten)]
        repository: RepoDb,
        #[command(flatten)]
        report: ReportArgs,
    },
}

/// The datastore a transfer (or its estimate) empties.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Source {
    /// The recorded datastore to move blobs out of: its ID (`3` or `#3`, see
    /// `datastores list`) or its recorded URI.
    #[arg(long, value_name = "DATASTORE")]
    pub(crate) from: DatastoreSelector,
    /// Only blobs created before this moment: a date (2026-01-31), a time
    /// (2026-01-31T12:00:00Z), Unix milliseconds or an age (30d, 12h).
    #[arg(long, value_name = "MOMENT")]
    pub(crate) before: Option<Moment>,
}

/// Our repository's database. (`--datastore` of the other tools has no meaning here: the
/// datastores are named by the repository's records.)
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RepoDb {
    /// Our repository database: a path (SQLite file), sqlite://…, postgres://… or
    /// PostgreSQL key=value settings.
    #[arg(
        long = "repo-db",
        help_heading = REPOSITORY_HEADING,
        visible_alias = "db",
        value_name = "REPO_DB",
        env = "MEDIA_REPO_DB",
        default_value = "sqlite://media-repo.db"
    )]
    pub(crate) db: String,
}

/// `--verify` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum VerifyArg {
    /// Trust what the destination confirmed receiving; read back what it already held.
    Received,
    /// Read each copy back and hash it.
    Hash,
    /// Check each copy's size only.
    Size,
}

impl From<VerifyArg> for Verify {
    fn from(arg: VerifyArg) -> Self {
        match arg {
            VerifyArg::Received => Verify::Received,
            VerifyArg::Hash => Verify::Hash,
            VerifyArg::Size => Verify::Size,
        }
    }
}

/// Examples printed after the options.
const EXAMPLES: &str = "\
Examples:
  # What each datastore holds:
  media_admin datastores list --repo-db postgres://media@db/media

  # What moving datastore #1's blobs older than 90 days would move:
  media_admin datastores estimate --from 1 --before 90d --repo-db postgres://media@db/media

  # Move them into a bucket (a dry run first):
  media_admin datastores transfer --from 1 --before 90d --dry-run \\
      --to 's3://media/old?endpoint=http://127.0.0.1:3900&region=garage'
  media_admin datastores transfer --from 1 --before 90d --workers 8 \\
      --to 's3://media/old?endpoint=http://127.0.0.1:3900&region=garage'

  # Pin an avatar, quarantine abuse everywhere its bytes are:
  media_admin attributes set mxc://example.org/avatar123 --purpose pinned
  media_admin quarantine media mxc://example.org/abuse456 --by @admin:example.org

  # Purge remote media older than 30 days (a dry run first), then quarantined media:
  media_admin purge remote --before 30d --dry-run
  media_admin purge remote --before 30d
  media_admin purge quarantined

  # A room's media (recorded by import_synapse --include rooms), pinned ones left alone:
  media_admin quarantine room '!abuse:example.org' --by @admin:example.org
  media_admin purge room '!abuse:example.org' --dry-run

  # What ran:
  media_admin tasks list --unfinished

  # Who uses the space, and what deduplication saves:
  media_admin usage servers --limit 10
  media_admin usage users @alice:example.org @bob:example.org
  media_admin usage --html usage.html

  # Check every datastore against the rows (hashing every object), then repair what is
  # safe to repair:
  media_admin check --deep
  media_admin check --fix";

impl Datastores {
    /// The report flags of whichever subcommand was given.
    fn report(&self) -> &ReportArgs {
        match self {
            Self::List { report, .. }
            | Self::Estimate { report, .. }
            | Self::Transfer { report, .. } => report,
        }
    }
}

impl PurgeWhat {
    /// What this form purges.
    pub(crate) fn target(&self) -> PurgeTarget {
        match self {
            Self::Remote { before, .. } => PurgeTarget::Remote { before: *before },
            Self::Quarantined { .. } => PurgeTarget::Quarantined,
            Self::Media { mxc, .. } => PurgeTarget::Media(media_keys(mxc)),
            Self::User { user, before, .. } => PurgeTarget::User {
                user: user.clone(),
                before: *before,
            },
            Self::Server { name, before, .. } => PurgeTarget::Server {
                origin: name.clone(),
                before: *before,
            },
            Self::Room { room, before, .. } => PurgeTarget::Room {
                room: room.clone(),
                before: *before,
            },
            Self::Old {
                unaccessed_since,
                include_local,
                ..
            } => PurgeTarget::Old {
                unaccessed_since: *unaccessed_since,
                locality: if *include_local {
                    Locality::IncludeLocal
                } else {
                    Locality::RemoteOnly
                },
            },
        }
    }

    /// The flags every form shares.
    pub(crate) fn run(&self) -> &PurgeRun {
        match self {
            Self::Remote { run, .. }
            | Self::Quarantined { run }
            | Self::Media { run, .. }
            | Self::User { run, .. }
            | Self::Server { run, .. }
            | Self::Room { run, .. }
            | Self::Old { run, .. } => run,
        }
    }
}

/// The media the MXC URIs name.
pub(crate) fn media_keys(mxc: &[MxcUri]) -> Vec<MediaKey> {
    mxc.iter().cloned().map(MediaKey::from).collect()
}

impl QuarantineWhat {
    /// What this form quarantines (or lifts).
    pub(crate) fn target(&self) -> QuarantineTarget {
        match self {
            Self::Media { mxc, .. } => QuarantineTarget::Media(media_keys(mxc)),
            Self::User { user, .. } => QuarantineTarget::User(user.clone()),
            Self::Server { name, .. } => QuarantineTarget::Server(name.clone()),
            Self::Room { room, .. } => QuarantineTarget::Room(room.clone()),
        }
    }

    /// The flags every form shares.
    pub(crate) fn run(&self) -> &QuarantineRun {
        match self {
            Self::Media { run, .. }
            | Self::User { run, .. }
            | Self::Server { run, .. }
            | Self::Room { run, .. } => run,
        }
    }
}

impl Cli {
    fn report(&self) -> &ReportArgs {
        match &self.command {
            Command::Datastores(datastores) => datastores.report(),
            Command::Attributes(
                Attributes::Get { report, .. } | Attributes::Set { report, .. },
            )
            | Command::Tasks(Tasks::List { report, .. } | Tasks::Show { report, .. })
            | Command::Check { report, .. } => report,
            Command::Usage(usage) => &usage.run().report,
            Command::Quarantine(what) | Command::Unquarantine(what) => &what.run().report,
            Command::Purge(what) => &what.run().report,
            Command::Mmr(MmrMove::Push { report, .. } | MmrMove::Pull { report, .. }) => report,
        }
    }
}

impl media_cli::ToolArgs for Cli {
    fn output(&self) -> Output {
        self.report().output()
    }

    fn verbosity(&self) -> Verbosity {
        self.report().verbosity
    }
}
