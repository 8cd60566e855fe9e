//! `cleanmedia`'s command line: its flags, their help texts and what they ask for. The
//! short flags are the Python cleanmedia's, so existing cron lines keep working.

use std::path::PathBuf;

use clap::Parser;
use media_cli::{Output, RunError, Verbosity};
use media_core::run::RunMode;
use media_dendrite::{Repair, Request};

/// Media retention for Dendrite: purge remote media older than --days (and local media
/// with --local), never media in use as avatars nor a hash directory other media still
/// use; check the database against the media folder (repair with --fix).
#[derive(Debug, Parser)]
#[command(name = "cleanmedia", version, after_help = SAFETY_HELP)]
pub(crate) struct Cli {
    /// Dendrite's config file (dendrite.yaml).
    #[arg(
        short = 'c',
        long,
        env = "CLEANMEDIA_CONFIG",
        default_value = "config.yaml"
    )]
    pub(crate) config: PathBuf,

    /// Keep media younger than this many days.
    #[arg(short = 't', long, env = "CLEANMEDIA_DAYS", default_value_t = 30)]
    pub(crate) days: u32,

    /// Purge local users' media too (avatars are always kept).
    #[arg(short = 'l', long, env = "CLEANMEDIA_LOCAL")]
    pub(crate) local: bool,

    /// Change nothing; report what a real run would do.
    #[arg(
        short = 'n',
        long,
        visible_alias = "dry-run",
        env = "CLEANMEDIA_DRYRUN"
    )]
    pub(crate) dryrun: bool,

    /// Purge one media, of any age: a bare media ID (as the Python tool; refused when
    /// several origins use it) or mxc://origin/media_id. An avatar is kept.
    #[arg(short = 'm', long, env = "CLEANMEDIA_MXID", conflicts_with = "userid")]
    pub(crate) mxid: Option<String>,

    /// Purge every media this user (@user:server) uploaded, of any age (avatars kept).
    #[arg(short = 'u', long, env = "CLEANMEDIA_USERID")]
    pub(crate) userid: Option<String>,

    /// Repair what the sanity checks find (orphan thumbnail rows, remote rows without
    /// their file except avatars, directories no row uses, stale tmp/ directories named
    /// as Dendrite names them).
    #[arg(long, env = "CLEANMEDIA_FIX")]
    pub(crate) fix: bool,

    /// The table of file systems that should be mounted: a mount point in it at or
    /// above media_api.base_path must be mounted, or the run is refused.
    #[arg(long, env = "CLEANMEDIA_FSTAB", default_value = "/etc/fstab")]
    pub(crate) fstab: PathBuf,

    /// Dendrite's working directory: relative paths in the config resolve against it.
    #[arg(long, env = "CLEANMEDIA_WORKDIR")]
    pub(crate) workdir: Option<PathBuf>,

    /// Print the report as JSON on stdout.
    #[arg(long, env = "CLEANMEDIA_JSON")]
    pub(crate) json: bool,

    /// Log debug detail (the Python tool's -d).
    #[arg(short = 'd', long, env = "CLEANMEDIA_DEBUG", conflicts_with = "quiet")]
    pub(crate) debug: bool,

    #[command(flatten)]
    pub(crate) verbosity: media_cli::Verbosity,
}

/// Examples, then what every run checks before it changes anything (printed after the
/// options).
const SAFETY_HELP: &str = "\
Examples:
  # See what purging remote media older than 90 days would do (the Python tool's flags):
  cleanmedia -c /etc/dendrite/dendrite.yaml -t 90 -n

  # Purge remote and local media older than 30 days, from cron:
  cleanmedia --config /etc/dendrite/dendrite.yaml --days 30 --local --quiet

  # Purge everything one user uploaded, whatever its age:
  cleanmedia -c /etc/dendrite/dendrite.yaml -u @spammer:example.org

Before changing anything, every run (dry runs too) refuses, with exit code 2:
  - a media_api.base_path that is the root directory, or that holds top-level entries
    Dendrite does not make (it makes one-letter folders and tmp/; lost+found is allowed);
  - a media folder that looks unmounted: --fstab names a mount point at or above it and
    nothing is mounted there; or the database has media rows and the folder holds no
    media at all; or more than half of 200 media rows picked at random have no file;
  - a media folder holding media while the database has no media rows (wrong database).
Avatars are never deleted, whatever the state of their file. Nothing under base_path is
followed as a link. One run at a time per media folder: a second run waits for the
first and names the process it waits for.";

impl Cli {
    /// How much is logged: -q/-v, where -d (the Python tool's debug flag) means at
    /// What to purge: one media (--mxid), one user's media (--userid) or media older
    /// than --days.
    pub(crate) fn request(&self) -> Result<Request, RunError> {
        match (&self.mxid, &self.userid) {
            (Some(media), _) => Request::media(media).map_err(RunError::of),
            (None, Some(user)) => Request::user(user).map_err(RunError::of),
            (None, None) => Ok(Request::OlderThan {
                days: self.days,
                include_local: self.local,
            }),
        }
    }

    /// A dry run (--dryrun) or a real one.
    pub(crate) fn mode(&self) -> RunMode {
        RunMode::from_dry_run(self.dryrun)
    }

    /// Whether what the sanity checks find is repaired (--fix) or only listed.
    pub(crate) fn repair(&self) -> Repair {
        if self.fix {
            Repair::Fix
        } else {
            Repair::ListOnly
        }
    }
}

impl media_cli::ToolArgs for Cli {
    fn output(&self) -> Output {
        Output::new(self.json, self.verbosity)
    }

    /// `-d` (the Python cleanmedia's debug flag) asks for at least `-vv`.
    fn verbosity(&self) -> Verbosity {
        let mut verbosity = self.verbosity;
        if self.debug {
            verbosity.verbose = verbosity.verbose.max(2);
        }
        verbosity
    }
}
