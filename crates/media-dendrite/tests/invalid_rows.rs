//! A Dendrite media row whose identifiers are invalid cannot be planned: it is listed as
//! a failure and kept, and so is the hash directory it uses; every other row is purged as
//! usual, in a dry run and in a real run alike.

use media_core::Progress;
use media_core::run::{Report, RunMode};
use media_dendrite::{
    CleanOptions, DendriteConfig, FailureReason, MountTables, Repair, Request, clean,
};
use media_tests::dendrite::{DendriteFixture, Engine, MediaSpec};

#[tokio::test]
async fn a_row_with_an_invalid_media_id_is_a_listed_failure_and_keeps_its_directory() {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let store = DendriteFixture::new(engine, false).await;
        let shared_valid = MediaSpec::remote("other.example", "old", 60, b"shared");
        // No server generates a media ID with a dot (Dendrite serves `[A-Za-z0-9_=-]+`):
        // a row that could name a path outside its folder.
        let shared_invalid = MediaSpec::remote("other.example", "dot.ted", 60, b"shared");
        let solo = MediaSpec::remote("other.example", "solo", 60, b"solo");
        // Padded base64 IDs are outside the spec's alphabet, but Dendrite serves and
        // stores them: they are purged like any other (they once were listed as invalid).
        let padded = MediaSpec::remote("other.example", "padded==", 60, b"padded");
        for media in [&shared_valid, &shared_invalid, &solo, &padded] {
            store.add_media(media).await;
        }
        let config = DendriteConfig::load(&store.write_config(""), &store.workdir).unwrap();
        let mut reports = Vec::new();
        for mode in [RunMode::DryRun, RunMode::Apply] {
            let options = CleanOptions {
                config: config.clone(),
                request: Request::OlderThan {
                    days: 30,
                    include_local: false,
                },
                mode,
                repair: Repair::ListOnly,
                now_ms: media_core::now_ms(),
                mounts: MountTables {
                    fstab: store.workdir.join("no-fstab"),
                    ..Default::default()
                },
            };
            let report = clean(&options, &Progress::default()).await.unwrap();
            assert!(report.has_failures(), "{engine:?} {mode:?}: {report}");
            let failures = &report.purge.failures;
            assert_eq!(failures.count(), 1, "{engine:?} {mode:?}: {report}");
            assert_eq!(failures.count_of(FailureReason::InvalidRow), 1);
            assert_eq!(failures.listed()[0].item, shared_invalid.mxc());
            assert!(failures.listed()[0].detail.contains("media ID"));
            assert_eq!(report.purge.media_rows_deleted, 3, "{engine:?} {mode:?}");
            assert_eq!(report.purge.directories_removed, 2);
            assert_eq!(report.purge.kept.shared_hash_directories, 1);
            assert_eq!(report.sanity.unreferenced_directories.found, 0);
            reports.push(report.purge);
        }
        assert_eq!(
            reports[0], reports[1],
            "{engine:?}: dry run and real run differ"
        );
        assert_eq!(
            store.media_mxcs().await.into_iter().collect::<Vec<_>>(),
            [shared_invalid.mxc()]
        );
        assert!(
            store
                .content_dir(&shared_invalid.hash())
                .join("file")
                .exists()
        );
        assert!(!store.content_dir(&solo.hash()).exists());
        assert!(!store.content_dir(&padded.hash()).exists());
        store.finish().await;
    }
}
