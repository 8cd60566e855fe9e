//! One share of an import spread over several processes (`--shard K/N`).
//!
//! Every media goes to exactly one of N shards, decided by a SHA-256 of its MXC URI
//! (`mxc://origin/media_id`): the same on every host, architecture and Rust version, so
//! N processes started with `1/N` … `N/N` against one repository import everything
//! exactly once between them. A media's thumbnails go with it. A row that names no valid
//! media (an invalid identifier, a row that cannot be read) goes to the shard of the item
//! it is listed as (the same MXC URI when it can be read), so that it is listed by
//! exactly one shard too.

use std::fmt;
use std::str::FromStr;

use media_core::records::MediaKey;
use sha2::{Digest, Sha256};

/// Shard `index` of `count` (1 ≤ index ≤ count); [`Shard::ALL`] is everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a `K/N` is not a shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not two whole numbers separated by `/`.
    #[error("{0:?} is not a shard: write K/N, e.g. 2/3 for the second of three shares")]
    Syntax(String),
    /// Zero shares.
    #[error("a shard of 0 shares: N counts the processes, at least 1")]
    NoShares,
    /// K outside 1..=N.
    #[error("shard {index}/{count} does not exist: K goes from 1 to N ({count})")]
    OutOfRange {
        /// The K asked for.
        index: u32,
        /// The N asked for.
        count: u32,
    },
}

impl Shard {
    /// The whole import in one process (`1/1`).
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Shard `index` of `count`, counted from 1.
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        match (index, count) {
            (_, 0) => Err(ShardError::NoShares),
            (1.., _) if index <= count => Ok(Self { index, count }),
            _ => Err(ShardError::OutOfRange { index, count }),
        }
    }

    /// K: which share, from 1.
    pub fn index(self) -> u32 {
        self.index
    }

    /// N: how many shares.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether this shard takes the media `key` (and its thumbnails).
    pub fn takes(self, key: &MediaKey) -> bool {
        self.takes_label(&format!("mxc://{}/{}", key.origin, key.media_id))
    }

    /// Whether this shard lists a row that names no valid media, by the item it is
    /// listed as (`mxc://origin/media_id`, when the row says that much).
    pub(crate) fn takes_label(self, label: &str) -> bool {
        self.count == 1 || share_of(label, self.count) == self.index
    }

    /// About how many of `total` items are this shard's: the exact share is known only
    /// once every row has been read.
    pub(crate) fn estimate(self, total: u64) -> u64 {
        total.div_ceil(u64::from(self.count))
    }
}

/// The shard (1..=count) that `label` falls into: the first eight bytes of its SHA-256,
/// big-endian, modulo `count`. Never change this: shards of one import started by
/// different versions must still agree.
fn share_of(label: &str, count: u32) -> u32 {
    let digest = Sha256::digest(label.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below `count`, a u32.
    (u64::from_be_bytes(first) % u64::from(count)) as u32 + 1
}

impl Default for Shard {
    fn default() -> Self {
        Self::ALL
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ShardError::Syntax(s.to_owned());
        let (index, count) = s.trim().split_once('/').ok_or_else(syntax)?;
        let number = |n: &str| n.trim().parse::<u32>().map_err(|_| syntax());
        Self::new(number(index)?, number(count)?)
    }
}

impl serde::Serialize for Shard {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(mxc: &str) -> MediaKey {
        let (origin, id) = mxc.split_once('/').unwrap();
        MediaKey::new(origin.parse().unwrap(), id.parse().unwrap())
    }

    /// Shards of one import may run different builds on different machines: a change of
    /// the hash would import some media twice and others never. These values pin it
    /// (computed independently: the first 8 bytes of SHA-256 of the MXC URI, big-endian,
    /// modulo N, plus 1).
    #[test]
    fn the_shard_of_a_media_key_never_changes() {
        let cases = [
            ("fixture.test/abcdefghijklmnopqrstuvwx", [1, 2, 1, 2, 822]),
            ("matrix.org/AAAAAAAAAAAAAAAAAAAAAAAA", [1, 2, 2, 2, 276]),
            ("example.org:8448/2024-01-01_preview", [1, 1, 3, 6, 853]),
        ];
        for (mxc, expected) in cases {
            let key = key(mxc);
            let shards: Vec<u32> = [1, 2, 3, 7, 1000]
                .into_iter()
                .map(|count| {
                    let owners: Vec<u32> = (1..=count)
                        .filter(|&index| Shard::new(index, count).unwrap().takes(&key))
                        .collect();
                    assert_eq!(owners.len(), 1, "{mxc} in {count} shards: {owners:?}");
                    owners[0]
                })
                .collect();
            assert_eq!(shards, expected, "{mxc}");
        }
    }

    #[test]
    fn shards_spread_media_evenly() {
        let count = 3;
        let mut sizes = [0u32; 3];
        for i in 0..3000 {
            let key = key(&format!("example.org/media{i}"));
            let index = (1..=count)
                .find(|&k| Shard::new(k, count).unwrap().takes(&key))
                .unwrap();
            sizes[(index - 1) as usize] += 1;
        }
        assert!(sizes.iter().all(|&n| (900..1100).contains(&n)), "{sizes:?}");
    }

    #[test]
    fn a_shard_is_written_k_of_n() {
        assert_eq!("2/3".parse(), Ok(Shard::new(2, 3).unwrap()));
        assert_eq!(" 1/1 ".parse(), Ok(Shard::ALL));
        assert_eq!(Shard::new(3, 3).unwrap().to_string(), "3/3");
        assert_eq!(serde_json::to_value(Shard::ALL).unwrap(), "1/1");
        assert_eq!("0/0".parse::<Shard>(), Err(ShardError::NoShares));
        assert_eq!(
            "0/2".parse::<Shard>(),
            Err(ShardError::OutOfRange { index: 0, count: 2 })
        );
        assert_eq!(
            "3/2".parse::<Shard>(),
            Err(ShardError::OutOfRange { index: 3, count: 2 })
        );
        for bad in ["x", "2", "1/", "/3", "1/3/4", "-1/3", "1.5/3"] {
            assert_eq!(
                bad.parse::<Shard>(),
                Err(ShardError::Syntax(bad.to_owned())),
                "{bad}"
            );
        }
        let message = "3/2".parse::<Shard>().unwrap_err().to_string();
        assert!(message.contains("K goes from 1 to N"), "{message}");
    }

    #[test]
    fn everything_is_one_shard_by_default() {
        assert_eq!(Shard::default(), Shard::ALL);
        assert!(Shard::ALL.takes(&key("example.org/x")));
        assert_eq!(Shard::new(2, 3).unwrap().estimate(10), 4);
    }
}
