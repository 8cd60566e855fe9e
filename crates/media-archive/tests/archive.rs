//! The archive writer and reader against each other, on real files.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use media_archive::{
    ArchiveError, ArchiveFolder, ArchiveWriter, ManifestRecord, MediaEntry, NewEntry,
    WriterOptions, WrittenEntry,
};

fn options(part_size: u64) -> WriterOptions {
    WriterOptions {
        part_size,
        ..WriterOptions::default()
    }
}

fn record(media_id: &str, file_name: &str, bytes: &[u8]) -> ManifestRecord {
    ManifestRecord {
        name: format!("{media_id}.bin"),
        file_name: file_name.to_owned(),
        size_bytes: bytes.len() as u64,
        sha256: media_core::hashing::sha256_of(bytes).to_string(),
        content_type: "application/octet-stream".into(),
        origin: "example.org".into(),
        media_id: media_id.into(),
        created_ts: 1_700_000_000_000,
        s3_url: String::new(),
        uploader: "@alice:example.org".into(),
    }
}

/// Every media entry of every part, as name → bytes.
fn read_all(folder: &ArchiveFolder) -> BTreeMap<String, Vec<u8>> {
    let mut entries = BTreeMap::new();
    for part in &folder.parts {
        folder
            .read_media(part, |entry| {
                match entry {
                    MediaEntry::File { name, body, .. } => {
                        let mut bytes = Vec::new();
                        body.read_to_end(&mut bytes).unwrap();
                        assert!(entries.insert(name.to_owned(), bytes).is_none());
                    }
                    MediaEntry::Refused { name, reason } => panic!("{name}: {reason}"),
                }
                Ok::<_, ArchiveError>(())
            })
            .unwrap();
    }
    entries
}

/// Every record of the manifest, by MXC URI.
fn records(folder: &ArchiveFolder) -> BTreeMap<String, ManifestRecord> {
    let mut records = BTreeMap::new();
    folder
        .read_records(&mut |mxc, record| {
            records.insert(mxc, record);
            Ok(())
        })
        .unwrap();
    assert_eq!(records.len() as u64, folder.manifest.records);
    records
}

fn write_entry(writer: &mut ArchiveWriter, name: &str, content_type: &str, bytes: &[u8]) {
    let entry = NewEntry {
        name,
        size: bytes.len() as u64,
        mtime_ms: 1_700_000_000_000,
        content_type,
    };
    let written = writer.add_entry(entry, &mut &bytes[..]).unwrap();
    assert!(matches!(written, WrittenEntry::Complete));
}

#[test]
fn entries_and_records_round_trip_across_parts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    let mut writer = ArchiveWriter::create(&out, &options(10_000)).unwrap();
    let text = "hello, world\n".repeat(1000).into_bytes();
    let random: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let long_name = format!("example.org__{}.txt", "x".repeat(200));
    write_entry(&mut writer, "example.org__a.txt", "text/plain", &text);
    write_entry(&mut writer, "example.org__b", "image/jpeg", &random);
    write_entry(&mut writer, &long_name, "text/plain", b"tiny");
    writer
        .add_record(
            "mxc://example.org/a",
            &record("a", "example.org__a.txt", &text),
        )
        .unwrap();
    writer
        .add_record(
            "mxc://example.org/b",
            &record("b", "example.org__b", &random),
        )
        .unwrap();
    // A second record with the same bytes shares the entry.
    writer
        .add_record(
            "mxc://example.org/b2",
            &record("b2", "example.org__b", &random),
        )
        .unwrap();
    writer
        .add_record(
            "mxc://example.org/long",
            &record("long", &long_name, b"tiny"),
        )
        .unwrap();
    let summary = writer
        .finish("@alice:example.org", 1_700_000_000_000)
        .unwrap();

    assert_eq!(
        summary.parts.len(),
        3,
        "every entry above 10 kB closes its part: {summary:?}"
    );
    assert_eq!((summary.records, summary.entries), (4, 3));
    let folder = ArchiveFolder::open(&out).unwrap();
    assert_eq!(folder.manifest.entity_id, "@alice:example.org");
    assert_eq!(records(&folder).len(), 4);
    assert_eq!(
        records(&folder)["mxc://example.org/b2"].file_name,
        "example.org__b"
    );
    assert!(folder.strays.is_empty(), "{:?}", folder.strays);
    let entries = read_all(&folder);
    assert_eq!(entries["example.org__a.txt"], text);
    assert_eq!(entries["example.org__b"], random);
    assert_eq!(entries[&long_name], b"tiny");
    let text_part = std::fs::metadata(&summary.parts[0]).unwrap().len();
    assert!(
        text_part < 2_000,
        "text is deflated: part 1 is {text_part} bytes"
    );

    // Private files, and a refusal to overwrite.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&summary.manifest)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "archive files are private: {mode:o}");
    }
    let again = ArchiveWriter::create(&out, &options(10_000));
    assert!(matches!(
        again,
        Err(ArchiveError::DestinationHasExport { .. })
    ));
}

#[test]
fn the_archive_reads_with_system_tar() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    let mut writer = ArchiveWriter::create(&out, &options(1 << 20)).unwrap();
    write_entry(
        &mut writer,
        "example.org__a.txt",
        "text/plain",
        b"text text text",
    );
    write_entry(
        &mut writer,
        "example.org__b.jpg",
        "image/jpeg",
        b"\xff\xd8 not really",
    );
    write_entry(
        &mut writer,
        "example.org__c.txt",
        "text/plain",
        b"more text",
    );
    // Stored content larger than one stored deflate block (64 KiB).
    let video: Vec<u8> = (0..300_001u32).map(|i| (i % 251) as u8).collect();
    write_entry(&mut writer, "example.org__d.mp4", "video/mp4", &video);
    let summary = writer.finish("example.org", 0).unwrap();
    assert_eq!(summary.parts.len(), 1);
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    for part in summary.parts.iter().chain([&summary.manifest]) {
        let status = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(part)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .unwrap();
        assert!(status.success(), "tar -xzf {}", part.display());
    }
    let read = |name: &str| std::fs::read(unpacked.join(name)).unwrap();
    assert_eq!(read("example.org__b.jpg"), b"\xff\xd8 not really");
    assert_eq!(read("example.org__c.txt"), b"more text");
    assert_eq!(read("example.org__d.mp4"), video);
    let manifest: serde_json::Value = serde_json::from_slice(&read("manifest.json")).unwrap();
    assert_eq!(manifest["version"], 2);
    assert!(
        String::from_utf8(read("index.html"))
            .unwrap()
            .contains("</body></html>")
    );
}

/// Percent-decodes a relative link of the index.
fn percent_decode(link: &str) -> String {
    let bytes = link.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&link[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn the_index_is_a_page_for_the_data_subject_not_a_bare_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    let mut writer = ArchiveWriter::create(&out, &options(1 << 20)).unwrap();
    let png = b"\x89PNG not really";
    write_entry(&mut writer, "example.org:8448__pic.png", "image/png", png);
    write_entry(
        &mut writer,
        "example.org:8448__notes.txt",
        "text/plain",
        b"notes",
    );
    let hostile = "<script>alert(\"x\")</script>'.png";
    let mut picture = record("pic", "example.org:8448__pic.png", png);
    picture.name = hostile.into();
    picture.content_type = "image/png".into();
    // A second media with the same bytes shares the entry.
    let mut copy = picture.clone();
    copy.name = "copy.png".into();
    copy.media_id = "copy".into();
    let mut notes = record("notes", "example.org:8448__notes.txt", b"notes");
    notes.content_type = "text/plain".into();
    writer
        .add_record("mxc://example.org:8448/pic", &picture)
        .unwrap();
    writer
        .add_record("mxc://example.org:8448/copy", &copy)
        .unwrap();
    writer
        .add_record("mxc://example.org:8448/notes", &notes)
        .unwrap();
    writer
        .add_left_out(&media_archive::LeftOut {
            mxc: "mxc://example.org:8448/bad",
            name: "<img src=x onerror=alert(1)>",
            why: "Quarantined by the server's administrators.",
        })
        .unwrap();
    let summary = writer
        .finish("@alice:example.org", 1_700_000_000_000)
        .unwrap();
    assert_eq!(summary.left_out, 1);

    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    for part in summary.parts.iter().chain([&summary.manifest]) {
        let status = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(part)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let index = std::fs::read_to_string(unpacked.join("index.html")).unwrap();

    // User text is escaped: no markup of theirs survives.
    assert!(!index.contains("<script"), "{index}");
    assert!(!index.contains("<img src=x"), "{index}");
    assert!(index.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;.png"));
    assert!(index.contains("&lt;img src=x onerror=alert(1)&gt;"));
    // Self-contained and made for phones.
    assert!(index.contains("<meta name=\"viewport\""));
    assert!(
        !index.contains("http"),
        "nothing is fetched from the network"
    );
    // Instructions before the list, totals, original names, types, sizes, dates.
    let unpacking = index.find("tar -xzf").unwrap();
    assert!(unpacking < index.find("copy.png").unwrap());
    assert!(index.contains("3 media, 35 B in total"), "{index}");
    assert!(index.contains("2 files in 1 part file(s)"), "{index}");
    assert!(index.contains("1 media was left out"));
    assert!(
        index.contains("image/png · 15 B · 2023-11-14 22:13 UTC"),
        "{index}"
    );
    assert!(index.contains("text/plain"));
    // What was left out, and why, at the end.
    let left_out = &index[index.find("id=\"left-out\"").unwrap()..];
    assert!(left_out.contains("mxc://example.org:8448/bad"));
    assert!(left_out.contains("Quarantined by the server&#39;s administrators."));
    assert!(!left_out.contains("copy.png"));
    // Every link and image points at a file beside the page once unpacked; images show.
    let mut links = 0;
    for attribute in ["href=\"", "src=\""] {
        for (at, _) in index.match_indices(attribute) {
            let value = &index[at + attribute.len()..];
            let value = &value[..value.find('"').unwrap()];
            if value.starts_with('#') {
                continue;
            }
            let file = value
                .strip_prefix("./")
                .expect("links are relative to the page");
            assert!(
                unpacked.join(percent_decode(file)).is_file(),
                "{value} is not beside the page"
            );
            links += 1;
        }
    }
    assert_eq!(
        index.matches("<img src=").count(),
        2,
        "both pictures inline"
    );
    assert!(links >= 8, "{links} links");
}

#[test]
fn an_empty_export_has_a_manifest_and_no_part() {
    let dir = tempfile::tempdir().unwrap();
    let writer = ArchiveWriter::create(dir.path(), &options(100)).unwrap();
    let summary = writer.finish("@nobody:example.org", 0).unwrap();
    assert!(summary.parts.is_empty());
    let folder = ArchiveFolder::open(dir.path()).unwrap();
    assert!(records(&folder).is_empty());
    assert!(folder.parts.is_empty());
}

/// A source that yields `0` bytes of `x`, then fails.
struct Failing(usize);

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0 == 0 {
            return Err(std::io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.0);
        buf[..n].fill(b'x');
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn a_blob_found_damaged_while_it_is_written_leaves_no_entry_in_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = ArchiveWriter::create(dir.path(), &options(1 << 20)).unwrap();
    write_entry(&mut writer, "before", "text/plain", b"kept before");
    let failing = |name, content_type| NewEntry {
        name,
        size: 300_000,
        mtime_ms: 0,
        content_type,
    };
    // Fails half-way, stored and deflated; ends early; has more than recorded.
    for (name, content_type, mut body) in [
        (
            "fails",
            "image/png",
            Box::new(std::io::BufReader::new(Failing(200_000))) as Box<dyn std::io::BufRead>,
        ),
        (
            "fails-text",
            "text/plain",
            Box::new(std::io::BufReader::new(Failing(200_000))),
        ),
        ("short", "image/png", Box::new(&[7u8; 1000][..])),
        ("long", "text/plain", Box::new(&[7u8; 300_001][..])),
    ] {
        let written = writer
            .add_entry(failing(name, content_type), &mut body)
            .unwrap();
        assert!(
            matches!(written, WrittenEntry::SourceFailed(_)),
            "{name}: {written:?}"
        );
    }
    write_entry(&mut writer, "after", "image/png", b"kept after");
    let summary = writer.finish("example.org", 0).unwrap();
    assert_eq!(summary.entries, 2);
    let entries = read_all(&ArchiveFolder::open(dir.path()).unwrap());
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        ["after", "before"],
        "no entry of a damaged source is left in the part"
    );
    assert_eq!(entries["before"], b"kept before");
    assert_eq!(entries["after"], b"kept after");
    // System tar agrees: two members, nothing else.
    let listing = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&summary.parts[0])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "before\nafter\n");

    // A part whose only entry failed is not written at all.
    let lone = dir.path().join("lone");
    let mut writer = ArchiveWriter::create(&lone, &options(1 << 20)).unwrap();
    let written = writer
        .add_entry(
            failing("fails", "image/png"),
            &mut std::io::BufReader::new(Failing(10)),
        )
        .unwrap();
    assert!(matches!(written, WrittenEntry::SourceFailed(e) if e.to_string().contains("fire")));
    let summary = writer.finish("example.org", 0).unwrap();
    assert!(summary.parts.is_empty());
    let names: Vec<_> = std::fs::read_dir(&lone)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["export-manifest.tgz"]);
}

/// Every file name an export writes, finished or partial.
const OUTPUT_NAMES: [&str; 6] = [
    "export-part-1.tgz.partial",
    "export-part-1.tgz",
    "export-part-2.tgz.partial",
    "export-part-2.tgz",
    "export-manifest.tgz.partial",
    "export-manifest.tgz",
];

#[test]
fn a_link_planted_as_an_output_name_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "precious").unwrap();
    let plant = |folder: &Path| {
        for name in OUTPUT_NAMES {
            let _ = std::fs::remove_file(folder.join(name));
            std::os::unix::fs::symlink(&outside, folder.join(name)).unwrap();
        }
    };
    // Links planted in the destination once the export started (others can write
    // there): the export never writes through them.
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let mut writer = ArchiveWriter::create(&dest, &options(10)).unwrap();
    plant(&dest);
    write_entry(&mut writer, "a", "", b"first");
    write_entry(&mut writer, "b", "", b"second");
    let summary = writer.finish("example.org", 0);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    // The links looked like an export: refused without --force.
    assert!(
        matches!(summary, Err(ArchiveError::DestinationHasExport { .. })),
        "{summary:?}"
    );

    // With --force, the planted links are replaced by real, private files.
    let mut writer = ArchiveWriter::create(
        &dest,
        &WriterOptions {
            replace: true,
            ..options(10)
        },
    )
    .unwrap();
    plant(&dest);
    write_entry(&mut writer, "a", "", b"first");
    write_entry(&mut writer, "b", "", b"second");
    let summary = writer.finish("example.org", 0).unwrap();
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    for file in summary.parts.iter().chain([&summary.manifest]) {
        let meta = std::fs::symlink_metadata(file).unwrap();
        assert!(meta.file_type().is_file(), "{}", file.display());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
    }
    assert_eq!(read_all(&ArchiveFolder::open(&dest).unwrap()).len(), 2);

    // Links in the folder the export is written into are refused, not followed.
    let mut writer = ArchiveWriter::create(
        &dest,
        &WriterOptions {
            replace: true,
            ..options(10)
        },
    )
    .unwrap();
    plant(writer.staging_dir());
    let entry = NewEntry {
        name: "a",
        size: 1,
        mtime_ms: 0,
        content_type: "",
    };
    let refused = writer.add_entry(entry, &mut &b"x"[..]);
    assert!(refused.is_err());
    drop(writer);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");

    // A destination that is a link is refused.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&dest, &link).unwrap();
    let refused = ArchiveWriter::create(&link, &options(10)).err().unwrap();
    assert!(refused.to_string().contains("is a link"), "{refused}");
}

#[test]
fn a_failed_forced_export_leaves_the_previous_complete_export() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    let mut writer = ArchiveWriter::create(&dest, &options(10)).unwrap();
    write_entry(&mut writer, "old", "", b"old bytes");
    writer
        .add_record("mxc://example.org/old", &record("old", "old", b"old bytes"))
        .unwrap();
    writer.finish("example.org", 0).unwrap();
    std::fs::write(dest.join("notes.txt"), "the operator's notes").unwrap();

    let forced = WriterOptions {
        replace: true,
        ..options(10)
    };
    // An export that fails half-way (dropped unfinished, as on a full disk).
    let mut writer = ArchiveWriter::create(&dest, &forced).unwrap();
    write_entry(&mut writer, "new", "", b"new bytes");
    drop(writer);
    let folder = ArchiveFolder::open(&dest).unwrap();
    assert!(records(&folder).contains_key("mxc://example.org/old"));
    assert_eq!(read_all(&folder)["old"], b"old bytes");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["dest"], "no staging folder is left behind");

    // A complete one replaces it; the operator's other files stay.
    let mut writer = ArchiveWriter::create(&dest, &forced).unwrap();
    write_entry(&mut writer, "new", "", b"new bytes");
    writer
        .add_record("mxc://example.org/new", &record("new", "new", b"new bytes"))
        .unwrap();
    writer.finish("example.org", 0).unwrap();
    let folder = ArchiveFolder::open(&dest).unwrap();
    assert_eq!(
        records(&folder).keys().collect::<Vec<_>>(),
        ["mxc://example.org/new"]
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("notes.txt")).unwrap(),
        "the operator's notes"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["dest"]);
}

fn folder_error(dir: &Path) -> String {
    ArchiveFolder::open(dir).unwrap_err().to_string()
}

#[test]
fn folders_without_an_archive_say_so() {
    let dir = tempfile::tempdir().unwrap();
    assert!(folder_error(dir.path()).contains("holds no archive"));
    std::fs::write(dir.path().join("notes.txt"), "not an archive").unwrap();
    assert!(folder_error(dir.path()).contains("holds no archive"));
    let missing = dir.path().join("missing");
    assert!(folder_error(&missing).contains("missing"));
}

/// Writes a small archive (a manifest and two parts) into `dir`.
fn small_archive(dir: &Path) {
    let mut writer = ArchiveWriter::create(dir, &options(10)).unwrap();
    for (name, bytes) in [("a", &b"first"[..]), ("b", &b"second"[..])] {
        write_entry(&mut writer, name, "", bytes);
        writer
            .add_record(
                &format!("mxc://example.org/{name}"),
                &record(name, name, bytes),
            )
            .unwrap();
    }
    writer.finish("example.org", 0).unwrap();
}

#[test]
fn a_linked_fifo_or_device_archive_file_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    small_archive(&real);
    assert_eq!(read_all(&ArchiveFolder::open(&real).unwrap()).len(), 2);
    // The same archive with one of its files replaced by a link to the real one (outside
    // the folder given), by a FIFO, or by a device: each is refused, naming the entry.
    for file in ["export-part-1.tgz", "export-manifest.tgz"] {
        for kind in ["link", "FIFO", "device"] {
            let folder = dir.path().join(format!("{kind}-{file}"));
            std::fs::create_dir(&folder).unwrap();
            for item in std::fs::read_dir(&real).unwrap() {
                let item = item.unwrap();
                std::fs::copy(item.path(), folder.join(item.file_name())).unwrap();
            }
            let planted = folder.join(file);
            std::fs::remove_file(&planted).unwrap();
            match kind {
                "link" => std::os::unix::fs::symlink(real.join(file), &planted).unwrap(),
                "FIFO" => rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &planted,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap(),
                _ => rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &planted,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(1, 3), // /dev/null
                )
                .unwrap(),
            }
            let error = ArchiveFolder::open(&folder).expect_err(&format!("{kind} {file}"));
            assert!(
                matches!(error, ArchiveError::NotARegularFile { .. }),
                "{kind} {file}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains(&planted.display().to_string()),
                "{message}"
            );
            assert!(message.contains("not a regular file"), "{message}");
        }
    }
}
