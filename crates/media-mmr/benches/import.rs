//! `import_synapse` into a matrix-media-repo deployment (PostgreSQL + file datastores)
//! against `import_synapse` into our own PostgreSQL repository (file datastore), on the
//! same generated Synapse store, in the same run (issue #15: target ≥ 0.9×).
//!
//! `DATABASE_URL=postgres://… cargo bench -p media-mmr --bench import` (PostgreSQL is
//! required). Sizes: `BENCH_SMALL_MEDIA` (default 20000: 4–64 KiB media, one thumbnail
//! each) and `BENCH_LARGE_MIB` (default 1024: 1–16 MiB media; 0 skips it);
//! `BENCH_WORKERS` (default 8, as the tool); `BENCH_ROUNDS` (default 1) alternates the
//! two imports that many times. About 20% of the media repeat the bytes of another.
//! Each import runs in its own process (peak memory its own), into a fresh repository
//! or deployment, with the tool's durability (fsync on). `TMPDIR` chooses the filesystem.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_import::{ImportOptions, ImportSink, Include, Progress, RepositorySink};
use media_mmr::{Access, MmrConfig, MmrDeployment, MmrSink};
use media_store::FileDatastore;
use media_tests::TestDatabase;
use media_tests::bench::{env_or, mib, read_into_page_cache, rerun_self};
use media_tests::mmr::{Deployment, RemoteMedia};
use media_tests::synthetic_synapse::{SyntheticSpec, SyntheticStore, write_synapse_sqlite};

const PHASE_VAR: &str = "MMR_BENCH_PHASE";

/// Where one import writes.
enum Target<'a> {
    /// Our repository at this URL, bytes into this folder.
    Ours { url: &'a str, datastore: &'a Path },
    /// The deployment of this media-repo.yaml.
    Mmr { config: &'a Path },
}

/// One import, measured in a child process.
struct Measured {
    elapsed: Duration,
    peak_mib: f64,
    report: serde_json::Value,
}

impl Measured {
    fn media_per_second(&self) -> f64 {
        self.report["media_imported"].as_u64().unwrap() as f64 / self.elapsed.as_secs_f64()
    }
}

fn time_import(store: &SyntheticStore, into: Target<'_>) -> Measured {
    let (phase, target, datastore) = match into {
        Target::Ours { url, datastore } => ("ours", url.as_ref(), datastore.as_os_str()),
        Target::Mmr { config } => ("mmr", config.as_os_str(), "".as_ref()),
    };
    let text = rerun_self([
        (PHASE_VAR, phase.as_ref()),
        ("MMR_BENCH_SYNAPSE", store.sqlite_path.as_os_str()),
        ("MMR_BENCH_MEDIA_STORE", store.media_store.as_os_str()),
        ("MMR_BENCH_SERVER", store.server_name.as_ref()),
        ("MMR_BENCH_TARGET", target),
        ("MMR_BENCH_DATASTORE", datastore),
    ]);
    let mut fields = text.trim().splitn(3, ' ');
    let mut next = || fields.next().expect("seconds, peak memory, report");
    Measured {
        elapsed: Duration::from_secs_f64(next().parse().unwrap()),
        peak_mib: next().parse().unwrap(),
        report: serde_json::from_str(next()).unwrap(),
    }
}

/// In the child: one import into the sink the parent named; prints "seconds peak-MiB
/// report-counters".
async fn run_import_phase(phase: &str) {
    let var = |name: &str| std::env::var(name).expect("set by the parent");
    let synapse = media_synapse::open_synapse(&var("MMR_BENCH_SYNAPSE"))
        .await
        .unwrap();
    let workers = env_or("BENCH_WORKERS", 8usize);
    let (sink, repo): (Arc<dyn ImportSink>, _) = if phase == "mmr" {
        let config = MmrConfig::load(var("MMR_BENCH_TARGET").as_ref()).unwrap();
        let connections = u32::try_from(workers.clamp(2, 16) + 2).unwrap();
        let deployment = MmrDeployment::open(config, Access::ReadWrite, connections)
            .await
            .unwrap();
        (Arc::new(MmrSink::new(deployment).unwrap()), None)
    } else {
        let repo = media_db::connect(&var("MMR_BENCH_TARGET")).await.unwrap();
        let store = FileDatastore::open(var("MMR_BENCH_DATASTORE"))
            .await
            .unwrap();
        let sink = RepositorySink::open(&repo, Arc::new(store), false)
            .await
            .unwrap();
        (Arc::new(sink), Some(repo))
    };
    let options = ImportOptions {
        media_store: Some(var("MMR_BENCH_MEDIA_STORE").into()),
        homeserver: None,
        server_name: var("MMR_BENCH_SERVER").parse().unwrap(),
        include: Include::default(),
        workers,
        mode: media_core::run::RunMode::Apply,
        source_label: "bench".into(),
        shard: media_import::Shard::ALL,
    };
    let start = Instant::now();
    let report =
        media_import::import_synapse_into(&synapse, sink, options, Arc::new(Progress::default()))
            .await
            .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(report.media_failed, 0, "{report}");
    if let Some(repo) = repo {
        repo.close().await;
    }
    synapse.close().await;
    println!(
        "{} {} {}",
        elapsed.as_secs_f64(),
        media_tests::bench::peak_memory_mib(),
        report.counters_json()
    );
}

/// Imports `store` into a fresh repository of ours and a fresh deployment, `rounds`
/// times each, alternating, and prints both rates and their ratio.
async fn compare(label: &str, store: &SyntheticStore, work: &Path, rounds: usize) {
    let (mut ours, mut mmr) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let repo = TestDatabase::postgres().await;
        let datastore = work.join(format!("{label}-ours-{round}"));
        ours.push(time_import(
            store,
            Target::Ours {
                url: &repo.url,
                datastore: &datastore,
            },
        ));
        std::fs::remove_dir_all(&datastore).ok();
        let deployment = Deployment::serving(&store.server_name, "", RemoteMedia::InFolder).await;
        mmr.push(time_import(
            store,
            Target::Mmr {
                config: &deployment.config(),
            },
        ));
    }
    let best = |runs: &[Measured]| {
        runs.iter()
            .map(Measured::media_per_second)
            .fold(0.0, f64::max)
    };
    let peak = |runs: &[Measured]| runs.iter().map(|m| m.peak_mib).fold(0.0, f64::max);
    let (ours_rate, mmr_rate) = (best(&ours), best(&mmr));
    println!(
        "{label}: {} media, {:.0} MiB | ours (PostgreSQL + folder) {ours_rate:.0} media/s, \
         peak {:.1} MiB | matrix-media-repo (PostgreSQL + file datastores) {mmr_rate:.0} \
         media/s, peak {:.1} MiB | MMR/ours = {:.2}x (best of {rounds})",
        store.media,
        mib(store.total_bytes),
        peak(&ours),
        peak(&mmr),
        mmr_rate / ours_rate,
    );
}

#[tokio::main]
async fn main() {
    if let Ok(phase) = std::env::var(PHASE_VAR) {
        return run_import_phase(&phase).await;
    }
    assert!(
        std::env::var_os("DATABASE_URL").is_some(),
        "set DATABASE_URL: both imports write into PostgreSQL"
    );
    let work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let rounds: usize = env_or("BENCH_ROUNDS", 1);
    let small: usize = env_or("BENCH_SMALL_MEDIA", 20_000);
    if small > 0 {
        let store = write_synapse_sqlite(
            &work.path().join("small"),
            &SyntheticSpec::small_media(small),
        )
        .await;
        read_into_page_cache(&store.media_store);
        compare("small", &store, work.path(), rounds).await;
        std::fs::remove_dir_all(work.path().join("small")).ok();
    }
    let large_mib: u64 = env_or("BENCH_LARGE_MIB", 1024);
    if large_mib > 0 {
        let store = write_synapse_sqlite(
            &work.path().join("large"),
            &SyntheticSpec::large_media(large_mib << 20),
        )
        .await;
        read_into_page_cache(&store.media_store);
        compare("large", &store, work.path(), rounds).await;
    }
}
