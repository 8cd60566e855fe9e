//! Which server a Synapse database's local media belong to.

use media_core::ids::ServerName;
use media_db::DatabaseLocation;

use crate::error::UpkeepError;

/// The server name of the local media of Synapse's database at `location`: `given`, else
/// the one the database names.
pub(crate) async fn local_server_name(
    location: &DatabaseLocation,
    given: Option<ServerName>,
) -> Result<ServerName, UpkeepError> {
    let synapse = media_synapse::open_synapse(location).await?;
    let resolved = media_synapse::resolve_server_name(&synapse, given).await;
    synapse.close().await;
    Ok(resolved?)
}
