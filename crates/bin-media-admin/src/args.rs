//! `media_admin`'s command line: its subcommands, their flags and help texts.

use clap::{Parser, Subcommand, ValueEnum};
use media_admin::{DatastoreSelector, Verify};
use media_cli::{Output, REPOSITORY_HEADING, ReportArgs, Verbosity};
use media_core::moment::Moment;

/// Administer our media repository: its datastores, and lossless transfers between
/// them (file ⇄ S3, S3 → S3).
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
        /// How each copy is checked in the destination before its row is switched:
        /// `hash` reads it back and hashes it, `size` checks its size only.
        #[arg(long, value_enum, default_value_t = VerifyArg::Hash)]
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
    /// Read each copy back and hash it.
    Hash,
    /// Check each copy's size only.
    Size,
}

impl From<VerifyArg> for Verify {
    fn from(arg: VerifyArg) -> Self {
        match arg {
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
      --to 's3://media/old?endpoint=http://127.0.0.1:3900&region=garage'";

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

impl Cli {
    fn report(&self) -> &ReportArgs {
        match &self.command {
            Command::Datastores(datastores) => datastores.report(),
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
