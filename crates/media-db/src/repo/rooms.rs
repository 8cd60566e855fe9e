//! Which rooms hold which media (`room_media`, filled by `import_synapse --include
//! rooms` from Synapse's events): what `media_admin purge room` and `quarantine room`
//! select. A row records a reference seen in a room, whether or not the repository
//! holds the media; purging a media leaves it (it says where the media was posted).

use async_trait::async_trait;
use futures::stream::BoxStream;
use media_core::ids::RoomId;
use media_core::records::MediaRecord;

use super::Repository;
use super::media::MediaFilter;
use super::sql::{ROWS_PER_STATEMENT, values_list};
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::RoomMedia;
use crate::roles::RoomIndex;

#[async_trait]
impl RoomIndex for Repository {
    async fn record_room_media(&self, links: &[RoomMedia]) -> Result<u64, DbError> {
        if links.is_empty() {
            return Ok(0);
        }
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            let mut added = 0;
            // In key order: two runs recording the same links at once never wait for each
            // other in a circle (see `write_media_batch`).
            let mut in_key_order: Vec<&RoomMedia> = links.iter().collect();
            in_key_order.sort_unstable();
            for chunk in in_key_order.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO room_media (room_id, origin, media_id) VALUES {} \
                     ON CONFLICT (room_id, origin, media_id) DO NOTHING",
                    values_list(self.dialect, chunk.len(), 3)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                for link in chunk {
                    query = query
                        .bind(link.room.as_str())
                        .bind(link.media.origin.as_str())
                        .bind(link.media.media_id.as_str());
                }
                added += query
                    .execute(&mut *tx)
                    .await
                    .during("record the media of rooms")?
                    .rows_affected();
            }
            tx.commit().await.during("commit the media of rooms")?;
            Ok(added)
        })
    }

    async fn count_room_references(&self, room: &RoomId) -> Result<u64, DbError> {
        self.count_media(
            "SELECT COUNT(*) FROM room_media WHERE room_id = $1",
            room.as_str(),
        )
        .await
    }

    /// Driven by the room's links (their primary key starts with the room), so the
    /// cost follows the room's size, not the repository's.
    fn media_in_room(&self, room: &RoomId) -> BoxStream<'static, Result<MediaRecord, DbError>> {
        self.media_pages(MediaFilter::Room(room.as_str().to_owned()))
    }

    async fn count_media_in_room(&self, room: &RoomId) -> Result<u64, DbError> {
        self.count_media(
            "SELECT COUNT(*) FROM room_media AS r JOIN media AS m \
             ON m.origin = r.origin AND m.media_id = r.media_id WHERE r.room_id = $1",
            room.as_str(),
        )
        .await
    }
}
