//! Administration of our repository (`media_admin`), starting with its datastores:
//!
//! * [`datastores::list`]: each recorded datastore and what it holds, from the rows alone
//!   (no datastore is opened);
//! * [`datastores::estimate`]: what a transfer out of a datastore would move;
//! * [`transfer::transfer`]: move every blob of one datastore into another, losing none
//!   whatever stops the run (see [`media_db::BlobTransfer`] for the protocol).
#![deny(missing_docs)]

pub mod datastores;
pub mod error;
pub mod transfer;

pub use datastores::{DatastoreSelector, EstimateReport, ListReport};
pub use error::AdminError;
pub use transfer::{TransferFailure, TransferOptions, TransferReport, Verify};
