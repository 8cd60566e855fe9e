//! A media's attributes: its purpose (`none` or `pinned`), as matrix-media-repo's admin
//! API has them. A pinned media is never quarantined by propagation, nor purged by the
//! bulk purges.

use async_trait::async_trait;
use media_core::records::{MediaKey, Purpose};

use super::Repository;
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::roles::MediaAttributes;

#[async_trait]
impl MediaAttributes for Repository {
    async fn set_purpose(&self, key: &MediaKey, purpose: Purpose) -> Result<Purpose, DbError> {
        let before: Option<String> = on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            let before: Option<String> =
                sqlx::query_scalar("SELECT purpose FROM media WHERE origin = $1 AND media_id = $2")
                    .bind(key.origin.as_str())
                    .bind(key.media_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .during("read a media's purpose")?;
            sqlx::query("UPDATE media SET purpose = $3 WHERE origin = $1 AND media_id = $2")
                .bind(key.origin.as_str())
                .bind(key.media_id.as_str())
                .bind(purpose.as_str())
                .execute(&mut *tx)
                .await
                .during("set a media's purpose")?;
            tx.commit().await.during("commit a purpose")?;
            before
        });
        let before = before.ok_or_else(|| DbError::NotFound {
            what: format!("media {key}"),
        })?;
        before.parse().map_err(|reason| DbError::InvalidRow {
            table: "media",
            key: key.to_string(),
            reason,
        })
    }
}
