//! Test support shared by the toolkit's test suites: throwaway SQLite and PostgreSQL
//! databases, a command builder for the real binaries, and helpers that read what a run
//! left in a repository or a datastore folder.
//!
//! PostgreSQL comes from `DATABASE_URL` (the test script `scripts/test` starts a throwaway
//! cluster and sets it). Tests never write into a database they did not create: each
//! [`TestDatabase::postgres`] creates a fresh database on that server and drops it when
//! the value is dropped, even when the test panics.
#![deny(missing_docs)]

pub mod admin;
pub mod bench;
mod command;
mod database;
pub mod dendrite;
mod inspect;
pub mod live_synapse;
pub mod mmr;
pub mod synapse_store;
pub mod synthetic_synapse;

pub use command::{TestCommand, binary, built_binary, import_sqlite_fixture, report};
pub use database::{OtherWriter, TestDatabase, postgres_server_url};
pub use inspect::{any_connection, last_task, media_count, repository_contents, walk_blobs};
