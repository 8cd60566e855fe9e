//! `gdpr_import`: Read a matrix-media-repo archive back into the repository, verifying every byte.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

use std::process::ExitCode;

use clap::Parser;

/// Read a matrix-media-repo archive back into the repository, verifying every byte.
#[derive(Debug, Parser)]
#[command(name = "gdpr_import", version)]
struct Cli {
    #[command(flatten)]
    verbosity: media_cli::Verbosity,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.verbosity.init_logging();
    media_cli::not_available_yet("gdpr_import", 5)
}
