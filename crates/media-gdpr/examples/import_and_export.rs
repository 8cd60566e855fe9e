//! End to end, as a program embedding the crates would do it: import a Synapse media
//! store into a new repository (a SQLite file and a datastore folder), then export one
//! user's uploads from it as a matrix-media-repo v2 archive.
//!
//! ```text
//! cargo run -p media-gdpr --example import_and_export
//! cargo run -p media-gdpr --example import_and_export -- SYNAPSE_DIR @user:server
//! ```
//!
//! `SYNAPSE_DIR` holds `homeserver.db` and `media_store/`; without arguments the
//! workspace's Synapse fixture and `@alice:fixture.test` are used. Everything is written
//! into a temporary folder, removed at the end.

use std::path::PathBuf;
use std::sync::Arc;

use media_archive::WriterOptions;
use media_gdpr::{Entity, ExportOptions, MediaBytes, Progress};
use media_import::{ImportOptions, Include};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let synapse_dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/synapse/sqlite"
        ))
    });
    let entity: Entity = args
        .next()
        .unwrap_or_else(|| "@alice:fixture.test".to_owned())
        .parse()?;
    let work = tempfile::tempdir()?;

    // Our repository: its database and the datastore holding the bytes.
    let repo_url = format!("sqlite://{}", work.path().join("repo.db").display());
    let repo = media_db::connect(&repo_url).await?;
    let store_dir = work.path().join("store");
    let store = media_store::open(&store_dir.display().to_string()).await?;
    let datastores = media_db::Datastores::attach(
        &repo,
        store.clone(),
        media_db::AttachOptions::WRITE,
        Arc::new(media_store::ReadOnlyOpener),
    )
    .await?;
    println!(
        "repository: {repo_url}, datastore in {}",
        store_dir.display()
    );

    // Import the Synapse media store (its database is only read).
    let synapse_db = synapse_dir.join("homeserver.db");
    let synapse = media_synapse::open_synapse(&synapse_db.display().to_string()).await?;
    let server_name = media_synapse::resolve_server_name(&synapse, None).await?;
    let options = ImportOptions {
        media_store: Some(synapse_dir.join("media_store")),
        homeserver: None,
        server_name,
        include: Include::default(),
        workers: 2,
        mode: media_core::run::RunMode::Apply,
        source_label: media_synapse::source_label(&synapse_db.display().to_string()),
        shard: media_import::Shard::ALL,
    };
    let progress = Arc::new(Progress::default());
    let imported =
        media_import::import_synapse(&synapse, &repo, store.clone(), options, progress).await?;
    synapse.close().await;
    println!("imported from {}:\n{imported}", synapse_dir.display());

    // Export one user's uploads.
    let options = ExportOptions {
        entity,
        destination: work.path().join("export"),
        writer: WriterOptions::default(),
        media_bytes: MediaBytes::Included,
    };
    let progress = Arc::new(Progress::default());
    let exported = media_gdpr::export_from_repository(&repo, datastores, options, progress).await?;
    repo.close().await;
    println!("exported:\n{exported}");
    for part in exported.parts.iter().chain([&exported.manifest]) {
        println!("  wrote {}", part.display());
    }
    // Listed failures (the fixture holds a media created but never uploaded) do not
    // stop a run: the tools exit 1 for them, this example only reports them above.
    Ok(())
}
