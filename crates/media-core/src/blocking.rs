//! Work that waits on the disk, spread over a few blocking threads.

/// Applies `work` to every item on up to `threads` blocking threads, each taking an
/// equal share of `items` and working through it one item after the other; returns the
/// results in the order of `items`. For many small file operations (a stat, an unlink, a
/// hash of a few KiB), a thread hand-off per item costs more than the item, while one
/// thread for all leaves the disk waiting on one request at a time.
///
/// Errors: a thread that panicked (its panic, as tokio reports it).
pub async fn map_on_threads<T, R, F>(
    items: Vec<T>,
    threads: usize,
    work: F,
) -> Result<Vec<R>, tokio::task::JoinError>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> R + Clone + Send + 'static,
{
    let share = items.len().div_ceil(threads.max(1)).max(1);
    let mut items = items.into_iter();
    let mut shares = Vec::new();
    loop {
        let part: Vec<T> = items.by_ref().take(share).collect();
        if part.is_empty() {
            break;
        }
        let work = work.clone();
        shares.push(tokio::task::spawn_blocking(move || {
            part.into_iter().map(work).collect::<Vec<R>>()
        }));
    }
    let mut results = Vec::new();
    for share in shares {
        results.extend(share.await?);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_item_is_worked_once_and_the_results_keep_their_order() {
        for (count, threads) in [(0, 4), (1, 8), (7, 3), (100, 8), (5, 0)] {
            let items: Vec<u32> = (0..count).collect();
            let doubled = map_on_threads(items.clone(), threads, |i| i * 2)
                .await
                .unwrap();
            assert_eq!(
                doubled,
                items.iter().map(|i| i * 2).collect::<Vec<_>>(),
                "{count} items on {threads} threads"
            );
        }
    }
}
