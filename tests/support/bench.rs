//! Small helpers the benchmarks share.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The value of environment variable `name` parsed as a `T`, or `default` when it is
/// unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `bytes` in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Flushes every dirty page (`sync`), so that no contender pays for an earlier one's
/// writes.
pub fn sync_disk() {
    assert!(Command::new("sync").status().unwrap().success());
}

/// Runs a shell command in `dir` after a [`sync_disk`]; returns its wall time, and its
/// wall time with a `sync` after it (the durable equivalent).
pub fn time_shell(command: &str, dir: &Path) -> (Duration, Duration) {
    sync_disk();
    let start = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "{command}");
    let done = start.elapsed();
    sync_disk();
    (done, start.elapsed())
}
