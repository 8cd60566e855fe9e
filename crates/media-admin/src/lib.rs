//! Administration of our repository (`media_admin`):
//!
//! * [`datastores::list`]: each recorded datastore and what it holds, from the rows alone
//!   (no datastore is opened);
//! * [`datastores::estimate`]: what a transfer out of a datastore would move;
//! * [`transfer::transfer`]: move every blob of one datastore into another, losing none
//!   whatever stops the run (see [`media_db::BlobTransfer`] for the protocol);
//! * [`attributes`]: a media's purpose (`none` or `pinned`);
//! * [`quarantine::quarantine`]: (un)quarantine media, a user's, a server's or a room's,
//!   with every media sharing their bytes;
//! * [`purge::purge`]: delete remote, quarantined, named, a user's, a server's, a room's
//!   or unaccessed media, reference-safe and convergent after a crash;
//! * [`tasks`]: the runs the task log records;
//! * [`usage::usage`]: who uses the space (servers, users, uploads), and what
//!   deduplication saves; [`usage_page::write_page`]: the same as a self-contained HTML
//!   page of charts;
//! * [`check::check`]: each recorded datastore against the rows: missing, orphan and
//!   damaged objects, stale temporary files, queued deletions; `--fix` repairs what is
//!   safe to repair;
//! * [`mmr_move`]: a whole repository moved into a matrix-media-repo deployment
//!   ([`mmr_move::push`]) or out of one ([`mmr_move::pull`]), without an archive.
#![deny(missing_docs)]

pub mod attributes;
pub mod check;
pub mod datastores;
pub mod error;
pub mod mmr_move;
pub mod purge;
pub mod quarantine;
mod rooms;
pub mod stores;
pub mod tasks;
pub mod transfer;
pub mod usage;
pub mod usage_page;

pub use datastores::{DatastoreSelector, EstimateReport, ListReport};
pub use error::AdminError;
pub use mmr_move::{MoveDirection, MoveFailure, MoveOptions, MoveReport};
pub use purge::{Locality, PurgeOptions, PurgeReport, PurgeTarget};
pub use quarantine::{Direction, QuarantineOptions, QuarantineRunReport, QuarantineTarget};
pub use transfer::{TransferFailure, TransferOptions, TransferReport, Verify};
pub use usage::{SpaceReport, UsageView};
