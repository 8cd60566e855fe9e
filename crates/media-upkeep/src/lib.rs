//! Upkeep of a Synapse media store: purges with Synapse's own semantics, applied
//! directly to its database and media store, leaving no empty folder behind.
//!
//! * [`plan`]: what a purge selects ([`PurgeSelection`]: the remote cache by last
//!   access, local media by age, size and avatar use, a user's uploads, named media)
//!   and each selected media's files ([`PlannedMedia`]). The plan is what every way of
//!   applying a purge shares: directly, or [`Through`](admin_api::Through) Synapse's
//!   [`admin_api`], verified and cleaned up after.
//! * [`db`]: Synapse's database as a purge sees it: the candidates page by page, what
//!   is kept and why, one transaction per batch of deletions.
//! * [`removal`]: removing a media's files and the folders left empty, never following
//!   a link out of the media store.
//! * [`journal`]: the batch being deleted, so that a killed run's files are found by the
//!   next one.
//! * [`purge`](mod@purge): a whole direct purge ([`purge()`]), and its [`report`].
//! * [`check`](mod@check): the media store compared with its rows ([`check()`]):
//!   files no row names, rows without files, strays, empty folders; `--fix` removes
//!   what is safe. It [`walk`]s each media folder in the order the [`rows`] stream in,
//!   and reports in a [`check_report`].
//! * [`quarantine`](mod@quarantine): quarantine, unquarantine, protect and unprotect
//!   with Synapse's semantics (hash propagation, protected media left out), a
//!   room's media as Synapse finds them (`media_synapse::events`), the
//!   [`quarantine_changes`] stream they are recorded in, and [`listing`]s of media rows.
//! * [`synupkeep`](mod@synupkeep): synupkeep's three steps ([`synupkeep()`]): every
//!   room's [`history`] purged through Synapse's admin API up to a cutoff, then local
//!   media and the remote cache purged directly with Synapse's semantics.
//! * [`usage`](mod@usage): what the store holds by uploader, room, origin or month, with
//!   the bytes stored twice and the share of thumbnails ([`usage()`]), and its page.
//!
//! Selecting what Synapse's `purge_media_cache` would purge, without changing anything:
//!
//! ```
//! use media_core::moment::Moment;
//! use media_core::run::RunMode;
//! use media_upkeep::admin_api::Through;
//! use media_upkeep::{PurgeOptions, PurgeSelection};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let synapse_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/synapse/sqlite");
//! let options = PurgeOptions {
//!     synapse_db: format!("{synapse_dir}/homeserver.db").parse()?,
//!     media_store: format!("{synapse_dir}/media_store").into(),
//!     server_name: None,
//!     selection: PurgeSelection::Remote { before: Moment::now() },
//!     mode: RunMode::DryRun,
//!     through: Through::Direct,
//! };
//! let progress = media_core::Progress::default();
//! let report = tokio::runtime::Runtime::new()?.block_on(media_upkeep::purge(&options, &progress))?;
//! // Five remote media are cached; the quarantined one stays.
//! assert_eq!((report.media_deleted, report.kept.quarantined), (4, 1));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod admin_api;
pub mod check;
pub mod check_report;
pub mod db;
pub mod error;
pub mod history;
pub mod journal;
pub mod listing;
pub mod plan;
pub mod purge;
pub mod quarantine;
pub mod quarantine_changes;
pub mod removal;
pub mod report;
pub mod rows;
mod server;
pub mod synupkeep;
pub mod usage;
pub mod walk;

pub use check::{CheckOptions, check};
pub use check_report::CheckReport;
pub use error::UpkeepError;
pub use plan::{AvatarPolicy, PlannedMedia, PurgeSelection};
pub use purge::{PurgeOptions, purge};
pub use quarantine::{QuarantineOptions, QuarantineReport, quarantine};
pub use report::PurgeReport;
pub use synupkeep::{SynupkeepOptions, SynupkeepReport, synupkeep};
pub use usage::{UsageBy, UsageOptions, UsageReport, usage};
