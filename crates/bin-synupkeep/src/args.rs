//! `synupkeep`'s command line: synupkeep's own arguments and environment variables,
//! unchanged, plus the toolkit's `--dry-run`, `--json`, `-q` and `-v`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use media_cli::{Output, ReportArgs, RunError, Verbosity};
use media_core::moment::Moment;
use media_core::run::RunMode;
use media_db::DatabaseLocation;
use media_upkeep::SynupkeepOptions;
use media_upkeep::admin_api::AdminApi;

/// Purges a Synapse's room history, local media and cached remote media older than a
/// delta, as synupkeep does and with its arguments, but with Synapse's own media
/// semantics: last access (else creation) decides the age; quarantined, protected, empty
/// and never-uploaded media and avatars (profiles, memberships, user directory, room
/// state) stay; thumbnails go with their media; no empty folder is left behind.
#[derive(Debug, Parser)]
#[command(name = "synupkeep", version, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// Synapse's PostgreSQL database as libpq key=value settings ("host=… port=… user=…
    /// dbname=… password=…"), a postgres:// URL, or the path of a SQLite homeserver.db.
    #[arg(
        env = "SYNUPKEEP_POSTGRES_CONNECTION_STRING",
        hide_env_values = true,
        value_name = "POSTGRES_CONNECTION_STRING"
    )]
    pub(crate) connection_string: Option<String>,

    /// The access token of a Synapse server admin.
    #[arg(
        env = "SYNUPKEEP_SYNAPSE_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "SYNAPSE_AUTH_TOKEN"
    )]
    pub(crate) auth_token: Option<String>,

    /// Seconds: what is older than now minus this goes.
    #[arg(short, long, env = "SYNUPKEEP_DELTA", default_value_t = 86_400)]
    pub(crate) delta: u64,

    /// Synapse's address; the admin API's paths are joined to it.
    #[arg(
        short = 'a',
        long,
        env = "SYNUPKEEP_SYNAPSE_API_URL",
        default_value = "http://localhost:8008/"
    )]
    pub(crate) api_url: String,

    /// Synapse's media_store_path.
    #[arg(
        short,
        long,
        env = "SYNUPKEEP_MEDIA_STORE_PATH",
        default_value = "/data/media_store"
    )]
    pub(crate) media_store: PathBuf,

    /// The log level (synupkeep's names); overrides -q and -v.
    #[arg(short, long, env = "SYNUPKEEP_LOGGING_LEVEL", ignore_case = true)]
    pub(crate) logging_level: Option<LoggingLevel>,

    /// Change nothing; list the rooms and the events their history would be purged up
    /// to, and what both media purges would delete.
    #[arg(long)]
    pub(crate) dry_run: bool,

    #[command(flatten)]
    pub(crate) report: ReportArgs,
}

/// synupkeep's log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub(crate) enum LoggingLevel {
    /// Everything.
    Trace,
    /// Details.
    Debug,
    /// Each step and each room (synupkeep's default).
    Info,
    /// As INFO.
    Success,
    /// Warnings and errors.
    Warning,
    /// Errors only.
    Error,
    /// As ERROR.
    Critical,
}

impl LoggingLevel {
    /// The toolkit's verbosity that logs at this level.
    fn verbosity(self) -> Verbosity {
        let (quiet, verbose) = match self {
            Self::Trace => (false, 3),
            Self::Debug => (false, 2),
            Self::Info | Self::Success => (false, 1),
            Self::Warning => (false, 0),
            Self::Error | Self::Critical => (true, 0),
        };
        Verbosity { quiet, verbose }
    }
}

const EXAMPLES: &str = "\
Examples:
  # synupkeep's own invocation: purge what is older than a week
  synupkeep 'host=127.0.0.1 port=5432 user=synapse dbname=synapse password=secret' \"$TOKEN\" \\
      -d 604800 -a http://localhost:8008/ -m /data/media_store

  # The same from the environment, first as a dry run
  export SYNUPKEEP_POSTGRES_CONNECTION_STRING='host=db user=synapse dbname=synapse'
  export SYNUPKEEP_SYNAPSE_AUTH_TOKEN=syt_...
  synupkeep --dry-run

  # A SQLite Synapse: its homeserver.db instead of the connection string
  synupkeep /var/lib/synapse/homeserver.db \"$TOKEN\" -m /var/lib/synapse/media_store --json

Local media are deleted directly in the database and the media store, as synupkeep
does; the remote cache may be purged while Synapse runs.";

impl Cli {
    /// What to run, with its options.
    pub(crate) fn options(&self) -> Result<SynupkeepOptions, RunError> {
        let connection = self.connection_string.as_deref().ok_or_else(|| {
            RunError::usage(
                "give Synapse's database: a PostgreSQL connection string (\"host=… user=… \
                 dbname=…\") or the path of homeserver.db, as the first argument or in \
                 SYNUPKEEP_POSTGRES_CONNECTION_STRING",
            )
        })?;
        let token = self.auth_token.as_deref().ok_or_else(|| {
            RunError::usage(
                "give the access token of a Synapse server admin, as the second argument or \
                 in SYNUPKEEP_SYNAPSE_AUTH_TOKEN",
            )
        })?;
        let synapse_db: DatabaseLocation = connection.parse().map_err(RunError::of)?;
        let admin_api = AdminApi::new(&self.api_url, token).map_err(RunError::of)?;
        let cutoff = self
            .delta
            .checked_mul(1000)
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(|ms| Moment::now().unix_ms().checked_sub(ms))
            .map(Moment::from_unix_ms)
            .ok_or_else(|| {
                RunError::usage(format_args!("--delta {} seconds is too large", self.delta))
            })?;
        Ok(SynupkeepOptions {
            synapse_db,
            media_store: self.media_store.clone(),
            admin_api,
            cutoff,
            mode: RunMode::from_dry_run(self.dry_run),
        })
    }
}

impl media_cli::ToolArgs for Cli {
    fn output(&self) -> Output {
        self.report.output()
    }

    fn verbosity(&self) -> Verbosity {
        match self.logging_level {
            Some(level) => level.verbosity(),
            None => self.report.verbosity,
        }
    }
}
