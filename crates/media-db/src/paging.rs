//! Keyset pagination: tables are read one page at a time, never whole.

use futures::stream::{self, BoxStream, StreamExt};

use crate::error::DbError;

/// The last row of a page when the page is full (so another page may follow).
pub(crate) fn full_page<T>(rows: &[T], page_size: i64) -> Option<&T> {
    rows.last().filter(|_| rows.len() as i64 == page_size)
}

/// A stream of pages: `fetch(cursor)` returns a page and the cursor after it (`None`
/// when it was the last page).
pub(crate) fn keyset_pages<C, T, F, Fut>(
    start: C,
    fetch: F,
) -> BoxStream<'static, Result<Vec<T>, DbError>>
where
    C: Send + 'static,
    T: Send + 'static,
    F: Fn(C) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<C>), DbError>> + Send + 'static,
{
    stream::try_unfold(Some(start), move |cursor| {
        let page = cursor.map(&fetch);
        async move {
            match page {
                None => Ok(None),
                Some(page) => {
                    let (rows, next) = page.await?;
                    Ok((!rows.is_empty()).then_some((rows, next)))
                }
            }
        }
    })
    .boxed()
}

/// `pages`, read one page ahead on a task of their own: the next page is fetched while
/// the consumer works on this one, and no further.
pub(crate) fn read_ahead<T: Send + 'static>(
    mut pages: BoxStream<'static, Result<T, DbError>>,
) -> BoxStream<'static, Result<T, DbError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        // The slot is reserved before the fetch: a page is read only once the consumer
        // has taken the one before. A consumer that stopped has dropped the receiver.
        while let Ok(slot) = sender.reserve().await {
            let Some(page) = pages.next().await else {
                break;
            };
            let failed = page.is_err();
            slot.send(page);
            if failed {
                break;
            }
        }
    });
    stream::unfold(receiver, |mut receiver| async move {
        let page = receiver.recv().await?;
        Some((page, receiver))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;

    /// Pages 0, 1, 2, … up to `last` (page `fail_at` is an error); counts the fetches.
    fn numbered_pages(
        last: usize,
        fail_at: Option<usize>,
        fetched: Arc<AtomicUsize>,
    ) -> BoxStream<'static, Result<Vec<usize>, DbError>> {
        keyset_pages(0, move |page: usize| {
            fetched.fetch_add(1, SeqCst);
            async move {
                if Some(page) == fail_at {
                    return Err(DbError::InvalidUrl {
                        url: String::new(),
                        reason: format!("page {page}"),
                    });
                }
                Ok((vec![page], (page < last).then_some(page + 1)))
            }
        })
    }

    async fn settle() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn read_ahead_fetches_exactly_one_page_ahead_in_order() {
        let fetched = Arc::new(AtomicUsize::new(0));
        let mut pages = read_ahead(numbered_pages(4, None, fetched.clone()));
        settle().await;
        assert_eq!(fetched.load(SeqCst), 1, "fetched before anyone asked");
        let mut seen = Vec::new();
        while let Some(page) = pages.next().await {
            seen.extend(page.unwrap());
            settle().await;
            // The page handed out, and the one after it (when there is one).
            assert_eq!(fetched.load(SeqCst), (seen.len() + 1).min(5));
        }
        assert_eq!(seen, [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn read_ahead_ends_with_the_first_error_or_when_dropped() {
        let fetched = Arc::new(AtomicUsize::new(0));
        let pages: Vec<_> = read_ahead(numbered_pages(9, Some(2), fetched.clone()))
            .collect()
            .await;
        assert_eq!(pages.len(), 3);
        assert!(pages[2].is_err());
        assert_eq!(fetched.load(SeqCst), 3);

        let fetched = Arc::new(AtomicUsize::new(0));
        let mut pages = read_ahead(numbered_pages(9, None, fetched.clone()));
        pages.next().await.unwrap().unwrap();
        settle().await;
        drop(pages);
        settle().await;
        assert_eq!(
            fetched.load(SeqCst),
            2,
            "kept reading after the consumer left"
        );
    }
}
