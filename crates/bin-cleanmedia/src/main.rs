//! `cleanmedia`: media retention for Dendrite: purge old remote (and optionally local)
//! media, keep avatars, check the media tables against the media folder.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`). The short flags are the Python
//! cleanmedia's, so existing cron lines keep working.

mod args;

use std::process::ExitCode;
use std::sync::Arc;

use media_cli::{Exit, RunError, ToolArgs};
use media_core::Progress;
use media_dendrite::{CleanOptions, DendriteConfig};

use crate::args::Cli;

fn main() -> ExitCode {
    // No Go-style flags: the short flags are the Python cleanmedia's.
    media_cli::run_tool("cleanmedia", &[], run)
}

async fn run(cli: &Cli) -> Result<Exit, RunError> {
    let workdir = match &cli.workdir {
        Some(dir) if dir.is_dir() => dir.clone(),
        Some(dir) => {
            return Err(RunError::usage(format_args!(
                "--workdir {} is not a folder",
                dir.display()
            )));
        }
        None => std::env::current_dir()
            .map_err(|e| RunError::usage(format_args!("cannot read the current folder: {e}")))?,
    };
    let config = DendriteConfig::load(&cli.config, &workdir).map_err(RunError::of)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if !config.base_path.is_dir() {
        return Err(RunError::usage(format_args!(
            "media_api.base_path {} is not a folder (relative paths resolve against --workdir)",
            config.base_path.display()
        )));
    }
    let options = CleanOptions {
        config,
        request: cli.request()?,
        mode: cli.mode(),
        repair: cli.repair(),
        now_ms: media_core::now_ms(),
        mounts: media_dendrite::MountTables {
            fstab: cli.fstab.clone(),
            ..Default::default()
        },
    };
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(cli.output(), progress.clone());
    let report = media_dendrite::clean(&options, &progress).await;
    bar.finish();
    let report = report.map_err(RunError::of)?;
    Ok(media_cli::print_report(&report, cli.output()))
}
