//! `gdpr_export`: Write one user's or one server's media as a matrix-media-repo v2 archive.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

use std::process::ExitCode;

use clap::Parser;

/// Write one user's or one server's media as a matrix-media-repo v2 archive.
#[derive(Debug, Parser)]
#[command(name = "gdpr_export", version)]
struct Cli {
    #[command(flatten)]
    verbosity: media_cli::Verbosity,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.verbosity.init_logging();
    media_cli::not_available_yet("gdpr_export", 5)
}
