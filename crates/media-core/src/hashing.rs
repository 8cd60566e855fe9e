//! Hash bytes while they stream, so no file is ever read twice.

use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::ids::Sha256Hex;

/// An [`AsyncRead`] adapter that feeds every byte it passes on into a SHA-256 hasher and
/// counts them. Call [`HashingReader::finish`] after the inner reader reached its end.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Bytes passed on so far.
    pub fn bytes_read(&self) -> u64 {
        self.len
    }

    /// The digest and length of everything read.
    pub fn finish(self) -> (Sha256Hex, u64) {
        (
            Sha256Hex::from_digest(&self.hasher.finalize().into()),
            self.len,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let fresh = &buf.filled()[before..];
            self.hasher.update(fresh);
            self.len += fresh.len() as u64;
        }
        poll
    }
}

/// The blocking twin: hashes what a [`std::io::Read`] yields (a file read on a blocking
/// thread, without an async hop per read).
impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Reads `reader` to its end on the calling thread (it blocks): the SHA-256 and length of
/// what it yielded.
pub fn digest_of_read(reader: impl std::io::Read) -> std::io::Result<(Sha256Hex, u64)> {
    let mut hashing = HashingReader::new(reader);
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    Ok(hashing.finish())
}

/// Hashes a byte slice in one go (for tests and small in-memory payloads).
pub fn sha256_of(bytes: &[u8]) -> Sha256Hex {
    Sha256Hex::from_digest(&Sha256::digest(bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn hashes_what_passes_through() {
        let data = b"hello world".repeat(10_000);
        let mut reader = HashingReader::new(&data[..]);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        let (hash, len) = reader.finish();
        assert_eq!(len, data.len() as u64);
        assert_eq!(hash, sha256_of(&data));
    }

    #[test]
    fn known_digest_of_empty_input() {
        assert_eq!(
            sha256_of(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
