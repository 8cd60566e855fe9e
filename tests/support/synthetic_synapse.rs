//! Large, Synapse-shaped media stores for benchmarks and kill-and-resume tests.
//!
//! [`write_synapse_sqlite`] writes a SQLite database with Synapse's media tables (plus the
//! avatar tables retention reads: `users`, `profiles`, `room_stats_state`,
//! `current_state_events`, `event_json`, and the `events` of the rooms media were posted
//! in) and a `media_store` folder with a real file at the
//! exact path Synapse uses for every media and thumbnail row. [`copy_into_postgres`] copies
//! the same rows into an empty PostgreSQL database with Synapse's PostgreSQL column types.
//!
//! What the generated store looks like:
//! - Everything is deterministic from [`SyntheticSpec::seed`]: the same spec gives the same
//!   rows and the same bytes.
//! - File bytes are pseudo-random (xorshift) and incompressible. A `duplicate_ratio` share of
//!   the media reuse the exact bytes of an earlier media: both rows and both files exist, as
//!   Synapse does not deduplicate on disk. Their thumbnails are byte-identical too (the same
//!   picture gives the same thumbnails).
//! - `sha256`: like a server upgraded to Synapse 1.128 halfway through its life, the older
//!   half of the media rows (by `created_ts`) have `sha256` NULL and the newer half carry the
//!   correct lowercase hex SHA-256 of their bytes. The hashes come from the `sha256sum`
//!   command run over many files at once when it exists, else from a built-in (slower)
//!   implementation; the values are the same either way.
//! - Every media was posted in one of [`MEDIA_ROOMS`] rooms (`!media{n}:synthetic.test`,
//!   media `i` in room `i % MEDIA_ROOMS`): an `m.image` event with `content.url` and
//!   `content.info.thumbnail_url` both its MXC, flagged `contains_url` as Synapse flags
//!   it, indexed by Synapse's `event_contains_url_index`. [`add_text_events`] adds events
//!   without media, to make the `events` table as large as a real server's.
//! - The newer half also has `authenticated` true. `quarantined_by`, `url_cache` are NULL,
//!   `safe_from_quarantine` is false; every row has its file (no missing files, no orphans).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, Row, SqlSafeStr, SqlStr};

const SERVER_NAME: &str = "synthetic.test";
const USERS: usize = 100;
const REMOTE_ORIGINS: u64 = 3;
const ROOMS: usize = 2;
const MEMBER_EVENTS: usize = 8;
/// Rooms the media are posted in.
pub const MEDIA_ROOMS: usize = 50;
/// `created_ts` of the first media (2020-09-13), ms.
const BASE_TS: i64 = 1_600_000_000_000;
const DAY_MS: u64 = 86_400_000;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const DEFAULT_SEED: u64 = 0x5eed_0f5c_a1ab_1e55;

/// What [`write_synapse_sqlite`] generates.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Number of media rows, local and remote together.
    pub media: usize,
    /// Smallest media file, in bytes.
    pub min_size: u64,
    /// Largest media file, in bytes (inclusive); sizes are uniform in `min_size..=max_size`.
    pub max_size: u64,
    /// Share (0–1) of media that reuse the exact bytes of an earlier media.
    pub duplicate_ratio: f64,
    /// Share (0–1) of media that are remote (`remote_media_cache`) rather than local.
    pub remote_ratio: f64,
    /// Thumbnails per media (rows and files); the first is 32x32 `crop`.
    pub thumbnails_per_media: usize,
    /// Seed of every random choice and of the file bytes.
    pub seed: u64,
}

impl SyntheticSpec {
    /// `count` media of 4–64 KiB, 20% duplicates, 10% remote, one thumbnail each.
    pub fn small_media(count: usize) -> Self {
        Self {
            media: count,
            min_size: 4 * KIB,
            max_size: 64 * KIB,
            duplicate_ratio: 0.2,
            remote_ratio: 0.1,
            thumbnails_per_media: 1,
            seed: DEFAULT_SEED,
        }
    }

    /// Media of 1–16 MiB, as many as make about `total_bytes` on disk (duplicates included),
    /// 20% duplicates, 10% remote, no thumbnails.
    pub fn large_media(total_bytes: u64) -> Self {
        let (min_size, max_size) = (MIB, 16 * MIB);
        let mean = (min_size + max_size) as f64 / 2.0;
        Self {
            media: ((total_bytes as f64 / mean).round() as usize).max(1),
            min_size,
            max_size,
            duplicate_ratio: 0.2,
            remote_ratio: 0.1,
            thumbnails_per_media: 0,
            seed: DEFAULT_SEED,
        }
    }
}

/// A store written by [`write_synapse_sqlite`].
#[derive(Debug, Clone)]
pub struct SyntheticStore {
    /// The folder holding the database and the media store.
    pub dir: PathBuf,
    /// Synapse's SQLite database (`<dir>/homeserver.db`).
    pub sqlite_path: PathBuf,
    /// Synapse's `media_store_path` (`<dir>/media_store`).
    pub media_store: PathBuf,
    /// The homeserver name of local media and users (`synthetic.test`).
    pub server_name: String,
    /// Media rows (local + remote).
    pub media: usize,
    /// Files written: media files and thumbnail files.
    pub files: usize,
    /// Bytes of all files, thumbnails and duplicates included.
    pub total_bytes: u64,
    /// Bytes of distinct contents (media and thumbnails): what a content-addressed store keeps.
    pub unique_bytes: u64,
}

// ---------------------------------------------------------------------------------------
// Schema

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Int,
    BigInt,
    SmallInt,
    Bool,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
}

use Kind::{BigInt, Bool, Int, SmallInt, Text};

/// Every table, in the column order of both schemas below.
const TABLES: &[Table] = &[
    Table {
        name: "local_media_repository",
        columns: &[
            ("media_id", Text),
            ("media_type", Text),
            ("media_length", Int),
            ("created_ts", BigInt),
            ("upload_name", Text),
            ("user_id", Text),
            ("quarantined_by", Text),
            ("url_cache", Text),
            ("last_access_ts", BigInt),
            ("safe_from_quarantine", Bool),
            ("authenticated", Bool),
            ("sha256", Text),
        ],
    },
    Table {
        name: "remote_media_cache",
        columns: &[
            ("media_origin", Text),
            ("media_id", Text),
            ("media_type", Text),
            ("created_ts", BigInt),
            ("upload_name", Text),
            ("media_length", Int),
            ("filesystem_id", Text),
            ("last_access_ts", BigInt),
            ("quarantined_by", Text),
            ("authenticated", Bool),
            ("sha256", Text),
        ],
    },
    Table {
        name: "local_media_repository_thumbnails",
        columns: &[
            ("media_id", Text),
            ("thumbnail_width", Int),
            ("thumbnail_height", Int),
            ("thumbnail_type", Text),
            ("thumbnail_method", Text),
            ("thumbnail_length", Int),
        ],
    },
    Table {
        name: "remote_media_cache_thumbnails",
        columns: &[
            ("media_origin", Text),
            ("media_id", Text),
            ("thumbnail_width", Int),
            ("thumbnail_height", Int),
            ("thumbnail_method", Text),
            ("thumbnail_type", Text),
            ("thumbnail_length", Int),
            ("filesystem_id", Text),
        ],
    },
    Table {
        name: "users",
        columns: &[
            ("name", Text),
            ("password_hash", Text),
            ("creation_ts", BigInt),
            ("admin", SmallInt),
            ("is_guest", SmallInt),
            ("deactivated", SmallInt),
        ],
    },
    Table {
        name: "profiles",
        columns: &[
            ("user_id", Text),
            ("displayname", Text),
            ("avatar_url", Text),
            ("full_user_id", Text),
        ],
    },
    Table {
        name: "room_stats_state",
        columns: &[("room_id", Text), ("name", Text), ("avatar", Text)],
    },
    Table {
        name: "current_state_events",
        columns: &[
            ("event_id", Text),
            ("room_id", Text),
            ("type", Text),
            ("state_key", Text),
            ("membership", Text),
        ],
    },
    Table {
        name: "events",
        columns: &[
            ("stream_ordering", BigInt),
            ("topological_ordering", BigInt),
            ("event_id", Text),
            ("type", Text),
            ("room_id", Text),
            ("outlier", Bool),
            ("contains_url", Bool),
        ],
    },
    Table {
        name: "event_json",
        columns: &[
            ("event_id", Text),
            ("room_id", Text),
            ("internal_metadata", Text),
            ("json", Text),
            ("format_version", Int),
        ],
    },
];

const SQLITE_SCHEMA: &str = "
CREATE TABLE local_media_repository ( media_id TEXT, media_type TEXT, media_length INTEGER, created_ts BIGINT, upload_name TEXT, user_id TEXT, quarantined_by TEXT, url_cache TEXT, last_access_ts BIGINT, safe_from_quarantine BOOLEAN NOT NULL DEFAULT 0, authenticated BOOLEAN DEFAULT FALSE NOT NULL, sha256 TEXT, UNIQUE (media_id) );
CREATE TABLE remote_media_cache ( media_origin TEXT, media_id TEXT, media_type TEXT, created_ts BIGINT, upload_name TEXT, media_length INTEGER, filesystem_id TEXT, last_access_ts BIGINT, quarantined_by TEXT, authenticated BOOLEAN DEFAULT FALSE NOT NULL, sha256 TEXT, UNIQUE (media_origin, media_id) );
CREATE TABLE local_media_repository_thumbnails ( media_id TEXT, thumbnail_width INTEGER, thumbnail_height INTEGER, thumbnail_type TEXT, thumbnail_method TEXT, thumbnail_length INTEGER, UNIQUE ( media_id, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method ) );
CREATE TABLE remote_media_cache_thumbnails ( media_origin TEXT, media_id TEXT, thumbnail_width INTEGER, thumbnail_height INTEGER, thumbnail_method TEXT, thumbnail_type TEXT, thumbnail_length INTEGER, filesystem_id TEXT, UNIQUE ( media_origin, media_id, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method ) );
CREATE TABLE users( name TEXT, password_hash TEXT, creation_ts BIGINT, admin SMALLINT DEFAULT 0 NOT NULL, is_guest SMALLINT DEFAULT 0 NOT NULL, deactivated SMALLINT DEFAULT 0 NOT NULL, UNIQUE(name) );
CREATE TABLE profiles( user_id TEXT NOT NULL, displayname TEXT, avatar_url TEXT, full_user_id TEXT, UNIQUE(user_id) );
CREATE TABLE room_stats_state (room_id TEXT NOT NULL, name TEXT, avatar TEXT);
CREATE TABLE current_state_events(event_id TEXT NOT NULL, room_id TEXT NOT NULL, type TEXT NOT NULL, state_key TEXT NOT NULL, membership TEXT);
CREATE TABLE event_json(event_id TEXT NOT NULL, room_id TEXT NOT NULL, internal_metadata TEXT NOT NULL, json TEXT NOT NULL, format_version INTEGER);
CREATE TABLE events( stream_ordering INTEGER PRIMARY KEY, topological_ordering BIGINT NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL, room_id TEXT NOT NULL, outlier BOOL NOT NULL, contains_url BOOLEAN, UNIQUE (event_id) );
";

const PG_SCHEMA: &str = "
CREATE TABLE local_media_repository ( media_id text, media_type text, media_length integer, created_ts bigint, upload_name text, user_id text, quarantined_by text, url_cache text, last_access_ts bigint, safe_from_quarantine boolean DEFAULT false NOT NULL, authenticated boolean DEFAULT false NOT NULL, sha256 text, UNIQUE (media_id) );
CREATE TABLE remote_media_cache ( media_origin text, media_id text, media_type text, created_ts bigint, upload_name text, media_length integer, filesystem_id text, last_access_ts bigint, quarantined_by text, authenticated boolean DEFAULT false NOT NULL, sha256 text, UNIQUE (media_origin, media_id) );
CREATE TABLE local_media_repository_thumbnails ( media_id text, thumbnail_width integer, thumbnail_height integer, thumbnail_type text, thumbnail_method text, thumbnail_length integer, UNIQUE ( media_id, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method ) );
CREATE TABLE remote_media_cache_thumbnails ( media_origin text, media_id text, thumbnail_width integer, thumbnail_height integer, thumbnail_method text, thumbnail_type text, thumbnail_length integer, filesystem_id text, UNIQUE ( media_origin, media_id, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method ) );
CREATE TABLE users ( name text, password_hash text, creation_ts bigint, admin smallint DEFAULT 0 NOT NULL, is_guest smallint DEFAULT 0 NOT NULL, deactivated smallint DEFAULT 0 NOT NULL, UNIQUE (name) );
CREATE TABLE profiles ( user_id text NOT NULL, displayname text, avatar_url text, full_user_id text, UNIQUE (user_id) );
CREATE TABLE room_stats_state ( room_id text NOT NULL, name text, avatar text );
CREATE TABLE current_state_events ( event_id text NOT NULL, room_id text NOT NULL, type text NOT NULL, state_key text NOT NULL, membership text );
CREATE TABLE event_json ( event_id text NOT NULL, room_id text NOT NULL, internal_metadata text NOT NULL, json text NOT NULL, format_version integer );
CREATE TABLE events ( stream_ordering bigint, topological_ordering bigint NOT NULL, event_id text NOT NULL, type text NOT NULL, room_id text NOT NULL, outlier boolean NOT NULL, contains_url boolean, UNIQUE (event_id) );
";

/// Synapse's secondary media indexes, created after the bulk load (same SQL on both).
const INDEXES: &str = "
CREATE INDEX users_have_local_media ON local_media_repository (user_id, created_ts);
CREATE INDEX local_media_repository_url_idx ON local_media_repository (created_ts) WHERE url_cache IS NOT NULL;
CREATE INDEX local_media_repository_sha256 ON local_media_repository (sha256) WHERE sha256 IS NOT NULL;
CREATE INDEX remote_media_cache_sha256 ON remote_media_cache (sha256) WHERE sha256 IS NOT NULL;
CREATE UNIQUE INDEX event_json_event_id ON event_json (event_id);
CREATE INDEX events_order_room ON events (room_id, topological_ordering, stream_ordering);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX event_contains_url_index ON events (room_id, topological_ordering, stream_ordering) WHERE contains_url = true AND outlier = false;
";

// ---------------------------------------------------------------------------------------
// Randomness

/// SplitMix64's finaliser: a good 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The plan's random choices (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn letters(&mut self, n: usize) -> String {
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        (0..n)
            .map(|_| LETTERS[self.below(LETTERS.len() as u64) as usize] as char)
            .collect()
    }

    /// 24 letters never handed out before (media and filesystem IDs are all distinct).
    fn unique_id(&mut self, seen: &mut HashSet<String>) -> String {
        loop {
            let id = self.letters(24);
            if seen.insert(id.clone()) {
                return id;
            }
        }
    }
}

/// Fills `buf[..len]` with incompressible bytes from an xorshift64 stream seeded by `seed`
/// (the buffer only grows, so it is never zeroed again) and returns that part.
fn fill(buf: &mut Vec<u8>, len: usize, seed: u64) -> &[u8] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let out = &mut buf[..len];
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s.to_le_bytes()
    };
    let mut chunks = out.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&next());
    }
    let rest = chunks.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&next()[..n]);
    &buf[..len]
}

// ---------------------------------------------------------------------------------------
// The plan: every row, decided before anything is written

struct Content {
    size: u64,
    seed: u64,
    /// The media whose file is written from scratch; later media with this content copy it.
    first: usize,
    /// Some row of this content carries `sha256`.
    needs_hash: bool,
}

struct PlannedMedia {
    /// Remote origin number (`remote{n}.example:8448`), `None` for local media.
    origin: Option<u64>,
    media_id: String,
    /// Remote media only.
    filesystem_id: Option<String>,
    content: usize,
    created_ts: i64,
    last_access_ts: i64,
    user: usize,
    /// Uploaded "after the upgrade to Synapse 1.128": has sha256 and `authenticated`.
    newer: bool,
}

struct Plan {
    media: Vec<PlannedMedia>,
    contents: Vec<Content>,
    thumbnails: usize,
    /// Per user: a local media for the profile avatar (~10% of users).
    profile_avatar: Vec<Option<usize>>,
    /// Per room: avatar media.
    room_avatar: Vec<Option<usize>>,
    /// Member events in room 0: (event ID, user, avatar media).
    members: Vec<(String, usize, Option<usize>)>,
}

/// The event that posted media `i`.
fn media_event_id(i: usize) -> String {
    format!("$media{i}")
}

/// The room media `i` was posted in.
pub fn media_room_id(i: usize) -> String {
    format!("!media{}:{SERVER_NAME}", i % MEDIA_ROOMS)
}

fn origin_name(n: u64) -> String {
    format!("remote{n}.example:8448")
}

fn user_id(n: usize) -> String {
    format!("@user{n}:{SERVER_NAME}")
}

fn mxc(media_id: &str) -> String {
    format!("mxc://{SERVER_NAME}/{media_id}")
}

/// Width, height and method of a media's `k`-th thumbnail (Synapse's default sizes first).
fn thumbnail_dims(k: usize) -> (i64, i64, &'static str) {
    const DEFAULTS: [(i64, i64, &str); 5] = [
        (32, 32, "crop"),
        (96, 96, "crop"),
        (320, 240, "scale"),
        (640, 480, "scale"),
        (800, 600, "scale"),
    ];
    DEFAULTS
        .get(k)
        .copied()
        .unwrap_or((100 * k as i64, 100 * k as i64, "scale"))
}

fn thumbnail_name(k: usize) -> String {
    let (w, h, method) = thumbnail_dims(k);
    format!("{w}-{h}-image-jpeg-{method}")
}

/// Seed and length (2–8 KiB) of the `k`-th thumbnail of a content.
fn thumbnail_bytes(content_seed: u64, k: usize) -> (u64, u64) {
    let seed = mix(content_seed.rotate_left(23) ^ (k as u64 + 1));
    (seed, 2 * KIB + mix(seed) % (6 * KIB))
}

impl Plan {
    fn new(spec: &SyntheticSpec) -> Self {
        let mut rng = Rng(spec.seed);
        let mut seen = HashSet::new();
        let mut media: Vec<PlannedMedia> = Vec::with_capacity(spec.media);
        let mut contents: Vec<Content> = Vec::new();
        let size_span = (spec.max_size - spec.min_size).saturating_add(1);
        let mut ts = BASE_TS;
        for n in 0..spec.media {
            ts += 1 + rng.below(120_000) as i64;
            let newer = n >= spec.media / 2;
            let content = if n > 0 && rng.chance(spec.duplicate_ratio) {
                media[rng.below(n as u64) as usize].content
            } else {
                contents.push(Content {
                    size: spec.min_size + rng.below(size_span),
                    seed: mix(spec.seed ^ mix(contents.len() as u64 + 1)),
                    first: n,
                    needs_hash: false,
                });
                contents.len() - 1
            };
            contents[content].needs_hash |= newer;
            let (origin, filesystem_id) = if rng.chance(spec.remote_ratio) {
                (
                    Some(1 + rng.below(REMOTE_ORIGINS)),
                    Some(rng.unique_id(&mut seen)),
                )
            } else {
                (None, None)
            };
            media.push(PlannedMedia {
                origin,
                media_id: rng.unique_id(&mut seen),
                filesystem_id,
                content,
                created_ts: ts,
                last_access_ts: ts + rng.below(30 * DAY_MS) as i64,
                user: rng.below(USERS as u64) as usize,
                newer,
            });
        }

        let mut local_of_user: Vec<Vec<usize>> = vec![Vec::new(); USERS];
        for (i, m) in media.iter().enumerate() {
            if m.origin.is_none() {
                local_of_user[m.user].push(i);
            }
        }
        let profile_avatar = (0..USERS)
            .map(|u| {
                (u % 10 == 0)
                    .then(|| local_of_user[u].first().copied())
                    .flatten()
            })
            .collect();
        let locals: Vec<usize> = local_of_user.iter().flatten().copied().collect();
        let mut room_avatar = vec![None; ROOMS];
        if !locals.is_empty() {
            room_avatar[0] = Some(locals[rng.below(locals.len() as u64) as usize]);
        }
        let members = (0..MEMBER_EVENTS)
            .map(|u| {
                let avatar = (u % 2 == 0)
                    .then(|| local_of_user[u].last().copied())
                    .flatten();
                (format!("${}", rng.letters(43)), u, avatar)
            })
            .collect();
        Self {
            media,
            contents,
            thumbnails: spec.thumbnails_per_media,
            profile_avatar,
            room_avatar,
            members,
        }
    }

    fn media_path(&self, root: &Path, m: &PlannedMedia) -> PathBuf {
        match (m.origin, &m.filesystem_id) {
            (Some(origin), Some(fid)) => root
                .join("remote_content")
                .join(origin_name(origin))
                .join(&fid[0..2])
                .join(&fid[2..4])
                .join(&fid[4..]),
            _ => root
                .join("local_content")
                .join(&m.media_id[0..2])
                .join(&m.media_id[2..4])
                .join(&m.media_id[4..]),
        }
    }

    fn thumbnail_dir(&self, root: &Path, m: &PlannedMedia) -> PathBuf {
        match (m.origin, &m.filesystem_id) {
            (Some(origin), Some(fid)) => root
                .join("remote_thumbnail")
                .join(origin_name(origin))
                .join(&fid[0..2])
                .join(&fid[2..4])
                .join(&fid[4..]),
            _ => root
                .join("local_thumbnails")
                .join(&m.media_id[0..2])
                .join(&m.media_id[2..4])
                .join(&m.media_id[4..]),
        }
    }

    /// (files, total bytes, unique bytes).
    fn totals(&self) -> (usize, u64, u64) {
        let thumbs_of = |c: &Content| -> u64 {
            (0..self.thumbnails)
                .map(|k| thumbnail_bytes(c.seed, k).1)
                .sum()
        };
        let total = self
            .media
            .iter()
            .map(|m| {
                let c = &self.contents[m.content];
                c.size + thumbs_of(c)
            })
            .sum();
        let unique = self.contents.iter().map(|c| c.size + thumbs_of(c)).sum();
        (self.media.len() * (1 + self.thumbnails), total, unique)
    }
}

// ---------------------------------------------------------------------------------------
// Files

/// Threads for file generation and hashing.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Runs `work` over `items` on a few threads, each with its own reusable buffer.
fn for_each_parallel<T: Sync>(items: &[T], work: impl Fn(&T, &mut Vec<u8>) + Sync) {
    let workers = workers();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers.min(items.len()) {
            scope.spawn(|| {
                let mut buf = Vec::new();
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    work(item, &mut buf);
                }
            });
        }
    });
}

fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn copy_file(from: &Path, to: &Path) {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

/// Writes every file; returns the sha256 of each content that needs one.
fn write_files(root: &Path, plan: &Plan) -> Vec<Option<String>> {
    // Originals first, then duplicates as copies of them.
    for_each_parallel(&plan.contents, |c, buf| {
        let m = &plan.media[c.first];
        write_file(
            &plan.media_path(root, m),
            fill(buf, c.size as usize, c.seed),
        );
        let dir = plan.thumbnail_dir(root, m);
        for k in 0..plan.thumbnails {
            let (seed, len) = thumbnail_bytes(c.seed, k);
            write_file(&dir.join(thumbnail_name(k)), fill(buf, len as usize, seed));
        }
    });
    let duplicates: Vec<&PlannedMedia> = (plan.media.iter().enumerate())
        .filter(|(i, m)| plan.contents[m.content].first != *i)
        .map(|(_, m)| m)
        .collect();
    for_each_parallel(&duplicates, |m, _| {
        let original = &plan.media[plan.contents[m.content].first];
        copy_file(&plan.media_path(root, original), &plan.media_path(root, m));
        let (from, to) = (
            plan.thumbnail_dir(root, original),
            plan.thumbnail_dir(root, m),
        );
        for k in 0..plan.thumbnails {
            copy_file(&from.join(thumbnail_name(k)), &to.join(thumbnail_name(k)));
        }
    });

    let wanted: Vec<(usize, PathBuf)> = (plan.contents.iter().enumerate())
        .filter(|(_, c)| c.needs_hash)
        .map(|(i, c)| (i, plan.media_path(root, &plan.media[c.first])))
        .collect();
    let hashes = Mutex::new(vec![None; plan.contents.len()]);
    let use_command = sha256sum_available();
    // Small enough batches that every core gets some, large enough to spawn few processes.
    let per_batch = (wanted.len() / (4 * workers())).clamp(1, 256);
    let batches: Vec<&[(usize, PathBuf)]> = wanted.chunks(per_batch).collect();
    for_each_parallel(&batches, |batch, _| {
        let paths: Vec<&Path> = batch.iter().map(|(_, p)| p.as_path()).collect();
        let digests = if use_command {
            sha256sum(&paths)
        } else {
            (paths.iter())
                .map(|p| {
                    let bytes =
                        std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                    sha256_hex(&bytes)
                })
                .collect()
        };
        let mut hashes = hashes.lock().expect("hash table");
        for ((content, _), digest) in batch.iter().zip(digests) {
            hashes[*content] = Some(digest);
        }
    });
    hashes.into_inner().expect("hash table")
}

fn sha256sum_available() -> bool {
    Command::new("sha256sum")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Lowercase hex SHA-256 of each file, in order, from one `sha256sum` run.
fn sha256sum(paths: &[&Path]) -> Vec<String> {
    let out = Command::new("sha256sum")
        .arg("--")
        .args(paths)
        .output()
        .expect("run sha256sum");
    assert!(
        out.status.success(),
        "sha256sum failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digests: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            // A leading backslash marks an escaped file name; the digest follows it.
            let line = line.strip_prefix('\\').unwrap_or(line);
            let digest = line.get(..64).unwrap_or_default();
            assert!(
                digest.bytes().all(|b| b.is_ascii_hexdigit()) && digest.len() == 64,
                "unexpected sha256sum output: {line}"
            );
            digest.to_ascii_lowercase()
        })
        .collect();
    assert_eq!(digests.len(), paths.len(), "sha256sum output lines");
    digests
}

/// SHA-256 (FIPS 180-4) as lowercase hex: the fallback when `sha256sum` is missing.
fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    fn compress(state: &mut [u32; 8], block: &[u8]) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }

    let mut state: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        compress(&mut state, block);
    }
    let rest = blocks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let end = if rest.len() < 56 { 64 } else { 128 };
    tail[end - 8..end].copy_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in tail[..end].chunks_exact(64) {
        compress(&mut state, block);
    }
    state.iter().map(|s| format!("{s:08x}")).collect()
}

// ---------------------------------------------------------------------------------------
// SQLite

enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(Some(s.into()))
}

fn table(name: &str) -> &'static Table {
    TABLES.iter().find(|t| t.name == name).expect("known table")
}

fn column_list(table: &Table) -> String {
    let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

/// `INSERT INTO t (...) VALUES ($1, ...), (...)` for `rows` rows.
fn sqlite_insert_sql(table: &Table, rows: usize) -> SqlStr {
    let width = table.columns.len();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        table.name,
        column_list(table),
        values.join(", ")
    );
    AssertSqlSafe(sql).into_sql_str()
}

/// Bound parameters per multi-row INSERT. SQLite looks `$N` names up linearly, so very wide
/// statements cost more than they save.
const SQLITE_PARAMS_PER_STATEMENT: usize = 400;

/// Inserts `rows` (values in the table's column order) with multi-row prepared statements.
async fn sqlite_insert(
    conn: &mut SqliteConnection,
    name: &str,
    rows: impl IntoIterator<Item = Vec<Value>>,
) {
    let table = table(name);
    let per_statement = (SQLITE_PARAMS_PER_STATEMENT / table.columns.len()).max(1);
    let full = sqlite_insert_sql(table, per_statement);
    let mut rows = rows.into_iter();
    loop {
        let batch: Vec<Vec<Value>> = rows.by_ref().take(per_statement).collect();
        if batch.is_empty() {
            break;
        }
        let sql = if batch.len() == per_statement {
            full.clone()
        } else {
            sqlite_insert_sql(table, batch.len())
        };
        let mut query = sqlx::query(sql);
        for row in batch {
            debug_assert_eq!(row.len(), table.columns.len(), "{name} row width");
            for value in row {
                query = match value {
                    Value::Text(v) => query.bind(v),
                    Value::Int(v) => query.bind(v),
                    Value::Bool(v) => query.bind(v),
                };
            }
        }
        query
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("insert into {name}: {e}"));
    }
}

async fn write_sqlite(path: &Path, plan: &Plan, hashes: &[Option<String>]) {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .synchronous(SqliteSynchronous::Off);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    sqlx::raw_sql(SQLITE_SCHEMA)
        .execute(&mut conn)
        .await
        .expect("create the Synapse tables");
    let mut tx = conn.begin().await.expect("begin");

    let sha256 =
        |m: &PlannedMedia| Value::Text(m.newer.then(|| hashes[m.content].clone()).flatten());
    let length = |m: &PlannedMedia| Value::Int(Some(plan.contents[m.content].size as i64));
    let local = (plan.media.iter().enumerate()).filter(|(_, m)| m.origin.is_none());
    let remote = (plan.media.iter().enumerate()).filter(|(_, m)| m.origin.is_some());
    sqlite_insert(
        &mut tx,
        "local_media_repository",
        local.clone().map(|(n, m)| {
            vec![
                text(&m.media_id),
                text("image/jpeg"),
                length(m),
                Value::Int(Some(m.created_ts)),
                text(format!("file{n}.jpg")),
                text(user_id(m.user)),
                Value::Text(None),
                Value::Text(None),
                Value::Int(Some(m.last_access_ts)),
                Value::Bool(false),
                Value::Bool(m.newer),
                sha256(m),
            ]
        }),
    )
    .await;
    sqlite_insert(
        &mut tx,
        "remote_media_cache",
        remote.clone().map(|(n, m)| {
            vec![
                text(origin_name(m.origin.unwrap_or_default())),
                text(&m.media_id),
                text("image/jpeg"),
                Value::Int(Some(m.created_ts)),
                text(format!("file{n}.jpg")),
                length(m),
                Value::Text(m.filesystem_id.clone()),
                Value::Int(Some(m.last_access_ts)),
                Value::Text(None),
                Value::Bool(m.newer),
                sha256(m),
            ]
        }),
    )
    .await;
    let thumbnails = |m: &PlannedMedia| {
        let seed = plan.contents[m.content].seed;
        (0..plan.thumbnails).map(move |k| {
            let (w, h, method) = thumbnail_dims(k);
            (w, h, method, thumbnail_bytes(seed, k).1 as i64)
        })
    };
    sqlite_insert(
        &mut tx,
        "local_media_repository_thumbnails",
        local.flat_map(|(_, m)| {
            thumbnails(m).map(|(w, h, method, len)| {
                vec![
                    text(&m.media_id),
                    Value::Int(Some(w)),
                    Value::Int(Some(h)),
                    text("image/jpeg"),
                    text(method),
                    Value::Int(Some(len)),
                ]
            })
        }),
    )
    .await;
    sqlite_insert(
        &mut tx,
        "remote_media_cache_thumbnails",
        remote.flat_map(|(_, m)| {
            thumbnails(m).map(|(w, h, method, len)| {
                vec![
                    text(origin_name(m.origin.unwrap_or_default())),
                    text(&m.media_id),
                    Value::Int(Some(w)),
                    Value::Int(Some(h)),
                    text(method),
                    text("image/jpeg"),
                    Value::Int(Some(len)),
                    Value::Text(m.filesystem_id.clone()),
                ]
            })
        }),
    )
    .await;

    sqlite_insert(
        &mut tx,
        "users",
        (0..USERS).map(|u| {
            vec![
                text(user_id(u)),
                text(format!("$2b$12$synthetic.password.hash.of.user{u:0>30}")),
                Value::Int(Some(BASE_TS / 1000 - 86_400 + 60 * u as i64)),
                Value::Int(Some(i64::from(u == 0))),
                Value::Int(Some(0)),
                Value::Int(Some(0)),
            ]
        }),
    )
    .await;
    sqlite_insert(
        &mut tx,
        "profiles",
        (0..USERS).map(|u| {
            vec![
                text(format!("user{u}")),
                text(format!("User {u}")),
                Value::Text(plan.profile_avatar[u].map(|i| mxc(&plan.media[i].media_id))),
                text(user_id(u)),
            ]
        }),
    )
    .await;
    let room_id = |r: usize| format!("!room{r}:{SERVER_NAME}");
    sqlite_insert(
        &mut tx,
        "room_stats_state",
        (0..ROOMS).map(|r| {
            vec![
                text(room_id(r)),
                text(format!("Synthetic room {r}")),
                Value::Text(plan.room_avatar[r].map(|i| mxc(&plan.media[i].media_id))),
            ]
        }),
    )
    .await;
    sqlite_insert(
        &mut tx,
        "current_state_events",
        plan.members.iter().map(|(event_id, u, _)| {
            vec![
                text(event_id),
                text(room_id(0)),
                text("m.room.member"),
                text(user_id(*u)),
                text("join"),
            ]
        }),
    )
    .await;
    sqlite_insert(
        &mut tx,
        "event_json",
        plan.members.iter().map(|(event_id, u, avatar)| {
            let avatar = avatar
                .map(|i| format!(",\"avatar_url\":\"{}\"", mxc(&plan.media[i].media_id)))
                .unwrap_or_default();
            let json = format!(
                "{{\"type\":\"m.room.member\",\"room_id\":\"{room}\",\"sender\":\"{user}\",\
                 \"state_key\":\"{user}\",\"content\":{{\"membership\":\"join\",\
                 \"displayname\":\"User {u}\"{avatar}}}}}",
                room = room_id(0),
                user = user_id(*u),
            );
            vec![
                text(event_id),
                text(room_id(0)),
                text("{}"),
                text(json),
                Value::Int(Some(3)),
            ]
        }),
    )
    .await;
    let media_mxc = |m: &PlannedMedia| match m.origin {
        Some(n) => format!("mxc://{}/{}", origin_name(n), m.media_id),
        None => mxc(&m.media_id),
    };
    sqlite_insert(
        &mut tx,
        "events",
        plan.media.iter().enumerate().map(|(i, _)| {
            vec![
                Value::Int(Some(i as i64 + 1)),
                Value::Int(Some(i as i64 + 1)),
                text(media_event_id(i)),
                text("m.room.message"),
                text(media_room_id(i)),
                Value::Bool(false),
                Value::Bool(true),
            ]
        }),
    )
    .await;
    sqlite_insert(
        &mut tx,
        "event_json",
        plan.media.iter().enumerate().map(|(i, m)| {
            let json = format!(
                "{{\"type\":\"m.room.message\",\"room_id\":\"{room}\",\"sender\":\"{user}\",\
                 \"content\":{{\"msgtype\":\"m.image\",\"body\":\"file{i}.jpg\",\
                 \"url\":\"{url}\",\"info\":{{\"mimetype\":\"image/jpeg\",\
                 \"thumbnail_url\":\"{url}\"}}}}}}",
                room = media_room_id(i),
                user = user_id(m.user),
                url = media_mxc(m),
            );
            vec![
                text(media_event_id(i)),
                text(media_room_id(i)),
                text("{}"),
                text(json),
                Value::Int(Some(3)),
            ]
        }),
    )
    .await;

    tx.commit().await.expect("commit the Synapse rows");
    sqlx::raw_sql(INDEXES)
        .execute(&mut conn)
        .await
        .expect("create the Synapse indexes");
    conn.close().await.ok();
}

/// Writes a Synapse-shaped store into `dir` (created if missing): `dir/homeserver.db` and
/// `dir/media_store`. Panics on any failure, or if `dir/homeserver.db` already exists.
pub async fn write_synapse_sqlite(dir: &Path, spec: &SyntheticSpec) -> SyntheticStore {
    assert!(
        spec.min_size <= spec.max_size,
        "min_size {} > max_size {}",
        spec.min_size,
        spec.max_size
    );
    assert!(
        spec.max_size <= i32::MAX as u64,
        "media_length is an INTEGER column: max_size must fit in 31 bits"
    );
    for ratio in [spec.duplicate_ratio, spec.remote_ratio] {
        assert!((0.0..=1.0).contains(&ratio), "ratio {ratio} not in 0..=1");
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let sqlite_path = dir.join("homeserver.db");
    assert!(
        !sqlite_path.exists(),
        "{} already exists: generate into an empty folder",
        sqlite_path.display()
    );
    let media_store = dir.join("media_store");

    let (spec_owned, root) = (spec.clone(), media_store.clone());
    let (plan, hashes) = tokio::task::spawn_blocking(move || {
        let plan = Plan::new(&spec_owned);
        let hashes = write_files(&root, &plan);
        (plan, hashes)
    })
    .await
    .expect("the file generator panicked");
    write_sqlite(&sqlite_path, &plan, &hashes).await;

    let (files, total_bytes, unique_bytes) = plan.totals();
    SyntheticStore {
        dir: dir.to_path_buf(),
        sqlite_path,
        media_store,
        server_name: SERVER_NAME.to_owned(),
        media: plan.media.len(),
        files,
        total_bytes,
        unique_bytes,
    }
}

/// Adds `count` text messages (no media, `contains_url` false) to `store`'s SQLite
/// database, spread over the media rooms after the events already there: an `events`
/// table as large as a busy server's, for measuring what reading the rooms' media costs.
/// Call it before [`copy_into_postgres`]. Panics on any failure.
pub async fn add_text_events(store: &SyntheticStore, count: usize) {
    let options = SqliteConnectOptions::new()
        .filename(&store.sqlite_path)
        .synchronous(SqliteSynchronous::Off);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", store.sqlite_path.display()));
    let first: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(stream_ordering), 0) + 1 FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("read the last stream ordering");
    let mut tx = conn.begin().await.expect("begin");
    let event = |n: usize| {
        (
            first + n as i64,
            format!("$text{}", first + n as i64),
            media_room_id(n),
        )
    };
    sqlite_insert(
        &mut tx,
        "events",
        (0..count).map(|n| {
            let (ordering, event_id, room) = event(n);
            vec![
                Value::Int(Some(ordering)),
                Value::Int(Some(ordering)),
                text(event_id),
                text("m.room.message"),
                text(room),
                Value::Bool(false),
                Value::Bool(false),
            ]
        }),
    )
    .await;
    sqlite_insert(
        &mut tx,
        "event_json",
        (0..count).map(|n| {
            let (_, event_id, room) = event(n);
            let json = format!(
                "{{\"type\":\"m.room.message\",\"room_id\":\"{room}\",\
                 \"content\":{{\"msgtype\":\"m.text\",\"body\":\"message {n}\"}}}}"
            );
            vec![
                text(event_id),
                text(room),
                text("{}"),
                text(json),
                Value::Int(Some(3)),
            ]
        }),
    )
    .await;
    tx.commit().await.expect("commit the text events");
    sqlx::query("ANALYZE")
        .execute(&mut conn)
        .await
        .expect("analyze");
    conn.close().await.ok();
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

enum Column {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i32>>),
    BigInt(Vec<Option<i64>>),
    SmallInt(Vec<Option<i16>>),
    Bool(Vec<Option<bool>>),
}

impl Column {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Text => Column::Text(Vec::new()),
            Kind::Int => Column::Int(Vec::new()),
            Kind::BigInt => Column::BigInt(Vec::new()),
            Kind::SmallInt => Column::SmallInt(Vec::new()),
            Kind::Bool => Column::Bool(Vec::new()),
        }
    }
}

fn pg_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Int => "integer",
        Kind::BigInt => "bigint",
        Kind::SmallInt => "smallint",
        Kind::Bool => "boolean",
    }
}

/// Creates Synapse's tables in the EMPTY PostgreSQL database at `database_url` and copies
/// every row of `store`'s SQLite database into them (10,000 rows per `UNNEST` insert, one
/// transaction), then creates the media indexes and runs `ANALYZE`. Panics on any failure.
pub async fn copy_into_postgres(store: &SyntheticStore, database_url: &str) {
    const ROWS_PER_INSERT: i64 = 10_000;
    let mut pg = PgConnection::connect(database_url)
        .await
        .unwrap_or_else(|e| panic!("connect to {database_url}: {e}"));
    let options = SqliteConnectOptions::new()
        .filename(&store.sqlite_path)
        .read_only(true);
    let mut lite = SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", store.sqlite_path.display()));

    let mut tx = pg.begin().await.expect("begin");
    sqlx::raw_sql(PG_SCHEMA)
        .execute(&mut *tx)
        .await
        .expect("create the Synapse tables (is the database empty?)");
    for table in TABLES {
        let columns = column_list(table);
        let select = AssertSqlSafe(format!(
            "SELECT rowid, {columns} FROM {} WHERE rowid > $1 ORDER BY rowid LIMIT $2",
            table.name
        ))
        .into_sql_str();
        let casts: Vec<String> = (table.columns.iter().enumerate())
            .map(|(i, (_, kind))| format!("${}::{}[]", i + 1, pg_type(*kind)))
            .collect();
        let insert = AssertSqlSafe(format!(
            "INSERT INTO {} ({columns}) SELECT * FROM UNNEST({})",
            table.name,
            casts.join(", ")
        ))
        .into_sql_str();

        let mut after: i64 = 0;
        loop {
            let rows = sqlx::query(select.clone())
                .bind(after)
                .bind(ROWS_PER_INSERT)
                .fetch_all(&mut lite)
                .await
                .unwrap_or_else(|e| panic!("read {}: {e}", table.name));
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            let mut data: Vec<Column> =
                table.columns.iter().map(|(_, k)| Column::new(*k)).collect();
            for row in &rows {
                for (i, column) in data.iter_mut().enumerate() {
                    let at = i + 1;
                    let name = table.columns[i].0;
                    let int = || -> Option<i64> {
                        row.try_get(at)
                            .unwrap_or_else(|e| panic!("{}.{name}: {e}", table.name))
                    };
                    match column {
                        Column::Text(v) => v.push(
                            row.try_get(at)
                                .unwrap_or_else(|e| panic!("{}.{name}: {e}", table.name)),
                        ),
                        Column::Int(v) => {
                            v.push(int().map(|x| {
                                i32::try_from(x).expect("value fits a PostgreSQL integer")
                            }))
                        }
                        Column::BigInt(v) => v.push(int()),
                        Column::SmallInt(v) => {
                            v.push(int().map(|x| {
                                i16::try_from(x).expect("value fits a PostgreSQL smallint")
                            }))
                        }
                        Column::Bool(v) => v.push(
                            row.try_get(at)
                                .unwrap_or_else(|e| panic!("{}.{name}: {e}", table.name)),
                        ),
                    }
                }
            }
            let mut query = sqlx::query(insert.clone());
            for column in data {
                query = match column {
                    Column::Text(v) => query.bind(v),
                    Column::Int(v) => query.bind(v),
                    Column::BigInt(v) => query.bind(v),
                    Column::SmallInt(v) => query.bind(v),
                    Column::Bool(v) => query.bind(v),
                };
            }
            query
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("insert into {}: {e}", table.name));
            if (rows.len() as i64) < ROWS_PER_INSERT {
                break;
            }
        }
    }
    sqlx::raw_sql(INDEXES)
        .execute(&mut *tx)
        .await
        .expect("create the Synapse indexes");
    tx.commit().await.expect("commit the copy");
    sqlx::raw_sql("ANALYZE")
        .execute(&mut pg)
        .await
        .expect("analyze");
    pg.close().await.ok();
    lite.close().await.ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("file type").is_dir() {
                walk(&entry.path(), files);
            } else {
                files.push(entry.path());
            }
        }
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len()
    }

    async fn open(store: &SyntheticStore) -> SqliteConnection {
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&store.sqlite_path))
            .await
            .expect("open the generated database")
    }

    #[test]
    fn sha256_matches_known_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(&[b'a'; 56]),
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"
        );
    }

    #[tokio::test]
    async fn every_row_has_its_file() {
        let tmp = tempfile::tempdir().expect("temporary folder");
        let spec = SyntheticSpec::small_media(2_000);
        let store = write_synapse_sqlite(tmp.path(), &spec).await;
        assert_eq!(store.media, 2_000);
        assert_eq!(store.files, 4_000);
        let mut conn = open(&store).await;
        let root = &store.media_store;
        let mut expected_files = HashSet::new();

        let local: Vec<(String, i64, Option<String>)> =
            sqlx::query_as("SELECT media_id, media_length, sha256 FROM local_media_repository")
                .fetch_all(&mut conn)
                .await
                .expect("local rows");
        let remote: Vec<(String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT media_origin, filesystem_id, media_length, sha256 FROM remote_media_cache",
        )
        .fetch_all(&mut conn)
        .await
        .expect("remote rows");
        assert_eq!(local.len() + remote.len(), 2_000);
        assert!(
            (100..320).contains(&remote.len()),
            "~10% remote: {}",
            remote.len()
        );
        let origins: HashSet<&str> = remote.iter().map(|r| r.0.as_str()).collect();
        assert!(origins.len() > 1 && origins.iter().all(|o| o.ends_with(".example:8448")));

        let mut hashed = Vec::new();
        for (id, len, sha) in &local {
            let path = root
                .join("local_content")
                .join(&id[..2])
                .join(&id[2..4])
                .join(&id[4..]);
            assert_eq!(size(&path), *len as u64, "{}", path.display());
            hashed.extend(sha.clone().map(|s| (path.clone(), s)));
            expected_files.insert(path);
        }
        for (origin, fid, len, sha) in &remote {
            let path = root
                .join("remote_content")
                .join(origin)
                .join(&fid[..2])
                .join(&fid[2..4])
                .join(&fid[4..]);
            assert_eq!(size(&path), *len as u64, "{}", path.display());
            hashed.extend(sha.clone().map(|s| (path.clone(), s)));
            expected_files.insert(path);
        }
        let thumbs: Vec<(String, i64, i64, String, String, i64)> = sqlx::query_as(
            "SELECT media_id, thumbnail_width, thumbnail_height, thumbnail_type, \
             thumbnail_method, thumbnail_length FROM local_media_repository_thumbnails",
        )
        .fetch_all(&mut conn)
        .await
        .expect("local thumbnails");
        for (id, w, h, ty, method, len) in &thumbs {
            assert_eq!(
                (*w, *h, ty.as_str(), method.as_str()),
                (32, 32, "image/jpeg", "crop")
            );
            let path = root
                .join("local_thumbnails")
                .join(&id[..2])
                .join(&id[2..4])
                .join(&id[4..])
                .join(format!("{w}-{h}-image-jpeg-{method}"));
            assert_eq!(size(&path), *len as u64, "{}", path.display());
            expected_files.insert(path);
        }
        let remote_thumbs: Vec<(String, String, i64, i64, String, i64)> = sqlx::query_as(
            "SELECT media_origin, filesystem_id, thumbnail_width, thumbnail_height, \
             thumbnail_method, thumbnail_length FROM remote_media_cache_thumbnails",
        )
        .fetch_all(&mut conn)
        .await
        .expect("remote thumbnails");
        for (origin, fid, w, h, method, len) in &remote_thumbs {
            let path = root
                .join("remote_thumbnail")
                .join(origin)
                .join(&fid[..2])
                .join(&fid[2..4])
                .join(&fid[4..])
                .join(format!("{w}-{h}-image-jpeg-{method}"));
            assert_eq!(size(&path), *len as u64, "{}", path.display());
            expected_files.insert(path);
        }
        assert_eq!(thumbs.len() + remote_thumbs.len(), 2_000);

        // Exactly the rows' files exist, with the announced sizes.
        let mut on_disk = Vec::new();
        walk(root, &mut on_disk);
        assert_eq!(on_disk.len(), store.files);
        assert_eq!(on_disk.iter().collect::<HashSet<_>>().len(), store.files);
        assert!(on_disk.iter().all(|p| expected_files.contains(p)));
        assert_eq!(
            on_disk.iter().map(|p| size(p)).sum::<u64>(),
            store.total_bytes
        );

        // Distinct contents: random bytes, so (length, first 32 bytes) identifies a content.
        let mut distinct = HashSet::new();
        let mut unique_bytes = 0;
        for path in &on_disk {
            let bytes = std::fs::read(path).expect("read");
            if distinct.insert((bytes.len(), bytes[..32].to_vec())) {
                unique_bytes += bytes.len() as u64;
            }
        }
        assert_eq!(unique_bytes, store.unique_bytes);
        let dup_share = 1.0 - distinct.len() as f64 / on_disk.len() as f64;
        assert!((0.15..0.25).contains(&dup_share), "duplicates: {dup_share}");

        // The newer half carries correct hashes.
        assert_eq!(hashed.len(), 1_000);
        for (path, sha) in hashed.iter().step_by(50) {
            assert_eq!(&sha256_hex(&std::fs::read(path).expect("read")), sha);
        }
        let (hashes, distinct_hashes): (i64, i64) = sqlx::query_as(
            "SELECT count(sha256), count(DISTINCT sha256) FROM local_media_repository",
        )
        .fetch_one(&mut conn)
        .await
        .expect("hash counts");
        assert!(distinct_hashes < hashes, "duplicates share a sha256");

        // Avatars point at local media.
        let avatars: Vec<(String,)> = sqlx::query_as(
            "SELECT avatar_url FROM profiles WHERE avatar_url IS NOT NULL \
             UNION ALL SELECT avatar FROM room_stats_state WHERE avatar IS NOT NULL \
             UNION ALL SELECT json_extract(json, '$.content.avatar_url') FROM event_json \
             WHERE json_extract(json, '$.content.avatar_url') IS NOT NULL",
        )
        .fetch_all(&mut conn)
        .await
        .expect("avatars");
        assert!(avatars.len() >= 8, "avatars: {avatars:?}");
        for (url,) in &avatars {
            let id = url
                .strip_prefix("mxc://synthetic.test/")
                .expect("local mxc");
            assert!(local.iter().any(|(m, ..)| m == id), "{url}");
        }
        let (users, members): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM current_state_events \
             JOIN event_json USING (event_id) WHERE type = 'm.room.member')",
        )
        .fetch_one(&mut conn)
        .await
        .expect("users");
        assert_eq!((users, members), (100, 8));
    }

    #[tokio::test]
    async fn same_seed_same_store() {
        let spec = SyntheticSpec {
            thumbnails_per_media: 3,
            ..SyntheticSpec::small_media(100)
        };
        let mut dumps = Vec::new();
        for _ in 0..2 {
            let tmp = tempfile::tempdir().expect("temporary folder");
            let store = write_synapse_sqlite(tmp.path(), &spec).await;
            let mut conn = open(&store).await;
            let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
                "SELECT media_id, created_ts, sha256 FROM local_media_repository ORDER BY rowid",
            )
            .fetch_all(&mut conn)
            .await
            .expect("rows");
            let mut files = Vec::new();
            walk(&store.media_store, &mut files);
            files.sort();
            let first = std::fs::read(&files[0]).expect("read");
            let names: Vec<PathBuf> = files
                .iter()
                .map(|p| p.strip_prefix(&store.media_store).expect("inside").into())
                .collect();
            assert_eq!(names.len(), 400);
            dumps.push((rows, names, first, store.unique_bytes));
        }
        assert!(dumps[0] == dumps[1], "the same spec gave different stores");
    }

    #[tokio::test]
    async fn copies_into_postgres() {
        let tmp = tempfile::tempdir().expect("temporary folder");
        let store = write_synapse_sqlite(tmp.path(), &SyntheticSpec::small_media(1_000)).await;
        let db = crate::TestDatabase::postgres().await;
        copy_into_postgres(&store, &db.url).await;

        let mut lite = open(&store).await;
        let mut pg = PgConnection::connect(&db.url).await.expect("connect");
        for table in TABLES {
            let sql = AssertSqlSafe(format!("SELECT count(*) FROM {}", table.name)).into_sql_str();
            let (a,): (i64,) = sqlx::query_as(sql.clone())
                .fetch_one(&mut lite)
                .await
                .expect("sqlite count");
            let (b,): (i64,) = sqlx::query_as(sql)
                .fetch_one(&mut pg)
                .await
                .expect("pg count");
            assert_eq!(a, b, "{}", table.name);
        }
        let lite_rows: Vec<(String, i64, i64, bool, Option<String>)> = sqlx::query_as(
            "SELECT media_id, media_length, created_ts, authenticated, sha256 \
             FROM local_media_repository ORDER BY media_id",
        )
        .fetch_all(&mut lite)
        .await
        .expect("sqlite rows");
        let pg_rows: Vec<(String, i32, i64, bool, Option<String>)> = sqlx::query_as(
            "SELECT media_id, media_length, created_ts, authenticated, sha256 \
             FROM local_media_repository ORDER BY media_id COLLATE \"C\"",
        )
        .fetch_all(&mut pg)
        .await
        .expect("pg rows");
        let pg_rows: Vec<_> = pg_rows
            .into_iter()
            .map(|(a, b, c, d, e)| (a, i64::from(b), c, d, e))
            .collect();
        assert_eq!(lite_rows, pg_rows);
        pg.close().await.ok();
    }
}
