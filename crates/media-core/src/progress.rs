//! What the tools show people while they run, and how they write sizes.

use std::sync::atomic::AtomicU64;

/// Live counters of a running job, for progress displays.
#[derive(Debug, Default)]
pub struct Progress {
    /// Items to go through, once known (0 while unknown).
    pub items_total: AtomicU64,
    /// Items handled so far (done, skipped or failed).
    pub items_done: AtomicU64,
    /// Bytes moved so far.
    pub bytes: AtomicU64,
}

/// `1.5 MiB`-style sizes for people (powers of 1024).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}
