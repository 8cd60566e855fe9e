//! End-to-end tests of `gdpr_export -config media-repo.yaml` and `gdpr_import -config
//! media-repo.yaml` on a matrix-media-repo deployment (tests/support/mmr.rs): the
//! real-Synapse fixture imported into MMR and into our repository exports to the same
//! archive from both, and archives move between the two.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use media_archive::{ArchiveFolder, ManifestRecord, MediaEntry};
use media_core::hashing::sha256_of;
use media_tests::mmr::{Deployment, fixture};
use media_tests::{TestCommand, TestDatabase};

/// Our repository and its datastore, in a folder of the test.
struct Repository {
    db: TestDatabase,
    store: PathBuf,
}

impl Repository {
    async fn new(dir: &Path) -> Self {
        Self {
            db: TestDatabase::postgres().await,
            store: dir.join("store"),
        }
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--db".into(),
            self.db.url.clone(),
            "--datastore".into(),
            self.store.display().to_string(),
        ]
    }

    /// `import_synapse` of the fixture (exit 1: its never-uploaded media is listed).
    fn import_fixture(&self) {
        TestCommand::new("import_synapse")
            .args(self.flags())
            .arg("--synapse-db")
            .arg(fixture().join("homeserver.db"))
            .arg("--media-store")
            .arg(fixture().join("media_store"))
            .arg("-q")
            .assert_exit(1);
    }
}

/// Where a tool reads or writes: our repository or an MMR deployment (MMR's spelling).
fn target_flags(target: &Target<'_>) -> Vec<String> {
    match target {
        Target::Ours(repo) => repo.flags(),
        Target::Mmr(deployment) => {
            vec!["-config".into(), deployment.config().display().to_string()]
        }
    }
}

enum Target<'a> {
    Ours(&'a Repository),
    Mmr(&'a Deployment),
}

/// `gdpr_export` of `entity` from `target` into `destination`, MMR's flag spellings.
fn export(target: &Target<'_>, entity: &str, destination: &Path, exit: i32) {
    TestCommand::new("gdpr_export")
        .args(target_flags(target))
        .args(["-entity", entity, "-destination"])
        .arg(destination)
        .arg("-q")
        .assert_exit(exit);
}

/// `gdpr_import` of the archive in `directory` into `target`, with `extra` flags.
fn import(target: &Target<'_>, directory: &Path, extra: &[&str], exit: i32) {
    TestCommand::new("gdpr_import")
        .args(target_flags(target))
        .arg("-directory")
        .arg(directory)
        .args(extra)
        .arg("-q")
        .assert_exit(exit);
}

/// What an archive holds, by MXC URI: each manifest record and the digest of the bytes
/// of its entry. What is left out, because it legitimately differs between two exports
/// of the same media: the manifest's own head (when the export was written) and the
/// entry names (`file_name`: which of several media sharing bytes names the one entry
/// depends on the order the source lists them in). The bytes are compared through the
/// digest of the entry each record names.
fn contents(archive: &Path) -> BTreeMap<String, (ManifestRecord, String)> {
    let folder = ArchiveFolder::open(archive).unwrap();
    let mut records = Vec::new();
    folder
        .read_records(&mut |mxc, record| {
            records.push((mxc, record));
            Ok(())
        })
        .unwrap();
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    for part in &folder.parts {
        folder
            .read_media(part, |entry| {
                if let MediaEntry::File { name, body } = entry {
                    let mut bytes = Vec::new();
                    body.read_to_end(&mut bytes).unwrap();
                    entries.insert(name.to_owned(), sha256_of(&bytes).to_string());
                }
                Ok::<_, media_archive::ArchiveError>(())
            })
            .unwrap();
    }
    records
        .into_iter()
        .map(|(mxc, mut record)| {
            let bytes = entries
                .get(&record.file_name)
                .unwrap_or_else(|| panic!("{mxc}: no entry {:?}", record.file_name))
                .clone();
            record.file_name.clear();
            (mxc, (record, bytes))
        })
        .collect()
}

#[tokio::test]
async fn an_export_from_mmr_equals_the_export_of_the_same_media_from_our_repository() {
    let deployment = Deployment::new("").await;
    deployment.import(&[]).assert_exit(1);
    let dir = tempfile::tempdir().unwrap();
    let ours = Repository::new(dir.path()).await;
    ours.import_fixture();
    for entity in ["@alice:fixture.test", "fixture.test", "127.0.0.1:40641"] {
        let from_mmr = dir.path().join(format!("mmr-{entity}"));
        let from_ours = dir.path().join(format!("ours-{entity}"));
        export(&Target::Mmr(&deployment), entity, &from_mmr, 0);
        export(&Target::Ours(&ours), entity, &from_ours, 0);
        let (mmr, ours) = (contents(&from_mmr), contents(&from_ours));
        assert!(!mmr.is_empty(), "{entity}");
        assert_eq!(mmr, ours, "{entity}");
        for (mxc, (record, bytes)) in &mmr {
            assert_eq!(&record.sha256, bytes, "{mxc}");
        }
    }
}

#[tokio::test]
async fn mmr_config_with_our_repository_flags_is_a_usage_error() {
    let deployment = Deployment::new("").await;
    let config = deployment.config().display().to_string();
    let archive = deployment.dir.path().join("archive");
    for tool in ["gdpr_export"] {
        for flag in [["--db", "sqlite://x.db"], ["--datastore", "store"]] {
            let mut command = TestCommand::new(tool);
            command.args(["-config", &config]).args(flag);
            match tool {
                "gdpr_export" => command.args(["-entity", "fixture.test"]),
                _ => command.arg("-directory").arg(&archive),
            };
            let out = command.current_dir(deployment.dir.path()).assert_exit(2);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("cannot be used with"), "{tool}: {stderr}");
        }
    }
    assert!(!deployment.dir.path().join("x.db").exists());
}
