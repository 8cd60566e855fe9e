//! Repository write throughput: insert-or-get blob + media insert, in batches.
//!
//! `cargo bench -p media-db --bench repository` runs on SQLite, and on PostgreSQL too when
//! `DATABASE_URL` points at a server where a database may be created (scripts/test shows
//! how to start a throwaway one). `BENCH_MEDIA` (default 50000) and `BENCH_BATCH`
//! (default 500) change the shape. One media in five reuses the bytes of another.

use std::sync::Arc;
use std::time::Instant;

use media_core::datastore::DatastoreExt;
use media_core::records::{MediaKey, MediaRecord, Purpose};
use media_db::{MediaIndex, NewMedia, connect};
use media_store::MemoryDatastore;
use media_tests::TestDatabase;
use media_tests::bench::env_or;

async fn bench(db: TestDatabase, count: usize, batch_size: usize) {
    let repo = connect(&db.url).await.unwrap();
    let store = Arc::new(MemoryDatastore::new());
    let datastore_id = repo.register_datastore("memory://bench").await.unwrap();
    let uploader: media_core::ids::UserId = "@bench:example.org".parse().unwrap();
    let mut media = Vec::with_capacity(count);
    for i in 0..count {
        // Every fifth media repeats the bytes of the one before it.
        let content = if i % 5 == 4 { i - 1 } else { i };
        let put = store
            .put_bytes(content.to_string().as_bytes())
            .await
            .unwrap();
        media.push(NewMedia {
            record: MediaRecord {
                key: MediaKey::new(
                    "example.org".parse().unwrap(),
                    format!("media{i:08}").parse().unwrap(),
                ),
                sha256: put.blob.sha256,
                size_bytes: put.blob.size,
                upload_name: Some(format!("file{i}.jpg")),
                content_type: Some("image/jpeg".into()),
                uploader: Some(uploader.clone()),
                created_ts: 1_700_000_000_000 + i as i64,
                last_access_ts: None,
                quarantined: false,
                quarantined_by: None,
                purpose: Purpose::None,
                imported_from: Some("bench".into()),
            },
            thumbnails: Vec::new(),
            datastore_id,
        });
    }
    let start = Instant::now();
    for batch in media.chunks(batch_size) {
        repo.insert_media_batch(batch, &*store).await.unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "{}: {count} media (+ blobs, 20% shared) in batches of {batch_size}: {:.2} s, {:.0} rows/s",
        db.label,
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    repo.close().await;
}

#[tokio::main]
async fn main() {
    let count: usize = env_or("BENCH_MEDIA", 50_000);
    let batch: usize = env_or("BENCH_BATCH", 500);
    bench(TestDatabase::sqlite(), count, batch).await;
    if std::env::var_os("DATABASE_URL").is_some() {
        bench(TestDatabase::postgres().await, count, batch).await;
    } else {
        println!("postgres: skipped (set DATABASE_URL to include it)");
    }
}
