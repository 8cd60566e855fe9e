//! GDPR export and import of media-like (incompressible) content, against `tar` on the
//! same bytes, with the peak memory of each phase.
//!
//! `cargo bench -p media-gdpr --bench gdpr`. `BENCH_GDPR_MIB` (default 2048) sets the
//! size: media of 1–16 MiB of random bytes, as video is. `TMPDIR` chooses the
//! filesystem. Export is compared with `tar -cf` of the datastore folder; import with
//! `tar -xzf` of the exported parts, both from the page cache, with and without a `sync` after (an
//! export syncs its parts; an import with fsync on syncs every blob).
//! `BENCH_GDPR_KEEP=1` only generates the data and keeps it, for profiling one phase.

use media_core::run::Report;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_archive::WriterOptions;
use media_core::datastore::{Datastore, DatastoreExt};
use media_core::records::{MediaKey, MediaRecord};
use media_db::repo::NewMedia;
use media_db::{AttachOptions, Datastores, MediaIndex};
use media_gdpr::import::Mode;
use media_gdpr::{Entity, ExportOptions, ImportOptions, MediaBytes, Progress};
use media_store::{FileDatastore, ReadOnlyOpener};
use media_tests::bench::{env_or, mib, rerun_self, time_shell};
use rand::{Rng, RngCore, SeedableRng};

const USER: &str = "@bench:example.org";

/// The datastores of a run on `repo`, writing to `store`.
async fn datastores(repo: &media_db::Repository, store: Arc<dyn Datastore>) -> Datastores {
    Datastores::attach(repo, store, AttachOptions::WRITE, Arc::new(ReadOnlyOpener))
        .await
        .unwrap()
}

/// Fills a repository with media of random bytes; returns (media, bytes).
async fn populate(repo_url: &str, store_dir: &Path, total: u64) -> (u64, u64) {
    let repo = media_db::connect(repo_url).await.unwrap();
    let store = FileDatastore::open(store_dir)
        .await
        .unwrap()
        .with_max_durability(media_core::Durability::Unsynced);
    let datastore_id = repo.register_datastore(&store.uri()).await.unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let (mut media, mut bytes) = (0u64, 0u64);
    while bytes < total {
        let size = rng.random_range(1 << 20..=16 << 20);
        let mut content = vec![0u8; size];
        rng.fill_bytes(&mut content);
        let put = store.put_bytes(&content).await.unwrap();
        let key = MediaKey::new(
            "example.org".parse().unwrap(),
            format!("media{media:06}").parse().unwrap(),
        );
        let record = MediaRecord {
            upload_name: Some(format!("clip{media}.mp4")),
            content_type: Some("video/mp4".into()),
            uploader: Some(USER.parse().unwrap()),
            ..MediaRecord::new(key, put.blob.sha256, size as u64, 1_700_000_000_000)
        };
        let batch = [NewMedia {
            record,
            thumbnails: Vec::new(),
            datastore_id,
        }];
        repo.insert_media_batch(&batch, &store).await.unwrap();
        media += 1;
        bytes += size as u64;
    }
    repo.close().await;
    (media, bytes)
}

/// One measured phase, run in its own process so that its peak memory is its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Export { fsync: bool },
    Import { fsync: bool },
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Export { fsync: false } => "export-nofsync",
            Self::Export { fsync: true } => "export-fsync",
            Self::Import { fsync: false } => "import-nofsync",
            Self::Import { fsync: true } => "import-fsync",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Self::Export { fsync: false },
            Self::Export { fsync: true },
            Self::Import { fsync: false },
            Self::Import { fsync: true },
        ]
        .into_iter()
        .find(|phase| phase.name() == name)
    }

    /// Runs the phase in a child process; returns (wall time, peak memory in MiB).
    fn measure(self, dir: &Path) -> (Duration, f64) {
        let text = rerun_self([
            (PHASE_VAR, self.name().as_ref()),
            (DIR_VAR, dir.as_os_str()),
        ]);
        let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().unwrap());
        let (seconds, peak) = (fields.next().unwrap(), fields.next().unwrap());
        (Duration::from_secs_f64(seconds), peak)
    }

    /// In the child: runs the phase and prints "seconds peak-MiB".
    async fn run(self, dir: &Path) {
        let source_url = format!("sqlite://{}", dir.join("source.db").display());
        let start = Instant::now();
        match self {
            Self::Export { fsync } => {
                let repo = media_db::connect(&source_url).await.unwrap();
                let store: Arc<dyn Datastore> =
                    Arc::new(FileDatastore::open(dir.join("store")).await.unwrap());
                let options = ExportOptions {
                    entity: Entity::User(USER.parse().unwrap()),
                    destination: dir.join("export"),
                    writer: WriterOptions {
                        replace: true,
                        sync: fsync,
                        ..WriterOptions::default()
                    },
                    media_bytes: MediaBytes::Included,
                };
                let report = media_gdpr::export_from_repository(
                    &repo,
                    datastores(&repo, store).await,
                    options,
                    Arc::new(Progress::default()),
                )
                .await
                .unwrap();
                assert!(!report.has_failures(), "{report}");
            }
            Self::Import { fsync } => {
                let name = self.name();
                let repo_url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
                let repo = media_db::connect(&repo_url).await.unwrap();
                let store: Arc<dyn Datastore> = Arc::new(
                    FileDatastore::open(dir.join(format!("{name}-store")))
                        .await
                        .unwrap()
                        .with_max_durability(if fsync {
                            media_core::Durability::OnReturn
                        } else {
                            media_core::Durability::Unsynced
                        }),
                );
                let options = ImportOptions {
                    directory: dir.join("export"),
                    only_entity: None,
                    allow_foreign_origins: false,
                    mode: Mode::Import,
                };
                let folder = media_gdpr::import::open_archive(&options.directory)
                    .await
                    .unwrap();
                let report = media_gdpr::import_archive(
                    &repo,
                    datastores(&repo, store).await,
                    folder,
                    options,
                    Arc::new(Progress::default()),
                )
                .await
                .unwrap();
                assert!(!report.has_failures() && report.imported > 0, "{report}");
            }
        }
        println!(
            "{} {}",
            start.elapsed().as_secs_f64(),
            media_tests::bench::peak_memory_mib()
        );
    }
}

const PHASE_VAR: &str = "GDPR_BENCH_PHASE";
const DIR_VAR: &str = "GDPR_BENCH_DIR";

#[tokio::main]
async fn main() {
    if let Some(phase) = std::env::var(PHASE_VAR)
        .ok()
        .and_then(|p| Phase::from_name(&p))
    {
        let dir = std::env::var_os(DIR_VAR).expect("the bench sets the folder");
        return phase.run(Path::new(&dir)).await;
    }
    let work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let dir = work.path();
    let total = env_or::<u64>("BENCH_GDPR_MIB", 2048) << 20;
    let source_url = format!("sqlite://{}", dir.join("source.db").display());
    let (media, bytes) = populate(&source_url, &dir.join("store"), total).await;
    if std::env::var_os("BENCH_GDPR_KEEP").is_some() {
        let kept = work.keep();
        println!(
            "keeping {} (run one phase: {PHASE_VAR}=export-fsync {DIR_VAR}=<it>)",
            kept.display()
        );
        return;
    }
    // Warm the page cache for every contender.
    time_shell("cat store/*/*/* > /dev/null", dir);
    println!(
        "{media} media, {:.0} MiB of random bytes (1-16 MiB each)",
        mib(bytes)
    );

    let (tar_c, tar_c_sync) = time_shell("tar -cf store.tar store", dir);
    std::fs::remove_file(dir.join("store.tar")).unwrap();
    for fsync in [false, true] {
        let (export, export_peak) = Phase::Export { fsync }.measure(dir);
        let parts = std::fs::read_dir(dir.join("export")).unwrap().count() - 1;
        let against = if fsync { tar_c_sync } else { tar_c };
        println!(
            "export (fsync {}): tar -cf {:.2} s ({:.0} MiB/s) | tar -cf + sync {:.2} s | \
             gdpr_export {:.2} s ({:.0} MiB/s, {parts} parts) = {:.2}x {} throughput | peak \
             memory {:.1} MiB",
            if fsync { "on" } else { "off" },
            tar_c.as_secs_f64(),
            mib(bytes) / tar_c.as_secs_f64(),
            tar_c_sync.as_secs_f64(),
            export.as_secs_f64(),
            mib(bytes) / export.as_secs_f64(),
            against.as_secs_f64() / export.as_secs_f64(),
            if fsync { "tar -cf + sync" } else { "tar -cf" },
            export_peak,
        );
    }

    std::fs::create_dir(dir.join("untar")).unwrap();
    let (tar_x, tar_x_sync) = time_shell(
        "for part in export/*.tgz; do tar -xzf \"$part\" -C untar; done",
        dir,
    );
    std::fs::remove_dir_all(dir.join("untar")).unwrap();
    for fsync in [false, true] {
        let phase = Phase::Import { fsync };
        let (import, import_peak) = phase.measure(dir);
        let against = if fsync { tar_x_sync } else { tar_x };
        println!(
            "import (fsync {}): tar -xzf {:.2} s ({:.0} MiB/s) | tar -xzf + sync {:.2} s | \
             gdpr_import {:.2} s ({:.0} MiB/s) = {:.2}x {} throughput | peak memory {:.1} MiB",
            if fsync { "on" } else { "off" },
            tar_x.as_secs_f64(),
            mib(bytes) / tar_x.as_secs_f64(),
            tar_x_sync.as_secs_f64(),
            import.as_secs_f64(),
            mib(bytes) / import.as_secs_f64(),
            against.as_secs_f64() / import.as_secs_f64(),
            if fsync { "tar -xzf + sync" } else { "tar -xzf" },
            import_peak,
        );
        std::fs::remove_dir_all(dir.join(format!("{}-store", phase.name()))).ok();
    }
}
