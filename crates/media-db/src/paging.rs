//! Keyset pagination: tables are read one page at a time, never whole.

use futures::stream::{self, BoxStream, StreamExt};

use crate::error::DbError;

/// The last row of a page when the page is full (so another page may follow).
pub(crate) fn full_page<T>(rows: &[T], page_size: i64) -> Option<&T> {
    rows.last().filter(|_| rows.len() as i64 == page_size)
}

/// A stream of pages: `fetch(cursor)` returns a page and the cursor after it (`None`
/// when it was the last page).
pub fn keyset_pages<C, T, F, Fut>(start: C, fetch: F) -> BoxStream<'static, Result<Vec<T>, DbError>>
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
