//! `import_synapse`: Move a Synapse media store into the deduplicating media repository.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

use std::process::ExitCode;

use clap::Parser;

/// Move a Synapse media store into the deduplicating media repository.
#[derive(Debug, Parser)]
#[command(name = "import_synapse", version)]
struct Cli {
    #[command(flatten)]
    verbosity: media_cli::Verbosity,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.verbosity.init_logging();
    media_cli::not_available_yet("import_synapse", 4)
}
