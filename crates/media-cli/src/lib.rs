//! Plumbing shared by the toolkit's command-line tools, so each binary stays a thin
//! parse → wire → report → exit-code layer.
#![deny(missing_docs)]

use std::process::ExitCode;

use clap::Args;

/// The exit codes every tool of the toolkit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything was done.
    Done,
    /// 1: done, but some items failed; the report lists them.
    ItemsFailed,
    /// 2: a usage or configuration error; nothing was done.
    Usage,
    /// 3: a fatal error stopped the run.
    Fatal,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(match exit {
            Exit::Done => 0,
            Exit::ItemsFailed => 1,
            Exit::Usage => 2,
            Exit::Fatal => 3,
        })
    }
}

/// `-q`/`-v` flags, shared by every tool.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct Verbosity {
    /// Only print errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail (repeat for even more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Verbosity {
    /// Sends log lines to stderr at the chosen level; `RUST_LOG`, when set, wins.
    pub fn init_logging(self) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, 2) => "debug",
            (false, _) => "trace",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// For a tool whose job has not landed yet: says so on stderr and exits with
/// [`Exit::Usage`], so no script mistakes it for a run that did something.
pub fn not_available_yet(tool: &str, issue: u32) -> ExitCode {
    eprintln!(
        "{tool}: this build does not do this job yet (tracked as issue #{issue}); \
         nothing was read or written."
    );
    Exit::Usage.into()
}
