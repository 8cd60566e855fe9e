//! Putting ahead: the small files a worker's batch of items reads from the media store,
//! put in one blocking call per datastore ([`Datastore::put_local_many`]) before the
//! items are stored one by one, which then only take the answers. For small files, a
//! blocking call each (a thread woken, then the task woken back) cost more than their
//! own reads and writes.
//!
//! The media go first; a media's thumbnails only once its own bytes are stored, as
//! storing one item at a time does: a media that fails leaves no thumbnail behind.

use std::sync::Arc;

use media_core::datastore::{Datastore, LocalPut, LocalPutResult};

use crate::context::Context;
use crate::copy::{asks_first, opener_in_media_store};
use crate::plan::{SourceFile, WorkItem};
use crate::sink::Content;

/// What the put ahead answered for one item's files: its media's, and each thumbnail's
/// (in the order of the item's thumbnails); `None` for a file it did not put.
#[derive(Debug, Default)]
pub(crate) struct ItemPuts {
    pub media: Option<LocalPutResult>,
    pub thumbnails: Vec<Option<LocalPutResult>>,
}

/// Which file of an item.
#[derive(Debug, Clone, Copy)]
enum FileOf {
    Media,
    Thumbnail(usize),
}

/// A file of an item: the item's index, and which of its files.
type Place = (usize, FileOf);

/// One file to put ahead: where it belongs, which content of its media, and where it is.
type Wanted<'a> = (Place, Content, &'a SourceFile);

/// The files that go to one datastore in one call, each with where it belongs.
struct StoreBatch<'a> {
    store: &'a Arc<dyn Datastore>,
    files: Vec<LocalPut>,
    places: Vec<Place>,
}

/// Puts ahead the files of `items` that a real run reads from the media store without
/// asking the sink first ([`asks_first`]); one answer per item, in order. A dry run,
/// or a run with no media store, puts nothing ahead.
pub(crate) async fn put_ahead(context: &Context, items: &[WorkItem]) -> Vec<ItemPuts> {
    let mut answers: Vec<ItemPuts> = items
        .iter()
        .map(|item| ItemPuts {
            media: None,
            thumbnails: item.thumbnails.iter().map(|_| None).collect(),
        })
        .collect();
    if !context.options.mode.applies() || context.options.media_store.is_none() {
        return answers;
    }
    // An item the repository records already is only compared.
    let media = items
        .iter()
        .enumerate()
        .filter(|(_, item)| item.existing.is_none())
        .map(|(index, item)| ((index, FileOf::Media), Content::Media, &item.content));
    for ((index, _), answer) in put_files(context, items, media.collect()).await {
        answers[index].media = Some(answer);
    }
    let thumbnails = items
        .iter()
        .enumerate()
        .filter(|(index, _)| matches!(answers[*index].media, Some(Ok(Ok(_)))))
        .flat_map(|(index, item)| {
            item.thumbnails
                .iter()
                .enumerate()
                .filter_map(move |(n, t)| {
                    let file = &t.as_ref().ok()?.file;
                    Some(((index, FileOf::Thumbnail(n)), Content::Thumbnail, file))
                })
        });
    for ((index, which), answer) in put_files(context, items, thumbnails.collect()).await {
        if let FileOf::Thumbnail(n) = which {
            answers[index].thumbnails[n] = Some(answer);
        }
    }
    answers
}

/// Puts those of `wanted` that are not asked about first, one call per datastore;
/// each answer with the file it is for.
async fn put_files(
    context: &Context,
    items: &[WorkItem],
    wanted: Vec<Wanted<'_>>,
) -> Vec<(Place, LocalPutResult)> {
    let Some(root) = &context.options.media_store else {
        return Vec::new();
    };
    let mut batches: Vec<StoreBatch> = Vec::new();
    for (place, content, file) in wanted {
        if asks_first(&file.expected) {
            continue;
        }
        let store = context
            .sink
            .datastore_for(&items[place.0].media.key, content);
        let batch = match batches.iter().position(|b| Arc::ptr_eq(b.store, store)) {
            Some(batch) => batch,
            None => {
                batches.push(StoreBatch {
                    store,
                    files: Vec::new(),
                    places: Vec::new(),
                });
                batches.len() - 1
            }
        };
        batches[batch].files.push(LocalPut {
            open: opener_in_media_store(root, &file.path, &file.expected),
            options: file.expected.clone(),
        });
        batches[batch].places.push(place);
    }
    let mut answers = Vec::new();
    for batch in batches {
        let answered = batch.store.put_local_many(batch.files).await;
        answers.extend(batch.places.into_iter().zip(answered));
    }
    answers
}
