//! Filesystem datastore throughput, against `cp` of the same files in the same run.
//!
//! `cargo bench -p media-store --bench datastore` (set `BENCH_LARGE_MIB` and
//! `BENCH_SMALL_COUNT` to change the sizes; defaults 1024 and 20000). Everything happens
//! in a temporary folder on the same filesystem as `BENCH_DIR` (default the system's
//! temporary folder); the source files are read once before timing so every contender
//! reads from the page cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use media_core::datastore::{Datastore, Durability, PutOptions};
use media_store::FileDatastore;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift generator: deterministic, incompressible-looking content.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// Writes files with sizes in `low..=high` bytes until `total` bytes or `count` files.
fn generate(dir: &Path, seed: u64, low: u64, high: u64, total: u64, count: u64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut noise = Noise(seed);
    let (mut files, mut written) = (Vec::new(), 0);
    while written < total && (files.len() as u64) < count {
        let size = noise.between(low, high).min(total - written);
        let mut data = vec![0u8; size as usize];
        noise.fill(&mut data);
        let path = dir.join(format!("f{:06}", files.len()));
        std::fs::write(&path, &data).unwrap();
        written += size;
        files.push(path);
    }
    files
}

fn warm_cache(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::read(f).unwrap().len() as u64)
        .sum()
}

fn time_cp(src: &Path, dst: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new("cp")
        .arg("-r")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(status.success());
    start.elapsed()
}

async fn time_puts(files: &[PathBuf], root: &Path, limit: Durability) -> Duration {
    let store = FileDatastore::open(root)
        .await
        .unwrap()
        .with_max_durability(limit);
    let start = Instant::now();
    for path in files {
        let mut file = tokio::fs::File::open(path).await.unwrap();
        store.put(&mut file, &PutOptions::default()).await.unwrap();
    }
    start.elapsed()
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let work = tempfile::tempdir_in(base).unwrap();
    let large_mib = env_or("BENCH_LARGE_MIB", 1024);
    let small_count = env_or("BENCH_SMALL_COUNT", 20_000);

    // Large media: 1–16 MiB files.
    let src = work.path().join("large");
    let files = generate(&src, 1, 1 << 20, 16 << 20, large_mib << 20, u64::MAX);
    let bytes = warm_cache(&files);
    let cp = time_cp(&src, &work.path().join("large-cp"));
    let put = time_puts(
        &files,
        &work.path().join("store-large-nosync"),
        Durability::Unsynced,
    )
    .await;
    let put_sync = time_puts(
        &files,
        &work.path().join("store-large-sync"),
        Durability::OnReturn,
    )
    .await;
    println!(
        "large: {} files, {:.0} MiB | cp -r {:.2} s ({:.0} MiB/s) | put, fsync off {:.2} s \
         ({:.0} MiB/s, {:.2}x cp) | put, fsync on {:.2} s ({:.0} MiB/s, {:.2}x cp)",
        files.len(),
        bytes as f64 / (1 << 20) as f64,
        cp.as_secs_f64(),
        mib_s(bytes, cp),
        put.as_secs_f64(),
        mib_s(bytes, put),
        cp.as_secs_f64() / put.as_secs_f64(),
        put_sync.as_secs_f64(),
        mib_s(bytes, put_sync),
        cp.as_secs_f64() / put_sync.as_secs_f64(),
    );

    // Small media: 4–64 KiB files.
    let src = work.path().join("small");
    let files = generate(&src, 2, 4 << 10, 64 << 10, u64::MAX, small_count);
    let bytes = warm_cache(&files);
    let cp = time_cp(&src, &work.path().join("small-cp"));
    let put = time_puts(
        &files,
        &work.path().join("store-small-nosync"),
        Durability::Unsynced,
    )
    .await;
    let put_sync = time_puts(
        &files,
        &work.path().join("store-small-sync"),
        Durability::OnReturn,
    )
    .await;
    let rate = |d: Duration| files.len() as f64 / d.as_secs_f64();
    println!(
        "small: {} files, {:.0} MiB | cp -r {:.2} s ({:.0} files/s) | put, fsync off {:.2} s \
         ({:.0} puts/s) | put, fsync on {:.2} s ({:.0} puts/s)",
        files.len(),
        bytes as f64 / (1 << 20) as f64,
        cp.as_secs_f64(),
        rate(cp),
        put.as_secs_f64(),
        rate(put),
        put_sync.as_secs_f64(),
        rate(put_sync),
    );
}
