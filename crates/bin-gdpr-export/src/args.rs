//! `gdpr_export`'s command line: its flags, their help texts and what they ask for.

use std::path::PathBuf;

use clap::Parser;
use media_archive::{Compression, WriterOptions};
use media_cli::{Output, Verbosity};
use media_core::ids::ServerName;
use media_gdpr::{Entity, ExportOptions, MediaBytes};

/// matrix-media-repo's `gdpr_export` flags, accepted as aliases.
pub(crate) const MMR_FLAGS: &[(&str, &str)] = &[
    ("entity", "entity"),
    ("destination", "destination"),
    ("partSize", "part-size"),
    ("includeData", "include-data"),
    ("config", "mmr-config"),
];

/// Write one user's uploads, or every media of one server, as a matrix-media-repo v2
/// archive: export-part-N.tgz files and export-manifest.tgz (manifest.json and a readable
/// index.html). Bytes shared by several media are written once; quarantined media are
/// left out. The files are readable by their owner only.
#[derive(Debug, Parser)]
#[command(name = "gdpr_export", version, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// Whose media: a user ID (@alice:example.org: that user's uploads) or a server name
    /// (example.org: every media of that origin).
    #[arg(long, env = "GDPR_ENTITY")]
    pub(crate) entity: Entity,

    /// The folder to write the archive into (created when missing).
    #[arg(long, env = "GDPR_DESTINATION", default_value = "./gdpr-data")]
    pub(crate) destination: PathBuf,

    /// Replace an export already in the destination.
    #[arg(long, env = "GDPR_FORCE")]
    pub(crate) force: bool,

    /// Close a part once it holds this much (uncompressed): e.g. 200MiB, 1G, 104857600.
    #[arg(long, env = "GDPR_PART_SIZE", default_value = "200MiB", value_parser = media_cli::parse_byte_size)]
    pub(crate) part_size: u64,

    /// Write the media bytes; --include-data=false writes a metadata-only archive.
    #[arg(long, env = "GDPR_INCLUDE_DATA", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) include_data: bool,

    /// Sync the archive to disk before it counts as complete; --fsync=false skips that
    /// (faster, for archives copied elsewhere at once).
    #[arg(long, env = "GDPR_FSYNC", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) fsync: bool,

    /// How archive entries are compressed.
    #[arg(
        long,
        env = "GDPR_COMPRESSION",
        default_value = "auto",
        value_parser = compression_values()
    )]
    pub(crate) compression: Compression,

    /// Export straight from a Synapse database (homeserver.db path or postgres:// URL)
    /// instead of our repository; needs --media-store.
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB", requires = "media_store")]
    pub(crate) synapse_db: Option<String>,

    /// Synapse's media_store_path, with --synapse-db.
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_MEDIA_STORE", requires = "synapse_db")]
    pub(crate) media_store: Option<PathBuf>,

    /// The Synapse server's name, with --synapse-db; derived from its users (and
    /// checked) when omitted.
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_SERVER_NAME", requires = "synapse_db")]
    pub(crate) server_name: Option<ServerName>,

    #[command(flatten)]
    pub(crate) repository: media_cli::RepositoryArgs,

    /// Export from a matrix-media-repo deployment instead of our repository: its
    /// media-repo.yaml (MMR's -config). Its PostgreSQL database and its file or S3
    /// datastores are only read.
    #[arg(
        long,
        help_heading = "matrix-media-repo (to export from it instead of our repository)",
        env = "MMR_CONFIG",
        value_name = "MEDIA_REPO_YAML",
        conflicts_with_all = ["db", "datastore", "synapse_db"]
    )]
    pub(crate) mmr_config: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) report: media_cli::ReportArgs,
}

/// The help heading of the flags that export from a Synapse instead of our repository.
const SYNAPSE: &str = "Synapse (to export from it instead of our repository)";

/// Examples printed after the options.
const EXAMPLES: &str = "\
Examples:
  # One user's uploads from our repository, in parts of at most 1 GiB:
  gdpr_export --entity @alice:example.org --destination ./alice \\
      --repo-db /var/lib/media-repo/repo.db --datastore /var/lib/media-repo/store --part-size 1G

  # Every media of one server out of a matrix-media-repo deployment (its own flags),
  # metadata only (no media bytes):
  gdpr_export -config /etc/matrix-media-repo/media-repo.yaml -entity example.org \\
      --include-data=false -destination ./example.org

  # Straight from a Synapse, without importing it first:
  gdpr_export --entity @alice:example.org --synapse-db /var/lib/synapse/homeserver.db \\
      --media-store /var/lib/synapse/media_store";

/// The `--compression` values, listed in `--help` (with what each does) and parsed by
/// [`Compression`]'s own parser.
fn compression_values() -> impl clap::builder::TypedValueParser<Value = Compression> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([
        PossibleValue::new("auto")
            .help("Deflate text (JSON, HTML, SVG…), store media that is compressed already"),
        PossibleValue::new("none").help("Store every entry as it is"),
        PossibleValue::new("fast").help("Deflate every entry at the fastest level"),
        PossibleValue::new("best").help("Deflate every entry at the best level"),
    ])
    .try_map(|value| value.parse::<Compression>())
}

impl Cli {
    /// What to export, and how the archive is written.
    pub(crate) fn export_options(&self) -> ExportOptions {
        ExportOptions {
            entity: self.entity.clone(),
            destination: self.destination.clone(),
            writer: WriterOptions {
                part_size: self.part_size,
                compression: self.compression,
                replace: self.force,
                sync: self.fsync,
            },
            media_bytes: MediaBytes::from_include_data(self.include_data),
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
