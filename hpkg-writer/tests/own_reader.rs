//! Our reader: round trips, reproducible bytes, and every truncation or corruption of a
//! package is one error, never a panic.

mod common;

use common::sample;
use hpkg_writer::attr::{encode_section, Attr};
use hpkg_writer::format::id;
use hpkg_writer::{read, read_raw, write, Compression, Options, Version};
use proptest::prelude::*;

#[test]
fn every_compression_round_trips_the_whole_model() {
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
        assert_eq!(read(&bytes).unwrap(), pkg, "{compression:?}");
    }
}

#[test]
fn the_default_is_zstd_with_a_chunk_size_table() {
    let bytes = write(&sample::package(), Options::default()).unwrap();
    let raw = read_raw(&bytes).unwrap();
    assert_eq!(raw.compression, Compression::Zstd);
    // 200 000 bytes of noise (stored raw: it does not compress) and the rest: 4 chunks,
    // 3 table entries at the end of the heap.
    assert_eq!(raw.chunk_sizes.len(), 4);
    assert_eq!(raw.chunk_sizes[0], 65536, "noise does not compress");
    let table = &bytes[bytes.len() - 6..];
    for (i, pair) in table.chunks(2).enumerate() {
        assert_eq!(
            usize::from(u16::from_be_bytes([pair[0], pair[1]])) + 1,
            raw.chunk_sizes[i]
        );
    }
    assert_eq!(raw.header.heap_size_compressed as usize, bytes.len() - 80);
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let a = write(&sample::package(), Options::default()).unwrap();
    let b = write(&sample::package(), Options::default()).unwrap();
    assert!(a == b);
    let mut later = sample::package();
    later.entries[0].times.mtime = Some(sample::T + 1);
    assert!(write(&later, Options::default()).unwrap() != a);
}

/// FileFormat.rst's encoding, worked out by hand: "x" is used twice, so it is the string
/// table's entry 0; the first entry has a child, a 16-bit mtime.
#[test]
fn a_section_is_encoded_as_file_format_rst_says() {
    let s = encode_section(&[
        Attr::string(id::DIRECTORY_ENTRY, "x").with(vec![Attr::uint(id::FILE_MTIME, 0x1234)]),
        Attr::string(id::DIRECTORY_ENTRY, "x"),
    ]);
    assert_eq!(s.strings_count, 1);
    assert_eq!(s.strings_length, 3);
    #[rustfmt::skip]
    let expected = [
        b'x', 0, 0,             // strings: "x", end of table
        0x81, 0x1b, 0,          // tag (1<<11 | 1<<10 | 3<<7 | 0) + 1 = 3457, index 0
        0x87, 0x12, 0x12, 0x34, // tag (1<<11 | 2<<7 | 6) + 1 = 2311, 0x1234 in 16 bits
        0,                      // end of children
        0x81, 0x13, 0,          // tag (1<<11 | 3<<7 | 0) + 1 = 2433, index 0
        0,                      // end of list
    ];
    assert_eq!(s.bytes, expected);
}

#[test]
fn versions_follow_haikus_grammar() {
    let v = Version::parse("R1.2.3.4~Beta5.x-17", false).unwrap();
    assert_eq!(
        (
            v.major.as_str(),
            v.minor.as_str(),
            v.micro.as_str(),
            v.pre_release.as_str(),
            v.revision
        ),
        ("r1", "2", "3.4", "beta5.x", 17)
    );
    assert_eq!(v.to_string(), "r1.2.3.4~beta5.x-17");
    assert_eq!(
        Version::parse("r1~beta5", true).unwrap().to_string(),
        "r1~beta5"
    );
    for (bad, column, why) in [
        ("1.0.0", 6, "expected a revision"),
        ("1.0.0-x", 7, "revision"),
        ("1.0.0-4294967296", 7, "revision"),
        ("1..0-1", 3, "minor"),
        ("1.0~-1", 5, "empty pre-release"),
        ("1.0+build-1", 4, "minor"),
        ("a b-1", 2, "major"),
        ("-1", 1, "empty major"),
        ("1.0~rc!-1", 7, "pre-release"),
    ] {
        let e = Version::parse(bad, false).unwrap_err();
        assert_eq!(e.column + 1, column, "{bad}: {e}");
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
}

fn small_package() -> Vec<u8> {
    let mut pkg = sample::package();
    // Keep it small so every byte can be cut and flipped, but with two chunks.
    pkg.entries.retain(|e| e.name != "bin");
    pkg.entries.push(hpkg_writer::Entry::file(
        "big",
        sample::noise(70_000, 3),
        0o644,
        hpkg_writer::Times::all(sample::T),
    ));
    write(&pkg, Options::default()).unwrap()
}

#[test]
fn every_truncation_is_one_error() {
    let bytes = small_package();
    let raw = read_raw(&bytes).unwrap();
    let mut cuts: Vec<usize> = (0..=90).collect();
    // Every section boundary: the header's end, each chunk's end, the table, the end.
    let mut at = 80;
    for s in &raw.chunk_sizes {
        at += s;
        cuts.extend([at - 1, at, at + 1]);
    }
    cuts.extend((bytes.len() - 8)..bytes.len());
    for cut in cuts.into_iter().filter(|c| *c < bytes.len()) {
        let e = read(&bytes[..cut]).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{cut}: {e}");
        assert!(e.starts_with("truncated"), "cut at {cut}: {e}");
    }
}

#[test]
fn a_truncated_section_is_named() {
    // A package whose header is consistent with a shorter heap: cut the heap's last byte
    // (the attribute list's final 0) and fix the sizes, uncompressed so it stays readable.
    let pkg = sample::package();
    let bytes = write(
        &pkg,
        Options {
            compression: Compression::None,
            level: 9,
        },
    )
    .unwrap();
    let mut cut = bytes[..bytes.len() - 1].to_vec();
    let n = cut.len() as u64;
    cut[8..16].copy_from_slice(&n.to_be_bytes());
    cut[24..32].copy_from_slice(&(n - 80).to_be_bytes());
    cut[32..40].copy_from_slice(&(n - 80).to_be_bytes());
    let attrs = u32::from_be_bytes(cut[40..44].try_into().unwrap()) - 1;
    cut[40..44].copy_from_slice(&attrs.to_be_bytes());
    let e = read(&cut).unwrap_err().to_string();
    assert!(
        e.starts_with("package attributes section, heap offset"),
        "{e}"
    );
    assert!(e.contains("runs past the end of the section"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_corruption_is_an_error_or_a_package_never_a_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)
    ) {
        let mut bytes = small_package();
        for (i, x) in &flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        match read(&bytes) {
            Ok(_) => {}
            Err(e) => prop_assert!(!e.to_string().is_empty() && !e.to_string().contains('\n')),
        }
    }

    #[test]
    fn random_trees_round_trip(
        files in proptest::collection::vec(
            ("[a-z]{1,3}(/[a-z]{1,3}){0,2}", proptest::collection::vec(any::<u8>(), 0..300), 0u32..0o7777, any::<u32>()),
            0..12),
        level in 1u8..=9,
        zlib in any::<bool>(),
    ) {
        let mut root = Vec::new();
        for (path, data, mode, t) in files {
            let name = path.rsplit('/').next().unwrap().to_string();
            let e = hpkg_writer::Entry::file(&name, data, mode, hpkg_writer::Times::all(u64::from(t)));
            // A path through an existing file, or a duplicate, is refused: skip it.
            let _ = hpkg_writer::add_path(&mut root, &path, e, hpkg_writer::Times::all(0));
        }
        let pkg = hpkg_writer::Package { info: sample::info(), entries: root };
        let compression = if zlib { Compression::Zlib } else { Compression::Zstd };
        let bytes = write(&pkg, Options { compression, level }).unwrap();
        prop_assert_eq!(read(&bytes).unwrap(), pkg);
    }
}
