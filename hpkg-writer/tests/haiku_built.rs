//! The package built by Haiku's own `package create` that the `hpkg` crate ships in its
//! sources (read from there at test time): our reader takes it apart, our writer writes it
//! again, and both our reader and the independent `hpkg` reader find the same package.

mod common;

use hpkg_writer::read::{package_of, read_raw};
use hpkg_writer::{write, Compression, Options};

fn rewrite() -> (Vec<u8>, Vec<u8>) {
    let original = std::fs::read(common::haiku_built_package()).unwrap();
    let raw = read_raw(&original).unwrap();
    assert_eq!(
        raw.compression,
        Compression::Zlib,
        "the sample is zlib-compressed"
    );
    let pkg = package_of(&raw).unwrap();
    let again = write(
        &pkg,
        Options {
            compression: Compression::Zlib,
            level: 9,
        },
    )
    .unwrap();
    (original, again)
}

#[test]
fn the_rewrite_has_the_same_toc_attributes_and_heap_data() {
    let (original, again) = rewrite();
    let a = read_raw(&original).unwrap();
    let b = read_raw(&again).unwrap();
    // The trees, with every heap offset: the data went to the heap in the same order.
    assert_eq!(a.toc, b.toc);
    assert_eq!(a.attributes, b.attributes);
    // The file data region of the heap, byte for byte.
    assert_eq!(a.toc_offset(), b.toc_offset());
    assert!(a.heap[..a.toc_offset()] == b.heap[..b.toc_offset()]);
    // The same strings are shared (their order among equal use counts is Haiku's hash
    // table's), so the sections have the same lengths.
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(sorted(&a.toc_strings), sorted(&b.toc_strings));
    assert_eq!(sorted(&a.attribute_strings), sorted(&b.attribute_strings));
    assert_eq!(a.header.toc_length, b.header.toc_length);
    assert_eq!(a.header.toc_strings_length, b.header.toc_strings_length);
    assert_eq!(a.header.attributes_length, b.header.attributes_length);
    assert_eq!(
        a.header.heap_size_uncompressed,
        b.header.heap_size_uncompressed
    );
    assert_eq!(a.chunk_sizes.len(), b.chunk_sizes.len());
    // Compressed with zlib at level 9 as Haiku's compress2: report how many chunks came out
    // byte-identical (it depends on the zlib this machine links; not asserted).
    let stored = |raw: &hpkg_writer::read::Raw, bytes: &[u8], i: usize| {
        let start = 80 + raw.chunk_sizes[..i].iter().sum::<usize>();
        bytes[start..start + raw.chunk_sizes[i]].to_vec()
    };
    let same = (0..a.chunk_sizes.len())
        .filter(|&i| stored(&a, &original, i) == stored(&b, &again, i))
        .count();
    eprintln!(
        "{same} of {} chunks stored byte-identical to Haiku's; {} vs {} bytes in all",
        a.chunk_sizes.len(),
        original.len(),
        again.len()
    );
}

#[test]
fn hpkg_reads_the_rewrite_as_it_reads_the_original() {
    let (_, again) = rewrite();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("again.hpkg");
    std::fs::write(&path, &again).unwrap();
    let a = hpkg::package::Package::load(common::haiku_built_package()).unwrap();
    let b = hpkg::package::Package::load(&path).unwrap();
    assert_eq!(a.name, b.name);
    assert_eq!(a.summary, b.summary);
    assert_eq!(a.description, b.description);
    assert_eq!(a.vendor, b.vendor);
    assert_eq!(a.packager, b.packager);
    assert_eq!(a.flags, b.flags);
    assert_eq!(a.architecture, b.architecture);
    assert_eq!(a.url, b.url);
    assert_eq!(a.source_url, b.source_url);
    let (fa, fb) = (a.list_files(), b.list_files());
    assert_eq!(fa.len(), fb.len());
    assert!(fa.len() > 100, "{} entries", fa.len());
    for (x, y) in fa.iter().zip(fb) {
        assert_eq!(x.path, y.path);
        assert_eq!(x.file_type, y.file_type, "{}", x.path);
        assert_eq!(x.permissions, y.permissions, "{}", x.path);
        assert_eq!(x.modified_time, y.modified_time, "{}", x.path);
        assert_eq!(x.symlink_path, y.symlink_path, "{}", x.path);
        assert_eq!(x.data_size, y.data_size, "{}", x.path);
        if x.data_size.is_some() {
            assert!(
                a.read_file(&x.path).unwrap() == b.read_file(&y.path).unwrap(),
                "{}",
                x.path
            );
        }
    }
}

/// What `package list` prints for the sample's attributes, written out from
/// src/bin/package/PackageInfoPrinter.h's formats and the attribute values the `hpkg`
/// crate's own tests assert for this file.
#[test]
fn the_listing_of_the_sample_starts_as_package_list_prints_it() {
    let original = std::fs::read(common::haiku_built_package()).unwrap();
    let text = hpkg_writer::list::list(&hpkg_writer::read(&original).unwrap());
    let head: Vec<&str> = text.lines().take(6).collect();
    assert_eq!(
        head,
        [
            "package-attributes:",
            "\tname: ctags_source",
            "\tsummary: A tool that creates tags files for code browsing in editors (source files)",
            "\tdescription: Exuberant Ctags creates tags files for code browsing in editors.",
            "\tvendor: Haiku Project",
            "\tpackager: Builder maui_x86_gcc2 <hpkg-builder@haiku-os.org>",
        ]
    );
    assert!(text.contains("\tarchitecture: source\n"));
    assert!(text.contains("\tURL: http://ctags.sourceforge.net/\n"));
    // A directory at level 2: two spaces, the name padded to 30, size in 8, time, mode.
    assert!(
        text.contains(
            "\n  sources                                0  2017-10-24 07:23:51  drwxr-xr-x\n"
        ),
        "{text}"
    );
}
