//! GDPR export and import of media-like (incompressible) content, against `tar` on the
//! same bytes, with the peak memory of each phase.
//!
//! `cargo bench -p media-gdpr --bench gdpr`. `BENCH_GDPR_MIB` (default 2048) sets the
//! size: media of 1–16 MiB of random bytes, as video is. `TMPDIR` chooses the
//! filesystem. Export is compared with `tar -cf` of the datastore folder; import with
//! `tar -xzf` of the exported parts, both from the page cache, each followed by `sync` (an
//! export syncs its parts; an import with fsync on syncs every blob).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::archive::Compression;
use media_core::datastore::{Datastore, DatastoreExt};
use media_core::records::{MediaKey, MediaRecord, Purpose};
use media_db::repo::NewMedia;
use media_gdpr::import::Mode;
use media_gdpr::{Entity, ExportOptions, ImportOptions, Progress};
use media_store::FileDatastore;
use rand::{Rng, RngCore, SeedableRng};

const USER: &str = "@bench:example.org";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Flushes every dirty page, so that no contender pays for an earlier one's writes.
fn sync() {
    assert!(Command::new("sync").status().unwrap().success());
}

/// Runs a shell command in `dir`; returns its wall time, and with a `sync` after it.
fn time_shell(command: &str, dir: &Path) -> (Duration, Duration) {
    sync();
    let start = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "{command}");
    let done = start.elapsed();
    sync();
    (done, start.elapsed())
}

/// Starts a new peak-memory measurement of this process (Linux: clears VmHWM).
fn reset_peak_memory() {
    std::fs::write("/proc/self/clear_refs", "5").ok();
}

/// The peak resident memory since the last reset, in MiB.
fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Fills a repository with media of random bytes; returns (media, bytes).
async fn populate(repo_url: &str, store_dir: &Path, total: u64) -> (u64, u64) {
    let repo = media_db::connect(repo_url).await.unwrap();
    let store = FileDatastore::open(store_dir).await.unwrap().with_fsync(false);
    let datastore_id = repo.register_datastore(&store.uri()).await.unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let (mut media, mut bytes) = (0u64, 0u64);
    while bytes < total {
        let size = rng.random_range(1 << 20..=16 << 20);
        let mut content = vec![0u8; size];
        rng.fill_bytes(&mut content);
        let put = store.put_bytes(&content).await.unwrap();
        let record = MediaRecord {
            key: MediaKey::new(
                "example.org".parse().unwrap(),
                format!("media{media:06}").parse().unwrap(),
            ),
            sha256: put.blob.sha256,
            size_bytes: size as u64,
            upload_name: Some(format!("clip{media}.mp4")),
            content_type: Some("video/mp4".into()),
            uploader: Some(USER.parse().unwrap()),
            created_ts: 1_700_000_000_000,
            last_access_ts: None,
            quarantined: false,
            quarantined_by: None,
            purpose: Purpose::None,
            imported_from: None,
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

#[tokio::main]
async fn main() {
    let work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let dir = work.path();
    let total = env_or("BENCH_GDPR_MIB", 2048) << 20;
    let source_url = format!("sqlite://{}", dir.join("source.db").display());
    let (media, bytes) = populate(&source_url, &dir.join("store"), total).await;
    // Warm the page cache for every contender.
    time_shell("cat store/*/*/* > /dev/null", dir);
    println!(
        "{media} media, {:.0} MiB of random bytes (1-16 MiB each)",
        mib(bytes)
    );

    let (tar_c, tar_c_sync) = time_shell("tar -cf store.tar store", dir);
    std::fs::remove_file(dir.join("store.tar")).unwrap();

    let repo = media_db::connect(&source_url).await.unwrap();
    let store: Arc<dyn Datastore> = Arc::new(FileDatastore::open(dir.join("store")).await.unwrap());
    sync();
    reset_peak_memory();
    let start = Instant::now();
    let report = media_gdpr::export_from_repository(
        &repo,
        store,
        ExportOptions {
            entity: Entity::User(USER.parse().unwrap()),
            destination: dir.join("export"),
            part_size: 200 << 20,
            compression: Compression::Auto,
            include_data: true,
            replace: false,
        },
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let export = start.elapsed();
    let export_peak = peak_memory_mib();
    assert!(!report.has_failures(), "{report}");
    repo.close().await;
    println!(
        "export: tar -cf {:.2} s ({:.0} MiB/s) | tar -cf + sync {:.2} s | gdpr_export {:.2} s \
         ({:.0} MiB/s, {} parts) = {:.2}x tar -cf throughput, {:.2}x tar -cf + sync | peak \
         memory {:.1} MiB",
        tar_c.as_secs_f64(),
        mib(bytes) / tar_c.as_secs_f64(),
        tar_c_sync.as_secs_f64(),
        export.as_secs_f64(),
        mib(bytes) / export.as_secs_f64(),
        report.parts.len(),
        tar_c.as_secs_f64() / export.as_secs_f64(),
        tar_c_sync.as_secs_f64() / export.as_secs_f64(),
        export_peak,
    );

    std::fs::create_dir(dir.join("untar")).unwrap();
    let (tar_x, tar_x_sync) = time_shell(
        "for part in export/*.tgz; do tar -xzf \"$part\" -C untar; done",
        dir,
    );
    std::fs::remove_dir_all(dir.join("untar")).unwrap();
    for fsync in [false, true] {
        let target_url = format!("sqlite://{}", dir.join(format!("target-{fsync}.db")).display());
        let target_dir = dir.join(format!("target-store-{fsync}"));
        let repo = media_db::connect(&target_url).await.unwrap();
        let store: Arc<dyn Datastore> =
            Arc::new(FileDatastore::open(&target_dir).await.unwrap().with_fsync(fsync));
        sync();
        reset_peak_memory();
        let start = Instant::now();
        let report = media_gdpr::import_archive(
            &repo,
            store,
            ImportOptions {
                directory: dir.join("export"),
                only_entity: None,
                allow_foreign_origins: false,
                mode: Mode::Import,
            },
            Arc::new(Progress::default()),
        )
        .await
        .unwrap();
        let import = start.elapsed();
        let import_peak = peak_memory_mib();
        assert!(!report.has_failures(), "{report}");
        assert_eq!(report.imported, media);
        repo.close().await;
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
        std::fs::remove_dir_all(target_dir).ok();
    }
}
