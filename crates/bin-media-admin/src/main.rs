//! `media_admin`: administer our media repository: its datastores and lossless
//! transfers between them, media attributes, quarantine, purges, the task log, usage
//! and a check of the datastores.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

mod args;

use std::process::ExitCode;
use std::sync::Arc;

use media_admin::check::{CheckOptions, Depth};
use media_admin::{
    Direction, Locality, PurgeOptions, PurgeTarget, QuarantineOptions, QuarantineTarget,
    TransferOptions, UsageView,
};
use media_cli::{Exit, Output, RunError, ToolArgs};
use media_core::progress::Progress;
use media_core::records::MediaKey;
use media_core::run::RunMode;
use media_db::TaskFilter;

use crate::args::{
    Attributes, Cli, Command, Datastores, PurgeWhat, QuarantineWhat, RepoDb, Tasks, UsageCommand,
    UsageWhat,
};

#[tokio::main]
async fn main() -> ExitCode {
    media_cli::run_tool("media_admin", &[], run).await
}

async fn run(cli: &Cli) -> Result<Exit, RunError> {
    let output = cli.output();
    match &cli.command {
        Command::Datastores(command) => datastores(command, output).await,
        Command::Attributes(command) => attributes(command, output).await,
        Command::Quarantine(what) => quarantine(what, Direction::Quarantine, output).await,
        Command::Unquarantine(what) => quarantine(what, Direction::Unquarantine, output).await,
        Command::Purge(what) => purge(what, output).await,
        Command::Tasks(command) => tasks(command, output).await,
        Command::Usage(command) => usage(command, output).await,
        Command::Check {
            deep,
            fix,
            repository,
            ..
        } => check(*deep, *fix, repository, output).await,
    }
}

async fn usage(usage: &UsageCommand, output: Output) -> Result<Exit, RunError> {
    let run = usage.run();
    let repo = media_db::connect_read_only(&run.repository.db)
        .await
        .map_err(RunError::of)?;
    let exit = match &usage.what {
        Some(what) => {
            let view = match what {
                UsageWhat::Servers { .. } => UsageView::Servers,
                UsageWhat::Users { users, .. } => UsageView::Users(users.clone()),
                UsageWhat::Uploads { mxc, .. } => {
                    UsageView::Uploads(mxc.iter().cloned().map(MediaKey::from).collect())
                }
            };
            report(
                media_admin::usage::usage(&repo, &view, run.limit).await,
                output,
            )
        }
        None => {
            let path = usage
                .html
                .as_deref()
                .expect("clap requires --html without a subcommand");
            report(
                media_admin::usage_page::write_page(&repo, path, run.limit).await,
                output,
            )
        }
    };
    repo.close().await;
    exit
}

async fn check(
    deep: bool,
    fix: bool,
    repository: &RepoDb,
    output: Output,
) -> Result<Exit, RunError> {
    let mode = RunMode::from_dry_run(!fix);
    let repo = match mode {
        RunMode::DryRun => media_db::connect_read_only(&repository.db).await,
        RunMode::Apply => media_db::connect_existing(&repository.db).await,
    }
    .map_err(RunError::of)?;
    let options = CheckOptions {
        mode,
        depth: if deep {
            Depth::Content
        } else {
            Depth::Presence
        },
    };
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(output, progress.clone());
    let result = media_admin::check::check(&repo, options, progress).await;
    bar.finish();
    repo.close().await;
    report(result, output)
}

/// Prints the report of a finished job, or fails with its error.
fn report<R: media_core::run::Report, E: media_core::run::Classify + std::fmt::Display>(
    result: Result<R, E>,
    output: Output,
) -> Result<Exit, RunError> {
    Ok(media_cli::print_report(
        &result.map_err(RunError::of)?,
        output,
    ))
}

async fn attributes(command: &Attributes, output: Output) -> Result<Exit, RunError> {
    match command {
        Attributes::Get {
            mxc, repository, ..
        } => {
            let repo = media_db::connect_read_only(&repository.db)
                .await
                .map_err(RunError::of)?;
            let result = media_admin::attributes::get(&repo, &MediaKey::from(mxc.clone())).await;
            repo.close().await;
            report(result, output)
        }
        Attributes::Set {
            mxc,
            purpose,
            repository,
            ..
        } => {
            let repo = media_db::connect_existing(&repository.db)
                .await
                .map_err(RunError::of)?;
            let key = MediaKey::from(mxc.clone());
            let result = media_admin::attributes::set(&repo, &key, (*purpose).into()).await;
            repo.close().await;
            report(result, output)
        }
    }
}

async fn quarantine(
    what: &QuarantineWhat,
    direction: Direction,
    output: Output,
) -> Result<Exit, RunError> {
    let run = what.run();
    let target = match what {
        QuarantineWhat::Media { mxc, .. } => {
            QuarantineTarget::Media(mxc.iter().cloned().map(MediaKey::from).collect())
        }
        QuarantineWhat::User { user, .. } => QuarantineTarget::User(user.clone()),
        QuarantineWhat::Server { name, .. } => QuarantineTarget::Server(name.clone()),
    };
    let options = QuarantineOptions {
        target,
        direction,
        by: run.by.as_ref().map(ToString::to_string),
        batch: run.batch as usize,
    };
    let repo = media_db::connect_existing(&run.repository.db)
        .await
        .map_err(RunError::of)?;
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(output, progress.clone());
    let result = media_admin::quarantine::quarantine(&repo, &options, progress).await;
    bar.finish();
    repo.close().await;
    report(result, output)
}

async fn purge(what: &PurgeWhat, output: Output) -> Result<Exit, RunError> {
    let run = what.run();
    let target = match what {
        PurgeWhat::Remote { before, .. } => PurgeTarget::Remote { before: *before },
        PurgeWhat::Quarantined { .. } => PurgeTarget::Quarantined,
        PurgeWhat::Media { mxc, .. } => {
            PurgeTarget::Media(mxc.iter().cloned().map(MediaKey::from).collect())
        }
        PurgeWhat::User { user, before, .. } => PurgeTarget::User {
            user: user.clone(),
            before: *before,
        },
        PurgeWhat::Server { name, before, .. } => PurgeTarget::Server {
            origin: name.clone(),
            before: *before,
        },
        PurgeWhat::Old {
            unaccessed_since,
            include_local,
            ..
        } => PurgeTarget::Old {
            unaccessed_since: *unaccessed_since,
            locality: if *include_local {
                Locality::IncludeLocal
            } else {
                Locality::RemoteOnly
            },
        },
    };
    let mode = RunMode::from_dry_run(run.dry_run);
    let options = PurgeOptions {
        target,
        local_servers: run.local_servers.clone(),
        mode,
        batch: run.batch as usize,
    };
    let repo = match mode {
        RunMode::DryRun => media_db::connect_read_only(&run.repository.db).await,
        RunMode::Apply => media_db::connect_existing(&run.repository.db).await,
    }
    .map_err(RunError::of)?;
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(output, progress.clone());
    let result = media_admin::purge::purge(&repo, &options, progress).await;
    bar.finish();
    repo.close().await;
    report(result, output)
}

async fn tasks(command: &Tasks, output: Output) -> Result<Exit, RunError> {
    match command {
        Tasks::List {
            unfinished,
            repository,
            ..
        } => {
            let repo = media_db::connect_read_only(&repository.db)
                .await
                .map_err(RunError::of)?;
            let filter = if *unfinished {
                TaskFilter::Unfinished
            } else {
                TaskFilter::All
            };
            let result = media_admin::tasks::list(&repo, filter).await;
            repo.close().await;
            report(result, output)
        }
        Tasks::Show { id, repository, .. } => {
            let repo = media_db::connect_read_only(&repository.db)
                .await
                .map_err(RunError::of)?;
            let result = media_admin::tasks::show(&repo, *id).await;
            repo.close().await;
            report(result, output)
        }
    }
}

async fn datastores(command: &Datastores, output: Output) -> Result<Exit, RunError> {
    match command {
        Datastores::List { repository, .. } => {
            let repo = media_db::connect_read_only(&repository.db)
                .await
                .map_err(RunError::of)?;
            let report = media_admin::datastores::list(&repo).await;
            repo.close().await;
            Ok(media_cli::print_report(
                &report.map_err(RunError::of)?,
                output,
            ))
        }
        Datastores::Estimate {
            source, repository, ..
        } => {
            let repo = media_db::connect_read_only(&repository.db)
                .await
                .map_err(RunError::of)?;
            let report =
                media_admin::datastores::estimate(&repo, &source.from, source.before).await;
            repo.close().await;
            Ok(media_cli::print_report(
                &report.map_err(RunError::of)?,
                output,
            ))
        }
        Datastores::Transfer {
            source,
            to,
            from_uri,
            dry_run,
            workers,
            verify,
            repository,
            ..
        } => {
            let mode = RunMode::from_dry_run(*dry_run);
            let repo = match mode {
                RunMode::DryRun => media_db::connect_read_only(&repository.db).await,
                RunMode::Apply => media_db::connect_existing(&repository.db).await,
            }
            .map_err(RunError::of)?;
            let options = TransferOptions {
                from: source.from.clone(),
                from_uri: from_uri.clone(),
                to: to.clone(),
                before: source.before,
                mode,
                workers: usize::from(*workers),
                verify: (*verify).into(),
            };
            let progress = Arc::new(Progress::default());
            let bar = media_cli::ProgressBar::start(output, progress.clone());
            let result = media_admin::transfer::transfer(&repo, &options, progress).await;
            bar.finish();
            repo.close().await;
            let report = result.map_err(RunError::of)?;
            let exit = media_cli::print_report(&report, output);
            Ok(match &report.stopped_early {
                Some(why) => {
                    eprintln!("media_admin: stopped early: {why}");
                    Exit::Fatal
                }
                None => exit,
            })
        }
    }
}
