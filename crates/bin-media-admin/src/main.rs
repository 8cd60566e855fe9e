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
use media_admin::{Direction, PurgeOptions, QuarantineOptions, TransferOptions, UsageView};
use media_cli::{Exit, Output, RunError, ToolArgs};
use media_core::progress::Progress;
use media_core::records::MediaKey;
use media_core::run::{Classify, Report, RunMode};
use media_db::{Repository, TaskFilter};

use crate::args::{
    Attributes, Cli, Command, Datastores, MmrMove, PurgeWhat, QuarantineWhat, RepoDb, Tasks,
    UsageCommand, UsageWhat, media_keys,
};

fn main() -> ExitCode {
    media_cli::run_tool("media_admin", &[("config", "mmr-config")], run)
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
        Command::Mmr(command) => mmr_move(command, output).await,
        Command::Check {
            deep,
            fix,
            repository,
            ..
        } => check(*deep, *fix, repository, output).await,
    }
}

/// Opens the repository for a job (read-only for a dry run, else for writing: never
/// created here), runs `job` with a progress bar when `progress` says so, closes the
/// repository and returns the job's report.
async fn with_repository<R, E: Classify + std::fmt::Display>(
    repository: &RepoDb,
    mode: RunMode,
    progress: Option<Output>,
    job: impl AsyncFnOnce(&Repository, Arc<Progress>) -> Result<R, E>,
) -> Result<R, RunError> {
    let repo = match mode {
        RunMode::DryRun => media_db::connect_read_only(&repository.db).await,
        RunMode::Apply => media_db::connect_existing(&repository.db).await,
    }
    .map_err(RunError::of)?;
    let counters = Arc::new(Progress::default());
    let bar = progress.map(|output| media_cli::ProgressBar::start(output, counters.clone()));
    let result = job(&repo, counters).await;
    if let Some(bar) = bar {
        bar.finish();
    }
    repo.close().await;
    result.map_err(RunError::of)
}

/// Runs a job that only reads the repository (see [`with_repository`]) and prints its
/// report.
async fn read_and_report<R: Report, E: Classify + std::fmt::Display>(
    repository: &RepoDb,
    output: Output,
    job: impl AsyncFnOnce(&Repository) -> Result<R, E>,
) -> Result<Exit, RunError> {
    let report = with_repository(repository, RunMode::DryRun, None, async |repo, _| {
        job(repo).await
    })
    .await?;
    Ok(media_cli::print_report(&report, output))
}

async fn usage(usage: &UsageCommand, output: Output) -> Result<Exit, RunError> {
    let run = usage.run();
    match &usage.what {
        Some(what) => {
            let view = match what {
                UsageWhat::Servers { .. } => UsageView::Servers,
                UsageWhat::Users { users, .. } => UsageView::Users(users.clone()),
                UsageWhat::Uploads { mxc, .. } => UsageView::Uploads(media_keys(mxc)),
            };
            read_and_report(&run.repository, output, async |repo| {
                media_admin::usage::usage(repo, &view, run.limit).await
            })
            .await
        }
        None => {
            let path = usage
                .html
                .as_deref()
                .expect("clap requires --html without a subcommand");
            read_and_report(&run.repository, output, async |repo| {
                media_admin::usage_page::write_page(repo, path, run.limit).await
            })
            .await
        }
    }
}

async fn check(
    deep: bool,
    fix: bool,
    repository: &RepoDb,
    output: Output,
) -> Result<Exit, RunError> {
    let options = CheckOptions {
        mode: RunMode::from_dry_run(!fix),
        depth: if deep {
            Depth::Content
        } else {
            Depth::Presence
        },
    };
    let report = with_repository(
        repository,
        options.mode,
        Some(output),
        async |repo, progress| media_admin::check::check(repo, options, progress).await,
    )
    .await?;
    Ok(media_cli::print_report(&report, output))
}

async fn attributes(command: &Attributes, output: Output) -> Result<Exit, RunError> {
    match command {
        Attributes::Get {
            mxc, repository, ..
        } => {
            read_and_report(repository, output, async |repo| {
                media_admin::attributes::get(repo, &MediaKey::from(mxc.clone())).await
            })
            .await
        }
        Attributes::Set {
            mxc,
            purpose,
            repository,
            ..
        } => {
            let key = MediaKey::from(mxc.clone());
            let report = with_repository(repository, RunMode::Apply, None, async |repo, _| {
                media_admin::attributes::set(repo, &key, (*purpose).into()).await
            })
            .await?;
            Ok(media_cli::print_report(&report, output))
        }
    }
}

async fn quarantine(
    what: &QuarantineWhat,
    direction: Direction,
    output: Output,
) -> Result<Exit, RunError> {
    let run = what.run();
    let options = QuarantineOptions {
        target: what.target(),
        direction,
        by: run.by.as_ref().map(ToString::to_string),
        batch: run.batch as usize,
    };
    let report = with_repository(
        &run.repository,
        RunMode::Apply,
        Some(output),
        async |repo, progress| media_admin::quarantine::quarantine(repo, &options, progress).await,
    )
    .await?;
    Ok(media_cli::print_report(&report, output))
}

async fn purge(what: &PurgeWhat, output: Output) -> Result<Exit, RunError> {
    let run = what.run();
    let options = PurgeOptions {
        target: what.target(),
        local_servers: run.local_servers.clone(),
        mode: RunMode::from_dry_run(run.dry_run),
        batch: run.batch as usize,
    };
    let report = with_repository(
        &run.repository,
        options.mode,
        Some(output),
        async |repo, progress| media_admin::purge::purge(repo, &options, progress).await,
    )
    .await?;
    Ok(media_cli::print_report(&report, output))
}

async fn tasks(command: &Tasks, output: Output) -> Result<Exit, RunError> {
    match command {
        Tasks::List {
            unfinished,
            repository,
            ..
        } => {
            let filter = if *unfinished {
                TaskFilter::Unfinished
            } else {
                TaskFilter::All
            };
            read_and_report(repository, output, async |repo| {
                media_admin::tasks::list(repo, filter).await
            })
            .await
        }
        Tasks::Show { id, repository, .. } => {
            read_and_report(repository, output, async |repo| {
                media_admin::tasks::show(repo, *id).await
            })
            .await
        }
    }
}

async fn datastores(command: &Datastores, output: Output) -> Result<Exit, RunError> {
    match command {
        Datastores::List { repository, .. } => {
            read_and_report(repository, output, async |repo| {
                media_admin::datastores::list(repo).await
            })
            .await
        }
        Datastores::Estimate {
            source, repository, ..
        } => {
            read_and_report(repository, output, async |repo| {
                media_admin::datastores::estimate(repo, &source.from, source.before).await
            })
            .await
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
            let options = TransferOptions {
                from: source.from.clone(),
                from_uri: from_uri.clone(),
                to: to.clone(),
                before: source.before,
                mode: RunMode::from_dry_run(*dry_run),
                workers: usize::from(*workers),
                verify: (*verify).into(),
            };
            let report = with_repository(
                repository,
                options.mode,
                Some(output),
                async |repo, progress| {
                    media_admin::transfer::transfer(repo, &options, progress).await
                },
            )
            .await?;
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

/// `media_admin mmr push|pull`: opens the deployment (read-only for a dry run) and our
/// repository (the source of a push, read-only; the destination of a pull, with its
/// datastore), then moves.
async fn mmr_move(command: &MmrMove, output: Output) -> Result<Exit, RunError> {
    let mmr = command.mmr();
    let mode = RunMode::from_dry_run(mmr.dry_run);
    let options = media_admin::MoveOptions {
        mode,
        workers: usize::from(mmr.workers),
    };
    let config =
        media_mmr::MmrConfig::load_logging_warnings(&mmr.mmr_config).map_err(RunError::of)?;
    let access = match (command, mode) {
        (MmrMove::Push { .. }, RunMode::Apply) => media_mmr::Access::ReadWrite,
        _ => media_mmr::Access::ReadOnly,
    };
    let connections = u32::from(mmr.workers).clamp(2, 16) + 2;
    let deployment = media_mmr::MmrDeployment::open(config, access, connections)
        .await
        .map_err(RunError::of)?;
    let report = match command {
        MmrMove::Push { repository, .. } => {
            with_repository(
                repository,
                RunMode::DryRun,
                Some(output),
                async |repo, progress| {
                    media_admin::mmr_move::push(repo, deployment, options, progress).await
                },
            )
            .await?
        }
        MmrMove::Pull { repository, .. } => {
            let (repo, datastores) = repository.open(mode.into()).await?;
            let counters = Arc::new(Progress::default());
            let bar = media_cli::ProgressBar::start(output, counters.clone());
            let result = media_admin::mmr_move::pull(
                &repo,
                datastores.given().clone(),
                deployment,
                options,
                counters,
            )
            .await;
            bar.finish();
            repo.close().await;
            result.map_err(RunError::of)?
        }
    };
    Ok(media_cli::print_report(&report, output))
}
