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
fn sync_disk() {
    assert!(Command::new("sync").status().unwrap().success());
}

/// Runs a shell command in `dir` after a `sync`; returns its wall time, and its
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

/// Runs this benchmark binary again, after a `sync`, with `vars` added to its
/// environment (which tell it to run one measured phase, in a process of its own so
/// that its peak memory is its own); returns what it printed.
pub fn rerun_self<'a>(vars: impl IntoIterator<Item = (&'a str, &'a std::ffi::OsStr)>) -> String {
    sync_disk();
    let out = Command::new(std::env::current_exe().unwrap())
        .envs(vars)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The peak resident memory of this process so far, in MiB (Linux `VmHWM`; NaN where
/// the kernel does not tell).
pub fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}
