//! Our repository on the command line: the flags that say where it lives
//! ([`RepositoryArgs`]) and opening it with its datastore the way a tool uses them
//! ([`RepositoryAccess`]).

use std::sync::Arc;

use clap::Args;
use media_core::run::RunMode;
use media_db::{AttachOptions, DatastoreAccess, Datastores, DbError, Repository};
use media_store::ReadOnlyOpener;

use crate::RunError;

/// The help heading of [`RepositoryArgs`]' flags.
pub const REPOSITORY_HEADING: &str = "Our repository (where media is imported to / exported from)";

/// Where our repository lives: the flags every tool that reads or writes it takes.
///
/// They are listed under their own heading and named `--repo-db`/`--datastore`, so they
/// cannot be mistaken for the Synapse database flags (`--synapse-db`, `--db-host`, …)
/// next to them; the older `--db` still works as an alias.
#[derive(Debug, Clone, Args)]
pub struct RepositoryArgs {
    /// Our repository database (not Synapse's): a path (SQLite file), sqlite://…,
    /// postgres://… or PostgreSQL key=value settings.
    #[arg(
        long = "repo-db",
        help_heading = REPOSITORY_HEADING,
        visible_alias = "db",
        value_name = "REPO_DB",
        env = "MEDIA_REPO_DB",
        default_value = "sqlite://media-repo.db"
    )]
    pub db: String,

    /// Our datastore: file:///abs/path, file://relative/path, a bare path, or an
    /// S3-compatible bucket: s3://bucket/prefix?endpoint=http://host:3900&region=garage.
    #[arg(
        long,
        help_heading = REPOSITORY_HEADING,
        env = "MEDIA_REPO_DATASTORE",
        default_value = "file://media-store"
    )]
    pub datastore: String,

    /// The repository's data was moved to --datastore: record its new location (after
    /// checking that a sample of the recorded blobs is there).
    #[arg(long, help_heading = REPOSITORY_HEADING, env = "MEDIA_REPO_DATASTORE_MOVED")]
    pub datastore_moved: bool,
}

/// How a tool uses our repository and its datastore, which decides how both are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepositoryAccess {
    /// The tool writes: a missing SQLite repository or datastore folder is created, the
    /// schema is brought up to date and the datastore is recorded.
    Write,
    /// The tool only reads (exports, verification): an existing repository is opened
    /// without writing anything, so it works on a read-only mount; a missing repository
    /// is an error, a missing datastore folder an empty stand-in.
    ReadOnly,
    /// A dry run: like [`Write`](Self::Write) where the repository and datastore exist,
    /// but nothing is created or recorded (missing ones are empty stand-ins).
    DryRun,
}

impl From<RunMode> for RepositoryAccess {
    /// A dry run opens the repository for a dry run; a real run writes.
    fn from(mode: RunMode) -> Self {
        match mode {
            RunMode::DryRun => Self::DryRun,
            RunMode::Apply => Self::Write,
        }
    }
}

impl RepositoryArgs {
    /// Opens the datastore (`--datastore`), connects our repository (`--repo-db`) and
    /// attaches the datastore to it (recording its new location with
    /// `--datastore-moved`), each as `access` asks. Returns the repository and the run's
    /// [`Datastores`]: the given datastore, where new bytes go, and the other datastores
    /// the repository recorded, which blobs are read from when their rows name them.
    ///
    /// The datastore is opened (and an S3 bucket checked) first: one that cannot be
    /// opened is a usage error (`datastore: …`) that leaves no new repository behind. A
    /// database error is in the class it says it is in (a missing repository is a usage
    /// error).
    pub async fn open(
        &self,
        access: RepositoryAccess,
    ) -> Result<(Repository, Datastores), RunError> {
        let database_error = RunError::of::<DbError>;
        let store = match access {
            RepositoryAccess::Write => media_store::open(&self.datastore).await,
            RepositoryAccess::ReadOnly => media_store::open_read_only(&self.datastore).await,
            RepositoryAccess::DryRun => media_store::open_for_dry_run(&self.datastore).await,
        }
        .map_err(|e| RunError::usage(format_args!("datastore: {e}")))?;
        let repo = match access {
            RepositoryAccess::Write => media_db::connect(&self.db).await,
            RepositoryAccess::ReadOnly => media_db::connect_read_only(&self.db).await,
            RepositoryAccess::DryRun => media_db::connect_for_dry_run(&self.db).await,
        }
        .map_err(database_error)?;
        let options = AttachOptions {
            // Reading and dry runs write nothing, not even the datastore's identity marker.
            access: match access {
                RepositoryAccess::Write => DatastoreAccess::Write,
                RepositoryAccess::ReadOnly | RepositoryAccess::DryRun => DatastoreAccess::ReadOnly,
            },
            moved: self.datastore_moved,
        };
        match Datastores::attach(&repo, store, options, Arc::new(ReadOnlyOpener)).await {
            Ok(datastores) => Ok((repo, datastores)),
            Err(e) => {
                repo.close().await;
                Err(database_error(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use media_core::run::ErrorClass;

    use super::*;

    /// The flags for a repository file and a datastore folder inside `dir`.
    fn args_in(dir: &std::path::Path) -> RepositoryArgs {
        RepositoryArgs {
            db: dir.join("repo.db").display().to_string(),
            datastore: dir.join("store").display().to_string(),
            datastore_moved: false,
        }
    }

    #[tokio::test]
    async fn writing_creates_what_reading_then_opens() {
        let dir = tempfile::tempdir().unwrap();
        let args = args_in(dir.path());
        let (repo, stores) = args.open(RepositoryAccess::Write).await.unwrap();
        assert!(dir.path().join("repo.db").is_file());
        assert!(dir.path().join("store").is_dir());
        assert!(!stores.given().is_ephemeral());
        assert!(stores.given_id().is_some());
        repo.close().await;

        let (repo, _store) = args.open(RepositoryAccess::ReadOnly).await.unwrap();
        repo.close().await;
    }

    #[tokio::test]
    async fn reading_and_dry_runs_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let args = args_in(dir.path());
        let Err(missing) = args.open(RepositoryAccess::ReadOnly).await else {
            panic!("a missing repository cannot be read");
        };
        assert!(missing.message.contains("repo.db"), "{}", missing.message);

        let (repo, stores) = args.open(RepositoryAccess::DryRun).await.unwrap();
        let uri = stores.given().uri();
        assert!(uri.ends_with("/store"), "{uri}");
        repo.close().await;
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_datastore_that_cannot_be_opened_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _store) = args_in(dir.path())
            .open(RepositoryAccess::Write)
            .await
            .unwrap();
        repo.close().await;
        let args = RepositoryArgs {
            datastore: "s3://bucket".to_owned(),
            ..args_in(dir.path())
        };
        for access in [
            RepositoryAccess::Write,
            RepositoryAccess::ReadOnly,
            RepositoryAccess::DryRun,
        ] {
            let Err(error) = args.open(access).await else {
                panic!("{access:?} opened the datastore s3://bucket");
            };
            assert_eq!(error.class, ErrorClass::Usage, "{access:?}");
            assert!(
                error.message.starts_with("datastore: "),
                "{}",
                error.message
            );
        }
    }

    #[tokio::test]
    async fn a_datastore_that_cannot_be_opened_leaves_no_new_repository() {
        let dir = tempfile::tempdir().unwrap();
        let args = RepositoryArgs {
            datastore: "s3://bucket".to_owned(),
            ..args_in(dir.path())
        };
        let Err(error) = args.open(RepositoryAccess::Write).await else {
            panic!("the datastore s3://bucket was opened");
        };
        assert_eq!(error.class, ErrorClass::Usage);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_dry_run_opens_for_a_dry_run() {
        assert_eq!(
            RepositoryAccess::from(RunMode::DryRun),
            RepositoryAccess::DryRun
        );
        assert_eq!(
            RepositoryAccess::from(RunMode::Apply),
            RepositoryAccess::Write
        );
    }
}
