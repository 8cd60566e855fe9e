//! A matrix-media-repo deployment as the source of a GDPR export: `gdpr_export -config
//! media-repo.yaml -entity …` writes the same archive as from our repository.
//!
//! The media are the deployment's `media` rows (a user's uploads, or every media of
//! an origin), read page by page ([`MmrDeployment::media_by_uploader`],
//! [`MmrDeployment::media_by_origin`]); each media's bytes are read from the datastore
//! and location its own row names, whoever wrote them (MMR's random locations as well
//! as our content-addressed ones, from folders and buckets; see
//! [`MmrDatastore::open_location`]). Thumbnails are not part of a v2 archive, from MMR as from our repository.
//! The archive itself is written by `media_gdpr`'s writer, unchanged: this module only
//! turns rows into [`ExportItem`]s and opens their bytes ([`PlacedStores`]).
//!
//! A row that cannot be read (an identifier, digest or size we refuse) is listed as a
//! `bad_row` failure of the export; the rows after it are still exported.
//!
//! [`MmrDatastore::open_location`]: crate::MmrDatastore::open_location

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use media_core::datastore::BlobPayload;
use media_core::run::Failure;
use media_db::DbError;
use media_gdpr::{
    Content, Entity, ExportItem, ExportItems, ExportOptions, ExportReason, ExportReport, GdprError,
    NotOpened, PlacedStores, Progress,
};

use crate::deployment::{MmrDeployment, MmrMedia};
use crate::error::MmrError;

/// Exports `options.entity`'s media from an MMR deployment (opened read-only will do).
/// See the [module documentation](self).
pub async fn export_from_mmr(
    deployment: Arc<MmrDeployment>,
    options: ExportOptions,
    progress: Arc<Progress>,
) -> Result<ExportReport, GdprError> {
    let (total, rows) = match &options.entity {
        Entity::User(user) => (
            deployment.count_media_by_uploader(user).await,
            deployment.media_by_uploader(user),
        ),
        Entity::Server(origin) => (
            deployment.count_media_by_origin(origin).await,
            deployment.media_by_origin(origin),
        ),
    };
    let total = total.map_err(into_gdpr_error)?;
    let entity = options.entity.to_string();
    let items: ExportItems = rows
        .map(move |row| match row {
            Ok(media) => Ok(Ok(item(media))),
            Err(MmrError::Db(DbError::InvalidRow { table, key, reason })) => Ok(Err(Failure {
                item: format!("mxc://{key}"),
                reason: ExportReason::BadRow,
                detail: format!(
                    "this row of matrix-media-repo's {table} cannot be read, so it is not \
                     in the export (a media of {entity}): {reason}"
                ),
            })),
            Err(fatal) => Err(into_gdpr_error(fatal)),
        })
        .boxed();
    let from = format!("matrix-media-repo {}", deployment.config().database);
    media_gdpr::export_from_placed(items, total, deployment, from, options, progress).await
}

/// The export item of a `media` row: its bytes where the row says they are.
fn item(media: MmrMedia) -> ExportItem {
    let MmrMedia { record, placement } = media;
    ExportItem {
        key: record.key,
        sha256: Some(record.sha256),
        size_bytes: record.size_bytes,
        upload_name: record.upload_name,
        content_type: record.content_type,
        uploader: record.uploader,
        created_ts: record.created_ts,
        quarantined: record.quarantined,
        content: Content::Placed {
            datastore: placement.datastore_id.as_str().to_owned(),
            location: placement.location,
        },
    }
}

#[async_trait]
impl PlacedStores for MmrDeployment {
    async fn open_placed(
        &self,
        datastore: &str,
        location: &str,
    ) -> Result<Result<BlobPayload, NotOpened>, GdprError> {
        let Some(store) = self.datastores().get(datastore) else {
            return Ok(Err(NotOpened {
                reason: ExportReason::DatastoreUnavailable,
                detail: format!(
                    "its row names datastore {datastore:?}, which media-repo.yaml does not \
                     list (add it, read-only with forKinds: [], to export it)"
                ),
            }));
        };
        Ok(match store.open_location(location).await {
            Ok(payload) => Ok(payload),
            Err(missing @ MmrError::MissingObject { .. }) => Err(NotOpened {
                reason: ExportReason::FileMissing,
                detail: missing.to_string(),
            }),
            Err(unreadable) => Err(NotOpened {
                reason: ExportReason::Unreadable,
                detail: format!("its bytes cannot be read: {unreadable}"),
            }),
        })
    }
}

/// An error of the deployment that stops the export.
fn into_gdpr_error(error: MmrError) -> GdprError {
    match error {
        MmrError::Db(e) => GdprError::Db(e),
        other => GdprError::Config(other.to_string()),
    }
}
