//! `gdpr_import`'s command line: its flags, their help texts and what they ask for.

use std::path::PathBuf;

use clap::Parser;
use media_cli::{Output, Verbosity};
use media_gdpr::Entity;
use media_gdpr::import::Mode;

/// matrix-media-repo's `gdpr_import` flags, accepted as aliases.
pub(crate) const MMR_FLAGS: &[(&str, &str)] = &[
    ("directory", "directory"),
    ("verify", "verify"),
    ("onlyEntity", "only-entity"),
    ("config", "mmr-config"),
];

/// Import a matrix-media-repo archive (version 2, or the older layout) into the
/// repository. Every record's bytes are checked against the manifest's SHA-256 and size
/// before anything is written; records already present are skipped, so a re-run
/// resumes. Exit code 1 when some records were not imported (they are listed).
#[derive(Debug, Parser)]
#[command(name = "gdpr_import", version, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// The folder holding the archive's .tgz files.
    #[arg(long, env = "GDPR_DIRECTORY", default_value = "./gdpr-data")]
    pub(crate) directory: PathBuf,

    /// Write nothing: check that every record is in the repository with the same bytes
    /// and that every archive entry matches its manifest; exit code 1 if anything is
    /// missing or different.
    #[arg(long, env = "GDPR_VERIFY")]
    pub(crate) verify: bool,

    /// Only import this user's uploads (@alice:example.org) or this server's media.
    #[arg(long, env = "GDPR_ONLY_ENTITY")]
    pub(crate) only_entity: Option<Entity>,

    /// Also import records whose origin is not the archive's server, or whose uploader
    /// is on another server than their origin.
    #[arg(long, env = "GDPR_ALLOW_FOREIGN_ORIGINS")]
    pub(crate) allow_foreign_origins: bool,

    #[command(flatten)]
    pub(crate) repository: media_cli::RepositoryArgs,

    /// Import into a matrix-media-repo deployment instead of our repository: its
    /// media-repo.yaml (MMR's -config). Rows and bytes are written as MMR writes them;
    /// with --verify, only read.
    #[arg(
        long,
        help_heading = "matrix-media-repo (where the archive is imported to, instead)",
        env = "MMR_CONFIG",
        value_name = "MEDIA_REPO_YAML",
        conflicts_with_all = ["db", "datastore"]
    )]
    pub(crate) mmr_config: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) report: media_cli::ReportArgs,
}

/// Examples printed after the options.
const EXAMPLES: &str = "\
Examples:
  # Import an archive (e.g. gdpr_export's, or matrix-media-repo's) into our repository:
  gdpr_import --directory ./alice \\
      --repo-db /var/lib/media-repo/repo.db --datastore /var/lib/media-repo/store

  # Check, writing nothing, that everything in the archive is in the repository:
  gdpr_import --directory ./alice --verify \\
      --repo-db /var/lib/media-repo/repo.db --datastore /var/lib/media-repo/store

  # Only one user's uploads out of a whole server's archive, into a matrix-media-repo
  # deployment (its own flags; -verify checks it afterwards):
  gdpr_import -config /etc/matrix-media-repo/media-repo.yaml -directory ./example.org \\
      -onlyEntity @alice:example.org";

impl Cli {
    /// Import, or (`--verify`) check an import without writing.
    pub(crate) fn mode(&self) -> Mode {
        if self.verify {
            Mode::Verify
        } else {
            Mode::Import
        }
    }
}

impl media_cli::ToolArgs for Cli {
    fn output(&self) -> Output {
        self.report.output()
    }

    fn verbosity(&self) -> Verbosity {
        self.report.verbosity
    }
}
