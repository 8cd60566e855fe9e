//! Peak memory of concurrent large puts into an S3 datastore: run it under
//! `/usr/bin/time -v` and read "Maximum resident set size".
//!
//! ```text
//! S3_TEST_ENDPOINT=http://127.0.0.1:9000 AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… \
//!   /usr/bin/time -v cargo run -p media-store --example s3_put_memory -- [PUTS] [MIB]
//! ```
//!
//! Puts `PUTS` (default 8) generated blobs of `MIB` MiB (default 64) at once, with their
//! digest unknown (the temporary-object path) and then known (straight to the blob key),
//! into a fresh prefix of `S3_TEST_BUCKET` (default `media-tests`) that it empties
//! afterwards. The bytes are generated while they stream, so the process holds only what
//! the datastore buffers.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use media_core::datastore::{Datastore, PutOptions};
use media_store::conformance::S3TestStore;
use tokio::io::{AsyncRead, ReadBuf};

/// `remaining` bytes of xorshift noise from `state`, generated as they are read.
struct Noise {
    state: u64,
    remaining: u64,
}

impl AsyncRead for Noise {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.remaining).min(64 << 10) as usize;
        let mut bytes = vec![0; n];
        for chunk in bytes.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        buf.put_slice(&bytes);
        self.remaining -= n as u64;
        Poll::Ready(Ok(()))
    }
}

fn noise(seed: u64, mib: u64) -> Noise {
    Noise {
        state: seed | 1,
        remaining: mib << 20,
    }
}

/// The digest of a generated blob, computed in 1 MiB steps (never the whole blob).
fn digest_of(seed: u64, mib: u64) -> media_core::ids::Sha256Hex {
    use sha2::Digest;
    let mut source = noise(seed, mib);
    let mut hasher = sha2::Sha256::new();
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut chunk = vec![0; 1 << 20];
    loop {
        let mut buf = ReadBuf::new(&mut chunk);
        let _ = Pin::new(&mut source).poll_read(&mut cx, &mut buf);
        if buf.filled().is_empty() {
            break;
        }
        hasher.update(buf.filled());
    }
    media_core::ids::Sha256Hex::from_digest(&hasher.finalize().into())
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("a number"));
    let puts = args.next().unwrap_or(8);
    let mib = args.next().unwrap_or(64);
    let test = S3TestStore::new().await;
    let store = &*test.store;
    for known in [false, true] {
        let started = Instant::now();
        let tasks = (0..puts).map(|i| async move {
            let seed = 1000 * u64::from(known) + i;
            let options = if known {
                PutOptions::expecting(Some(digest_of(seed, mib)), Some(mib << 20))
            } else {
                PutOptions::default()
            };
            store
                .put(&mut noise(seed, mib), &options)
                .await
                .expect("put")
        });
        let done = futures::future::join_all(tasks).await;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "digest {}: {} puts of {mib} MiB in {seconds:.1} s ({:.0} MiB/s)",
            if known { "known" } else { "unknown" },
            done.len(),
            (puts * mib) as f64 / seconds
        );
    }
}
