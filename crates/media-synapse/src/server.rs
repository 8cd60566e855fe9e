//! Which server a Synapse database belongs to, and how its media are labelled once
//! copied elsewhere.

use std::path::Path;

use media_core::ids::ServerName;

use crate::db::SynapseDb;
use crate::error::SynapseError;

/// The server name to import under: `given` when it matches the Synapse users, else the
/// one server all local users belong to.
pub async fn resolve_server_name(
    synapse: &SynapseDb,
    given: Option<ServerName>,
) -> Result<ServerName, SynapseError> {
    let found = synapse.user_server_names().await?;
    match (given, found.as_slice()) {
        (Some(given), []) => Ok(given),
        (Some(given), servers) if servers.iter().any(|s| s == given.as_str()) => Ok(given),
        (Some(given), servers) => Err(SynapseError::Config(format!(
            "--server-name {given} does not match the users of this Synapse database \
             (they are on {}): check that this is the right database",
            servers.join(", ")
        ))),
        (None, [one]) => ServerName::try_from(one.as_str()).map_err(|e| {
            SynapseError::Config(format!(
                "the users of this Synapse database are on {one:?}, which is not a valid \
                 server name ({e}): pass --server-name"
            ))
        }),
        (None, []) => Err(SynapseError::Config(
            "this Synapse database has no users to derive the server name from: pass \
             --server-name"
                .into(),
        )),
        (None, servers) => Err(SynapseError::Config(format!(
            "the users of this Synapse database are on several servers ({}): pass \
             --server-name",
            servers.join(", ")
        ))),
    }
}

/// `imported_from` label for a Synapse database location.
pub fn source_label(synapse_db: &str) -> String {
    let shown = media_db::redact_url(synapse_db);
    if shown.contains("://") {
        format!("synapse:{shown}")
    } else {
        let path = Path::new(synapse_db);
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        format!("synapse:{}", absolute.display())
    }
}

#[cfg(test)]
mod tests {
    use media_core::run::{Classify, ErrorClass};

    use super::*;

    fn fixture() -> String {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/synapse/sqlite/homeserver.db"
        )
        .to_owned()
    }

    #[tokio::test]
    async fn the_server_name_comes_from_the_users_and_a_wrong_one_is_refused() {
        let synapse = crate::open_synapse(&fixture()).await.unwrap();
        let found = resolve_server_name(&synapse, None).await.unwrap();
        assert_eq!(found.as_str(), "fixture.test");
        let given = resolve_server_name(&synapse, Some(found.clone())).await;
        assert_eq!(given.unwrap(), found);
        let wrong = resolve_server_name(&synapse, Some("other.example".parse().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(wrong.class(), ErrorClass::Usage);
        assert!(wrong.to_string().contains("fixture.test"), "{wrong}");
        synapse.close().await;
    }

    #[test]
    fn labels_hide_passwords_and_make_paths_absolute() {
        assert_eq!(
            source_label("postgres://synapse:secret@db/synapse"),
            format!(
                "synapse:{}",
                media_db::redact_url("postgres://synapse:secret@db/synapse")
            )
        );
        assert!(!source_label("postgres://synapse:secret@db/synapse").contains("secret"));
        let relative = source_label("homeserver.db");
        let path = relative.strip_prefix("synapse:").unwrap();
        assert!(Path::new(path).is_absolute(), "{relative}");
    }
}
