//! The independent `hpkg` reader reads our packages: every package attribute it knows and
//! every file, byte for byte, in each heap compression.

mod common;

use common::sample;
use hpkg_writer::{write, Compression, Kind, Options};

fn walk<'a>(
    prefix: &str,
    entries: &'a [hpkg_writer::Entry],
    out: &mut Vec<(String, &'a hpkg_writer::Entry)>,
) {
    for e in entries {
        let path = if prefix.is_empty() {
            e.name.clone()
        } else {
            format!("{prefix}/{}", e.name)
        };
        out.push((path.clone(), e));
        if let Kind::Directory(c) = &e.kind {
            walk(&path, c, out);
        }
    }
}

#[test]
fn hpkg_reads_every_attribute_it_knows_and_every_file() {
    let pkg = sample::package();
    for compression in [Compression::Zstd, Compression::Zlib, Compression::None] {
        let bytes = write(
            &pkg,
            Options {
                compression,
                level: 9,
            },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.hpkg");
        std::fs::write(&path, &bytes).unwrap();
        let h = hpkg::package::Package::load(&path)
            .unwrap_or_else(|e| panic!("{compression:?}: hpkg refuses it: {e}"));
        let header = h.header.as_ref().unwrap();
        assert_eq!(header.heap_compression, compression.code());
        assert_eq!(header.heap_chunk_size, 65536);
        assert_eq!(header.total_size, bytes.len() as u64);
        assert_eq!(h.name.as_deref(), Some("sample"));
        assert_eq!(h.summary.as_deref(), Some("A sample package"));
        assert_eq!(
            h.description.as_deref(),
            Some("Every attribute\nof the format.")
        );
        assert_eq!(h.vendor.as_deref(), Some("Sample \"Vendor\""));
        assert_eq!(h.packager.as_deref(), Some("Sam Packer <sam@example.com>"));
        assert_eq!(h.flags, 1);
        assert_eq!(h.architecture.as_deref(), Some("x86_64"));
        assert_eq!(h.url.as_deref(), Some("https://example.com/"));
        assert_eq!(
            h.source_url.as_deref(),
            Some("Source <https://example.com/src>")
        );

        let mut ours = Vec::new();
        walk("", &pkg.entries, &mut ours);
        let files = h.list_files();
        assert_eq!(files.len(), ours.len(), "{compression:?}");
        for (path, e) in &ours {
            let f = files
                .iter()
                .find(|f| f.path == *path)
                .unwrap_or_else(|| panic!("{path} missing"));
            assert_eq!(f.modified_time, e.times.mtime, "{path}");
            match &e.kind {
                Kind::File(data) if data.is_empty() => {
                    // hpkg takes an entry without file:type and data for a directory;
                    // FileFormat.rst's default type is a file, which Haiku's writer
                    // relies on (it writes no data attribute for an empty file).
                    assert!(h.read_file(path).is_err());
                }
                Kind::File(data) => {
                    assert_eq!(f.file_type, 0, "{path}");
                    assert_eq!(f.permissions, e.permissions, "{path}");
                    assert!(h.read_file(path).unwrap() == data.as_slice(), "{path}");
                }
                Kind::Symlink(target) => {
                    assert_eq!(f.file_type, 2, "{path}");
                    assert_eq!(f.symlink_path.as_deref(), Some(target.as_str()));
                }
                Kind::Directory(_) => assert_eq!(f.file_type, 1, "{path}"),
            }
        }
    }
}
