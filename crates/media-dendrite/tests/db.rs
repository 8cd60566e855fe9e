//! The Dendrite database adapter on real SQLite and PostgreSQL databases with Dendrite's tables.

use futures::TryStreamExt;
use media_core::records::MediaKey;
use media_dendrite::db::{Access, Component, DendriteMediaRow, open_dendrite};
use media_tests::dendrite::{DendriteFixture, Engine, MediaSpec};

const ENGINES: [Engine; 2] = [Engine::Sqlite, Engine::Postgres];

async fn pages(store: &DendriteFixture, rows_per_page: i64) -> Vec<Vec<DendriteMediaRow>> {
    let db = open_dendrite(store.media_url(), Component::MediaApi, Access::ReadOnly)
        .await
        .unwrap();
    let pages = db
        .content_group_pages(rows_per_page)
        .try_collect()
        .await
        .unwrap();
    db.close().await;
    pages
}

/// Pages hold whole content groups, even a group larger than a page, and together every
/// row exactly once.
#[tokio::test]
async fn content_group_pages_never_split_a_group() {
    for engine in ENGINES {
        let store = DendriteFixture::new(engine, false).await;
        let mut expected = Vec::new();
        for i in 0..12 {
            // Content "big" has 5 rows; the others 1 or 2.
            let bytes = match i {
                0..5 => "big".to_owned(),
                _ => format!("c{}", i / 2),
            };
            let media = MediaSpec::remote("o.example", &format!("m{i:02}"), 9, bytes.as_bytes());
            store.add_media(&media).await;
            expected.push(media.mxc());
        }
        let pages = pages(&store, 3).await;
        let mut seen = Vec::new();
        for (i, page) in pages.iter().enumerate() {
            for later in &pages[i + 1..] {
                for row in page {
                    assert!(
                        later.iter().all(|r| r.base64hash != row.base64hash),
                        "{engine:?}: a group was split across pages"
                    );
                }
            }
            seen.extend(
                page.iter()
                    .map(|r| format!("mxc://{}/{}", r.media_origin, r.media_id)),
            );
        }
        assert!(pages.iter().any(|p| p.len() == 5), "{engine:?}: {pages:?}");
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected, "{engine:?}");
        store.finish().await;
    }
}

/// Deletion matches media ID AND origin, in both tables, and counts what it removed.
#[tokio::test]
async fn delete_media_takes_exactly_the_named_keys() {
    for engine in ENGINES {
        let store = DendriteFixture::new(engine, false).await;
        let a = MediaSpec::remote("a.example", "same", 9, b"a");
        let b = MediaSpec::remote("b.example", "same", 9, b"b");
        store.add_media(&a).await;
        store.add_media(&b).await;
        let db = open_dendrite(store.media_url(), Component::MediaApi, Access::ReadWrite)
            .await
            .unwrap();
        let key = MediaKey::new("a.example".parse().unwrap(), "same".parse().unwrap());
        assert_eq!(
            db.count_thumbnails(std::slice::from_ref(&key))
                .await
                .unwrap(),
            1
        );
        let deleted = db.delete_media(&[key]).await.unwrap();
        assert_eq!((deleted.media, deleted.thumbnails), (1, 1), "{engine:?}");
        let in_use = db.contents_in_use(&[a.hash(), b.hash()]).await.unwrap();
        assert_eq!(in_use.into_iter().collect::<Vec<_>>(), [b.hash()]);
        db.close().await;
        assert_eq!(
            store.media_mxcs().await.into_iter().collect::<Vec<_>>(),
            [b.mxc()]
        );
        store.finish().await;
    }
}

/// The sample the unmounted-folder check reads: random rows, at most as many as asked,
/// each a whole row of the table.
#[tokio::test]
async fn sample_media_returns_at_most_n_real_rows() {
    for engine in ENGINES {
        let store = DendriteFixture::new(engine, false).await;
        let mut all = std::collections::BTreeSet::new();
        for i in 0..7 {
            let media =
                MediaSpec::remote("o.example", &format!("s{i}"), 9, format!("{i}").as_bytes());
            store.add_media(&media).await;
            all.insert((media.mxc(), media.hash()));
        }
        let db = open_dendrite(store.media_url(), Component::MediaApi, Access::ReadOnly)
            .await
            .unwrap();
        let sample = db.sample_media(5).await.unwrap();
        assert_eq!(sample.len(), 5, "{engine:?}");
        for row in &sample {
            let key = (
                format!("mxc://{}/{}", row.media_origin, row.media_id),
                row.base64hash.clone(),
            );
            assert!(all.contains(&key), "{engine:?}: {row:?}");
        }
        assert_eq!(db.sample_media(50).await.unwrap().len(), 7);
        db.close().await;
        store.finish().await;
    }
}
