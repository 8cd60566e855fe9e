//! `import_synapse` throughput on generated Synapse-shaped stores, against `cp -r`.
//!
//! `DATABASE_URL=postgres://… cargo bench -p media-import --bench import`
//! (PostgreSQL is optional: without `DATABASE_URL` only SQLite runs). Sizes:
//! `BENCH_LARGE_MIB` (default 1024: 1–16 MiB media) and `BENCH_SMALL_MEDIA` (default
//! 50000: 4–64 KiB media, one thumbnail each); `BENCH_WORKERS` (default 8, as the tool);
//! `BENCH_FSYNC=0` turns the datastore's fsync off for the small media (default on, as
//! the tool; large media run both ways). About 20% of the media repeat the bytes of
//! another, as on real servers. `TMPDIR` chooses the filesystem. Each import runs in its
//! own process and reports its own peak memory; `BENCH_KEEP=1` generates the small store,
//! keeps it and prints the command that runs one import on it (for a profiler).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_import::{ImportOptions, Include, Progress, import_synapse};
use media_store::FileDatastore;
use media_tests::TestDatabase;
use media_tests::bench::{env_or, mib, read_into_page_cache, rerun_self, time_shell};
use media_tests::synthetic_synapse::{
    SyntheticSpec, SyntheticStore, copy_into_postgres, write_synapse_sqlite,
};

/// `cp -r` alone, and `cp -r` followed by `sync` (the durable equivalent of an import
/// with fsync on).
fn time_cp(src: &Path, dst: &Path) -> (Duration, Duration) {
    let command = format!("cp -r '{}' '{}'", src.display(), dst.display());
    time_shell(&command, Path::new("/"))
}

/// One import, measured in a child process (this bench re-run with [`PHASE_VAR`] set) so
/// that its peak memory is its own.
struct Measured {
    elapsed: Duration,
    peak_mib: f64,
    report: serde_json::Value,
}

impl Measured {
    fn count(&self, field: &str) -> u64 {
        self.report[field]
            .as_u64()
            .expect("a counter of the report")
    }
}

const PHASE_VAR: &str = "IMPORT_BENCH_PHASE";

/// Imports `store` (from `synapse_location`) into the repository at `repo_url`.
fn time_import(
    store: &SyntheticStore,
    synapse_location: &str,
    repo_url: &str,
    datastore: &Path,
    fsync: bool,
) -> Measured {
    let fsync = if fsync { "1" } else { "0" };
    let text = rerun_self([
        (PHASE_VAR, "import".as_ref()),
        ("IMPORT_BENCH_SYNAPSE", synapse_location.as_ref()),
        ("IMPORT_BENCH_MEDIA_STORE", store.media_store.as_os_str()),
        ("IMPORT_BENCH_SERVER", store.server_name.as_ref()),
        ("IMPORT_BENCH_REPO", repo_url.as_ref()),
        ("IMPORT_BENCH_DATASTORE", datastore.as_os_str()),
        ("BENCH_FSYNC", fsync.as_ref()),
    ]);
    let mut fields = text.trim().splitn(3, ' ');
    let mut next = || fields.next().expect("seconds, peak memory, report");
    Measured {
        elapsed: Duration::from_secs_f64(next().parse().unwrap()),
        peak_mib: next().parse().unwrap(),
        report: serde_json::from_str(next()).unwrap(),
    }
}

/// In the child: runs one import and prints "seconds peak-MiB report-counters".
async fn run_import_phase() {
    let var = |name: &str| std::env::var(name).expect("set by the parent");
    let synapse = media_synapse::open_synapse(&var("IMPORT_BENCH_SYNAPSE"))
        .await
        .unwrap();
    let repo = media_db::connect(&var("IMPORT_BENCH_REPO")).await.unwrap();
    let datastore = FileDatastore::open(var("IMPORT_BENCH_DATASTORE"))
        .await
        .unwrap()
        .with_max_durability(if env_or("BENCH_FSYNC", 1u8) == 1 {
            media_core::Durability::OnReturn
        } else {
            media_core::Durability::Unsynced
        });
    let options = ImportOptions {
        media_store: Some(var("IMPORT_BENCH_MEDIA_STORE").into()),
        homeserver: None,
        server_name: var("IMPORT_BENCH_SERVER").parse().unwrap(),
        include: Include::default(),
        workers: env_or("BENCH_WORKERS", 8usize),
        mode: media_core::run::RunMode::Apply,
        source_label: "bench".into(),
        shard: media_import::Shard::ALL,
    };
    let start = Instant::now();
    let report = import_synapse(
        &synapse,
        &repo,
        Arc::new(datastore),
        options,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(report.media_failed, 0, "{report}");
    repo.close().await;
    synapse.close().await;
    println!(
        "{} {} {}",
        elapsed.as_secs_f64(),
        media_tests::bench::peak_memory_mib(),
        report.counters_json()
    );
}

#[tokio::main]
async fn main() {
    if std::env::var_os(PHASE_VAR).is_some() {
        return run_import_phase().await;
    }
    let work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let workers: usize = env_or("BENCH_WORKERS", 8);
    let fsync = env_or("BENCH_FSYNC", 1u8) == 1;

    let large_mib: u64 = env_or("BENCH_LARGE_MIB", 1024);
    if large_mib > 0 {
        let store = write_synapse_sqlite(
            &work.path().join("large"),
            &SyntheticSpec::large_media(large_mib << 20),
        )
        .await;
        read_into_page_cache(&store.media_store);
        let (cp, cp_sync) = time_cp(&store.media_store, &work.path().join("large-cp"));
        println!(
            "large: {} media, {:.0} MiB ({:.0} MiB unique) | cp -r {:.2} s | cp -r + sync {:.2} s",
            store.media,
            mib(store.total_bytes),
            mib(store.unique_bytes),
            cp.as_secs_f64(),
            cp_sync.as_secs_f64(),
        );
        for fsync in [false, true] {
            let repo = TestDatabase::sqlite();
            let target = work.path().join(format!("large-store-{fsync}"));
            let import = time_import(
                &store,
                store.sqlite_path.to_str().unwrap(),
                &repo.url,
                &target,
                fsync,
            );
            let seconds = import.elapsed.as_secs_f64();
            let against = if fsync { cp_sync } else { cp };
            println!(
                "large: import_synapse ({workers} workers, fsync {}) into SQLite {seconds:.2} s \
                 = {:.2}x {} ({:.0} MiB/s read, {:.0} MiB written) | peak memory {:.1} MiB",
                if fsync { "on" } else { "off" },
                seconds / against.as_secs_f64(),
                if fsync { "cp -r + sync" } else { "cp -r" },
                mib(import.count("bytes_read")) / seconds,
                mib(import.count("bytes_written")),
                import.peak_mib,
            );
            std::fs::remove_dir_all(target).ok();
        }
        std::fs::remove_dir_all(work.path().join("large-cp")).ok();
    }

    let small: usize = env_or("BENCH_SMALL_MEDIA", 50_000);
    if small > 0 {
        let store = write_synapse_sqlite(
            &work.path().join("small"),
            &SyntheticSpec::small_media(small),
        )
        .await;
        if std::env::var_os("BENCH_KEEP").is_some() {
            if std::env::var_os("DATABASE_URL").is_some() {
                let synapse = TestDatabase::postgres().await;
                copy_into_postgres(&store, &synapse.url).await;
                println!("kept the same Synapse tables in {}", synapse.url);
            }
            let kept = work.keep();
            println!(
                "kept {} — one import alone: {PHASE_VAR}=1 IMPORT_BENCH_SYNAPSE={} \
                 IMPORT_BENCH_MEDIA_STORE={} IMPORT_BENCH_SERVER={} \
                 IMPORT_BENCH_REPO=sqlite://<new file> IMPORT_BENCH_DATASTORE=<new folder> {}",
                kept.display(),
                store.sqlite_path.display(),
                store.media_store.display(),
                store.server_name,
                std::env::current_exe().unwrap().display(),
            );
            return;
        }
        read_into_page_cache(&store.media_store);
        let (cp, cp_sync) = time_cp(&store.media_store, &work.path().join("small-cp"));
        let repo = TestDatabase::sqlite();
        let import = time_import(
            &store,
            store.sqlite_path.to_str().unwrap(),
            &repo.url,
            &work.path().join("small-store-sqlite"),
            fsync,
        );
        let seconds = import.elapsed.as_secs_f64();
        println!(
            "small: {} media + {} thumbnails, {:.0} MiB | cp -r {:.2} s ({:.0} media/s) | \
             cp -r + sync {:.2} s | import_synapse ({workers} workers, fsync {}) into SQLite \
             {seconds:.2} s = {:.0} media/s | peak memory {:.1} MiB",
            store.media,
            import.count("thumbnails_imported"),
            mib(store.total_bytes),
            cp.as_secs_f64(),
            store.media as f64 / cp.as_secs_f64(),
            cp_sync.as_secs_f64(),
            if fsync { "on" } else { "off" },
            import.count("media_imported") as f64 / seconds,
            import.peak_mib,
        );
        if std::env::var_os("DATABASE_URL").is_some() {
            let synapse = TestDatabase::postgres().await;
            copy_into_postgres(&store, &synapse.url).await;
            let repo = TestDatabase::postgres().await;
            let import = time_import(
                &store,
                &synapse.url,
                &repo.url,
                &work.path().join("small-store-postgres"),
                fsync,
            );
            let seconds = import.elapsed.as_secs_f64();
            println!(
                "small: Synapse on PostgreSQL into PostgreSQL {seconds:.2} s = {:.0} media/s | \
                 peak memory {:.1} MiB",
                import.count("media_imported") as f64 / seconds,
                import.peak_mib,
            );
        } else {
            println!("small: PostgreSQL skipped (set DATABASE_URL to include it)");
        }
    }
}
