//! Opening files in Synapse's media store without ever leaving it.
//!
//! Files are opened with [`open_regular_beneath`]: no link below the media store root is
//! followed, and only regular files are opened (a FIFO cannot block the open). Readers of the opened file read at most the length Synapse recorded plus
//! one byte ([`read_limit`]), so a file longer than recorded is reported, not copied.

use std::fs::File;
use std::io;
use std::path::Path;

use media_core::local_files::open_regular_beneath;

/// Opens the regular file at `relative` below the media store `root`, following no
/// link below `root` (see [`open_regular_beneath`]).
pub fn open_in_media_store(root: &Path, relative: &Path) -> io::Result<File> {
    open_regular_beneath(root, relative, "the media store")
}

/// How many bytes to read from a file Synapse recorded `recorded` bytes for (or, when
/// it recorded none, whose length is `current`): one more than expected, so that a
/// longer file is seen to be longer without reading the rest of it.
pub fn read_limit(recorded: Option<u64>, current: u64) -> u64 {
    recorded.unwrap_or(current).saturating_add(1)
}

/// An async reader that fails once its source yields more than `limit` bytes: for
/// content whose length nobody recorded, so that a source that never ends is cut off
/// with an error instead of being stored in part.
#[derive(Debug)]
pub struct RefuseBeyond<R> {
    inner: R,
    limit: u64,
    left: u64,
    scratch: Vec<u8>,
}

impl<R> RefuseBeyond<R> {
    /// Reads `inner`, failing past `limit` bytes.
    pub fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            limit,
            left: limit,
            scratch: Vec::new(),
        }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for RefuseBeyond<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = &mut *self;
        // One byte more than allowed is enough to see that the source goes on.
        let allowed = usize::try_from(this.left.saturating_add(1)).unwrap_or(usize::MAX);
        let room = buf.remaining().min(allowed);
        this.scratch.resize(room, 0);
        let mut scratch = tokio::io::ReadBuf::new(&mut this.scratch[..room]);
        std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut scratch))?;
        let n = scratch.filled().len();
        if n as u64 > this.left {
            return std::task::Poll::Ready(Err(io::Error::other(format!(
                "the content goes on past {} bytes and its length was not recorded: refused",
                this.limit
            ))));
        }
        this.left -= n as u64;
        buf.put_slice(&this.scratch[..n]);
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{FileType, Mode};
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn read(root: &Path, relative: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        open_in_media_store(root, Path::new(relative))?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    #[test]
    fn links_at_any_level_below_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media_store");
        std::fs::create_dir_all(root.join("local_content/ab/cd")).unwrap();
        std::fs::write(root.join("local_content/ab/cd/ok"), b"fine").unwrap();
        std::fs::write(dir.path().join("secret"), b"root only").unwrap();
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        std::fs::write(dir.path().join("elsewhere/file"), b"root only").unwrap();
        symlink(
            dir.path().join("secret"),
            root.join("local_content/ab/cd/file"),
        )
        .unwrap();
        symlink(
            dir.path().join("elsewhere"),
            root.join("local_content/ab/ef"),
        )
        .unwrap();
        assert_eq!(read(&root, "local_content/ab/cd/ok").unwrap(), b"fine");
        for linked in ["local_content/ab/cd/file", "local_content/ab/ef/file"] {
            let error = read(&root, linked).unwrap_err().to_string();
            assert!(error.contains("never followed"), "{linked}: {error}");
        }
        assert_eq!(
            read(&root, "local_content/ab/cd/missing")
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        // The root itself may be a link: the operator chose it.
        let linked_root = dir.path().join("store-link");
        symlink(&root, &linked_root).unwrap();
        assert_eq!(
            read(&linked_root, "local_content/ab/cd/ok").unwrap(),
            b"fine"
        );
    }

    #[test]
    fn a_fifo_or_a_folder_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let error = read(dir.path(), "fifo").unwrap_err().to_string();
        assert!(error.contains("a FIFO, not a regular file"), "{error}");
        std::fs::create_dir(dir.path().join("folder")).unwrap();
        let error = read(dir.path(), "folder").unwrap_err().to_string();
        assert!(error.contains("a folder"), "{error}");
    }

    #[tokio::test]
    async fn content_past_the_limit_is_refused_not_cut() {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        let mut exact = RefuseBeyond::new(&[7u8; 10][..], 10);
        exact.read_to_end(&mut out).await.unwrap();
        assert_eq!(out.len(), 10);
        let mut endless = RefuseBeyond::new(tokio::io::repeat(0), 1000);
        let error = endless.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(error.to_string().contains("past 1000 bytes"), "{error}");
    }

    #[test]
    fn the_read_limit_is_one_byte_past_the_recorded_length() {
        assert_eq!(read_limit(Some(58), 1 << 40), 59);
        assert_eq!(read_limit(None, 10), 11);
        assert_eq!(read_limit(Some(u64::MAX), 0), u64::MAX);
    }
}
