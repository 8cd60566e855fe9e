//! [`RecordIndex`]: the records an import waits for, found by their entry's name, in
//! memory that does not grow with the archive.
//!
//! The records are spooled to a temporary file as JSON lines. Each line's key (the hash
//! of its entry's name, and its offset) goes to a second temporary file, which
//! [`RecordIndex::seal`] sorts in runs of a few MiB and merges. In memory stay the first
//! hash of every block of sorted keys (8 bytes per 256 records) and one bit per record,
//! set once it is taken: about 160 KiB for a million records, against 17 MiB when every
//! key was kept in memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use media_archive::ManifestRecord;
use serde::{Deserialize, Serialize};

use crate::GdprError;

/// Bytes of one key: the name's hash, then the line's offset (big-endian both).
const KEY_BYTES: usize = 16;
/// Keys sorted in memory at once while sealing (4 MiB).
const KEYS_PER_RUN: usize = 1 << 18;
/// Keys per block of the sorted file (4 KiB); the first hash of each stays in memory.
const KEYS_PER_BLOCK: usize = 256;
/// Read buffer of all runs together while merging.
const MERGE_BUFFERS: usize = 8 << 20;

/// One spooled record.
#[derive(Serialize, Deserialize)]
pub(crate) struct Spooled {
    /// The record's MXC URI.
    pub(crate) mxc: String,
    /// The record as the manifest has it.
    pub(crate) record: ManifestRecord,
}

/// The records an import waits for, by entry name: [`RecordIndex::push`] them all, then
/// [`RecordIndex::seal`], then [`RecordIndex::take`] each entry's records.
pub(crate) struct RecordIndex {
    /// The JSON lines, while they are written.
    lines: Option<BufWriter<File>>,
    /// The JSON lines, once sealed.
    reader: Option<BufReader<File>>,
    /// Bytes of JSON lines written.
    written: u64,
    /// The keys, unsorted, while records are pushed.
    unsorted: Option<BufWriter<File>>,
    /// The keys in order, once sealed.
    sorted: Option<File>,
    /// Records pushed.
    count: usize,
    /// Keys sorted in memory at once while sealing.
    keys_per_run: usize,
    /// The first hash of each block of `sorted`.
    block_starts: Vec<u64>,
    /// One bit per sorted key: its record was taken.
    taken: Vec<u64>,
}

/// The hash a record is found by: its entry's name's.
fn name_hash(name: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

/// An error of the temporary files.
fn spool_error(e: impl std::fmt::Display) -> GdprError {
    GdprError::Worker(format!("the temporary file of the manifest's records: {e}"))
}

fn encode(key: (u64, u64)) -> [u8; KEY_BYTES] {
    let mut bytes = [0; KEY_BYTES];
    bytes[..8].copy_from_slice(&key.0.to_be_bytes());
    bytes[8..].copy_from_slice(&key.1.to_be_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> (u64, u64) {
    let half = |range: std::ops::Range<usize>| {
        u64::from_be_bytes(bytes[range].try_into().expect("eight bytes"))
    };
    (half(0..8), half(8..16))
}

impl RecordIndex {
    /// An empty index, its files created in the temporary folder (`TMPDIR`).
    pub(crate) fn new() -> Result<Self, GdprError> {
        Self::sorting_in_runs_of(KEYS_PER_RUN)
    }

    /// An empty index that sorts `keys_per_run` keys in memory at once.
    fn sorting_in_runs_of(keys_per_run: usize) -> Result<Self, GdprError> {
        let temporary = || {
            tempfile::tempfile().map_err(|e| {
                GdprError::Config(format!(
                    "cannot create a temporary file for the manifest's records ({e}); set \
                     TMPDIR to a writable folder"
                ))
            })
        };
        Ok(Self {
            lines: Some(BufWriter::new(temporary()?)),
            reader: None,
            written: 0,
            unsorted: Some(BufWriter::new(temporary()?)),
            sorted: None,
            count: 0,
            keys_per_run,
            block_starts: Vec::new(),
            taken: Vec::new(),
        })
    }

    /// Files a record under its entry's name.
    pub(crate) fn push(&mut self, mxc: String, record: ManifestRecord) -> Result<(), GdprError> {
        let key = name_hash(&record.file_name);
        let mut line = serde_json::to_vec(&Spooled { mxc, record }).map_err(spool_error)?;
        line.push(b'\n');
        let lines = self.lines.as_mut().expect("pushed before sealing");
        lines.write_all(&line).map_err(spool_error)?;
        let unsorted = self.unsorted.as_mut().expect("pushed before sealing");
        unsorted
            .write_all(&encode((key, self.written)))
            .map_err(spool_error)?;
        self.written += line.len() as u64;
        self.count += 1;
        Ok(())
    }

    /// Ends the pushes and sorts the keys; lookups may start.
    pub(crate) fn seal(&mut self) -> Result<(), GdprError> {
        let (Some(lines), Some(unsorted)) = (self.lines.take(), self.unsorted.take()) else {
            return Ok(());
        };
        let lines = lines.into_inner().map_err(|e| spool_error(e.error()))?;
        self.reader = Some(BufReader::new(lines));
        let mut unsorted = unsorted.into_inner().map_err(|e| spool_error(e.error()))?;
        unsorted.seek(SeekFrom::Start(0)).map_err(spool_error)?;
        let runs = sorted_runs(unsorted, self.count, self.keys_per_run)?;
        let sorted = tempfile::tempfile().map_err(spool_error)?;
        self.block_starts = merge(&runs, self.count, &sorted)?;
        self.sorted = Some(sorted);
        self.taken = vec![0; self.count.div_ceil(64)];
        Ok(())
    }

    /// Reads the line at `offset`.
    fn read_at(&mut self, offset: u64) -> Result<Spooled, GdprError> {
        let reader = self.reader.as_mut().expect("sealed");
        reader.seek(SeekFrom::Start(offset)).map_err(spool_error)?;
        let mut line = String::new();
        reader.read_line(&mut line).map_err(spool_error)?;
        serde_json::from_str(&line).map_err(spool_error)
    }

    /// Reads the sorted keys from position `first`, as many as `keys` holds.
    fn read_keys(&self, first: usize, keys: &mut Vec<u8>) -> Result<(), GdprError> {
        let sorted = self.sorted.as_ref().expect("sealed");
        let wanted = (self.count - first).min(KEYS_PER_BLOCK) * KEY_BYTES;
        keys.resize(wanted, 0);
        sorted
            .read_exact_at(keys, (first * KEY_BYTES) as u64)
            .map_err(spool_error)
    }

    fn is_taken(&self, position: usize) -> bool {
        self.taken[position / 64] & (1 << (position % 64)) != 0
    }

    fn set_taken(&mut self, position: usize) {
        self.taken[position / 64] |= 1 << (position % 64);
    }

    /// Takes the records whose entry is `name`; `None` when there are none and never
    /// were (`Some(empty)`: the entry was taken before).
    pub(crate) fn take(&mut self, name: &str) -> Result<Option<Vec<Spooled>>, GdprError> {
        let key = name_hash(name);
        // Keys equal to `key` may begin in the block before the first one starting above.
        let block = self
            .block_starts
            .partition_point(|first| *first < key)
            .saturating_sub(1);
        let mut found = None;
        let mut keys = Vec::new();
        let mut position = block * KEYS_PER_BLOCK;
        'blocks: while position < self.count {
            self.read_keys(position, &mut keys)?;
            for bytes in keys.chunks_exact(KEY_BYTES) {
                let (hash, offset) = decode(bytes);
                if hash > key {
                    break 'blocks;
                }
                if hash == key {
                    let spooled = self.read_at(offset)?;
                    if spooled.record.file_name == name {
                        let records = found.get_or_insert_with(Vec::new);
                        if !self.is_taken(position) {
                            self.set_taken(position);
                            records.push(spooled);
                        }
                    }
                }
                position += 1;
            }
        }
        Ok(found)
    }

    /// Hands every record never taken to `visit`, in no particular order.
    pub(crate) fn for_each_remaining(
        &mut self,
        mut visit: impl FnMut(Spooled),
    ) -> Result<(), GdprError> {
        let mut keys = Vec::new();
        for first in (0..self.count).step_by(KEYS_PER_BLOCK) {
            self.read_keys(first, &mut keys)?;
            let offsets: Vec<(usize, u64)> = keys
                .chunks_exact(KEY_BYTES)
                .enumerate()
                .map(|(i, bytes)| (first + i, decode(bytes).1))
                .filter(|(position, _)| !self.is_taken(*position))
                .collect();
            for (_, offset) in offsets {
                visit(self.read_at(offset)?);
            }
        }
        Ok(())
    }
}

/// Sorts the `count` keys of `unsorted` in runs of `keys_per_run`, written one after the
/// other into a temporary file; returns it and each run's extent in keys.
fn sorted_runs(unsorted: File, count: usize, keys_per_run: usize) -> Result<Runs, GdprError> {
    let file = tempfile::tempfile().map_err(spool_error)?;
    let mut reader = BufReader::new(unsorted);
    let mut writer = BufWriter::new(&file);
    let mut extents = Vec::new();
    let mut bytes = vec![0; KEY_BYTES];
    let mut keys = Vec::with_capacity(count.min(keys_per_run));
    let mut first = 0;
    while first < count {
        let length = (count - first).min(keys_per_run);
        keys.clear();
        for _ in 0..length {
            reader.read_exact(&mut bytes).map_err(spool_error)?;
            keys.push(decode(&bytes));
        }
        keys.sort_unstable();
        for key in &keys {
            writer.write_all(&encode(*key)).map_err(spool_error)?;
        }
        extents.push((first, first + length));
        first += length;
    }
    writer.flush().map_err(spool_error)?;
    drop(writer);
    Ok(Runs { file, extents })
}

/// Sorted runs of keys in one file.
struct Runs {
    file: File,
    /// Each run's first key and the key after its last.
    extents: Vec<(usize, usize)>,
}

/// A run being merged: where it is read, and a buffer of its next keys.
struct RunCursor {
    next: usize,
    end: usize,
    buffer: Vec<u8>,
    at: usize,
}

impl RunCursor {
    /// The run's next key, refilling the buffer of `capacity` keys when it is used up.
    fn next_key(&mut self, file: &File, capacity: usize) -> Result<Option<(u64, u64)>, GdprError> {
        if self.at == self.buffer.len() {
            let keys = (self.end - self.next).min(capacity);
            if keys == 0 {
                return Ok(None);
            }
            self.buffer.resize(keys * KEY_BYTES, 0);
            file.read_exact_at(&mut self.buffer, (self.next * KEY_BYTES) as u64)
                .map_err(spool_error)?;
            self.next += keys;
            self.at = 0;
        }
        let key = decode(&self.buffer[self.at..self.at + KEY_BYTES]);
        self.at += KEY_BYTES;
        Ok(Some(key))
    }
}

/// Merges the runs into `sorted`; returns the first hash of each block of
/// [`KEYS_PER_BLOCK`] keys.
fn merge(runs: &Runs, count: usize, sorted: &File) -> Result<Vec<u64>, GdprError> {
    let capacity = (MERGE_BUFFERS / KEY_BYTES / runs.extents.len().max(1)).max(KEYS_PER_BLOCK);
    let mut cursors: Vec<RunCursor> = runs
        .extents
        .iter()
        .map(|&(next, end)| RunCursor {
            next,
            end,
            buffer: Vec::new(),
            at: 0,
        })
        .collect();
    let mut heads = BinaryHeap::new();
    for (run, cursor) in cursors.iter_mut().enumerate() {
        if let Some(key) = cursor.next_key(&runs.file, capacity)? {
            heads.push(Reverse((key, run)));
        }
    }
    let mut writer = BufWriter::new(sorted);
    let mut block_starts = Vec::with_capacity(count.div_ceil(KEYS_PER_BLOCK));
    let mut written = 0;
    while let Some(Reverse((key, run))) = heads.pop() {
        if written % KEYS_PER_BLOCK == 0 {
            block_starts.push(key.0);
        }
        writer.write_all(&encode(key)).map_err(spool_error)?;
        written += 1;
        if let Some(next) = cursors[run].next_key(&runs.file, capacity)? {
            heads.push(Reverse((next, run)));
        }
    }
    writer.flush().map_err(spool_error)?;
    Ok(block_starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(file_name: &str) -> ManifestRecord {
        ManifestRecord {
            file_name: file_name.to_owned(),
            ..ManifestRecord::default()
        }
    }

    #[test]
    fn records_are_found_by_entry_across_runs_and_blocks() {
        // More keys than one run, one name shared by many records (a run of equal keys
        // across block boundaries), names never pushed, and entries taken twice.
        let keys_per_run = 10 * KEYS_PER_BLOCK;
        let mut index = RecordIndex::sorting_in_runs_of(keys_per_run).unwrap();
        let count = 3 * keys_per_run + 3 * KEYS_PER_BLOCK + 5;
        for n in 0..count {
            let name = if n % 20 == 7 {
                "shared".to_owned()
            } else {
                format!("entry-{n}")
            };
            index
                .push(format!("mxc://example.org/m{n}"), record(&name))
                .unwrap();
        }
        index.seal().unwrap();
        let shared = index.take("shared").unwrap().unwrap();
        let mut mxcs: Vec<_> = shared.iter().map(|s| s.mxc.clone()).collect();
        mxcs.sort();
        let mut expected: Vec<_> = (0..count)
            .filter(|n| n % 20 == 7)
            .map(|n| format!("mxc://example.org/m{n}"))
            .collect();
        expected.sort();
        assert_eq!(mxcs, expected);
        assert!(index.take("shared").unwrap().unwrap().is_empty());
        assert!(index.take("never pushed").unwrap().is_none());
        for n in (0..count).filter(|n| n % 20 != 7 && n % 3 != 0) {
            let records = index.take(&format!("entry-{n}")).unwrap().unwrap();
            assert_eq!(records.len(), 1, "entry-{n}");
            assert_eq!(records[0].mxc, format!("mxc://example.org/m{n}"));
        }
        let mut remaining = Vec::new();
        index
            .for_each_remaining(|spooled| remaining.push(spooled.record.file_name))
            .unwrap();
        remaining.sort();
        let mut expected: Vec<_> = (0..count)
            .filter(|n| n % 20 != 7 && n % 3 == 0)
            .map(|n| format!("entry-{n}"))
            .collect();
        expected.sort();
        assert_eq!(remaining, expected);
    }

    #[test]
    fn an_empty_index_finds_nothing() {
        let mut index = RecordIndex::new().unwrap();
        index.seal().unwrap();
        assert!(index.take("anything").unwrap().is_none());
        index
            .for_each_remaining(|_| panic!("nothing was pushed"))
            .unwrap();
    }
}
