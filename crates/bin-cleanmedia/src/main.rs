//! `cleanmedia`: Media retention for Dendrite: purge old remote (and optionally local) media, keep avatars.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

use std::process::ExitCode;

use clap::Parser;

/// Media retention for Dendrite: purge old remote (and optionally local) media, keep avatars.
#[derive(Debug, Parser)]
#[command(name = "cleanmedia", version)]
struct Cli {
    #[command(flatten)]
    verbosity: media_cli::Verbosity,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.verbosity.init_logging();
    media_cli::not_available_yet("cleanmedia", 6)
}
