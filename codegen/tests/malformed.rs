//! Every kind of malformed spec gets a message naming the file, the line and the key.

use std::path::Path;

use codegen::model;

const HEAD: &str = r#"[abi]
name = "t"
title = "test"
version = "1"
source = "test"
default_kind = "wire"
"#;

/// Parses `HEAD + body` and returns the single diagnostic line containing `needle`.
fn error(body: &str, needle: &str) -> (usize, String) {
    let text = format!("{HEAD}{body}");
    let err = model::parse(&text, Path::new("spec/t.toml")).expect_err("must be rejected");
    let d = err
        .0
        .iter()
        .find(|d| d.to_string().contains(needle))
        .unwrap_or_else(|| panic!("no diagnostic mentions {needle:?}: {err}"));
    assert_eq!(d.file, Path::new("spec/t.toml"));
    let line = d.line;
    (line, d.to_string())
}

#[test]
fn unknown_key() {
    let (line, msg) = error(
        "\n[[struct]]\nname = \"a\"\ncolour = \"red\"\nfields = [ { name = \"x\", type = \"u8\" } ]\n",
        "colour",
    );
    assert_eq!(line, 10, "{msg}");
    assert!(msg.starts_with("spec/t.toml:10:"), "{msg}");
}

#[test]
fn unknown_key_in_a_field() {
    let (line, msg) = error(
        "\n[[struct]]\nname = \"a\"\nfields = [\n  { name = \"x\", typ = \"u8\" },\n]\n",
        "typ",
    );
    assert_eq!(line, 11, "{msg}");
}

#[test]
fn bad_type_name() {
    let (line, msg) = error(
        "\n[[struct]]\nname = \"a\"\nfields = [\n  { name = \"x\", type = \"le33\" },\n]\n",
        "le33",
    );
    assert_eq!(line, 11, "{msg}");
    assert!(msg.contains("struct a, field x, key type"), "{msg}");
}

#[test]
fn implicit_padding_in_a_wire_struct() {
    let (line, msg) = error(
        "\n[[struct]]\nname = \"a\"\nfields = [\n  { name = \"x\", type = \"u8\" },\n  { name = \"y\", type = \"le32\" },\n]\n",
        "padding",
    );
    assert_eq!(line, 12, "{msg}");
    assert!(msg.contains("3 byte(s)"), "{msg}");
}

#[test]
fn tail_padding_in_a_wire_struct() {
    let (line, msg) = error(
        "\n[[struct]]\nname = \"a\"\nfields = [\n  { name = \"y\", type = \"le32\" },\n  { name = \"x\", type = \"u8\" },\n]\n",
        "tail padding",
    );
    assert_eq!(line, 9, "{msg}");
}

#[test]
fn implicit_padding_is_fine_in_a_user_struct() {
    let text = format!("{HEAD}\n[[struct]]\nname = \"a\"\nkind = \"user\"\nfields = [\n  {{ name = \"x\", type = \"u8\" }},\n  {{ name = \"y\", type = \"u32\" }},\n]\n");
    let s = model::parse(&text, Path::new("spec/t.toml")).unwrap();
    let t = s.type_named("a").unwrap();
    assert_eq!((t.size, t.fields[1].offset), (8, 4));
}

#[test]
fn dangling_names() {
    let (_, msg) = error(
        "\n[[struct]]\nname = \"a\"\nfields = [ { name = \"x\", type = \"nope\" } ]\n",
        "nope",
    );
    assert!(msg.contains("unknown type"), "{msg}");
    let (_, msg) = error("\n[[struct]]\nname = \"a\"\nfields = [ { name = \"x\", type = \"u8\", enum = \"ghost\" } ]\n", "ghost");
    assert!(msg.contains("key enum"), "{msg}");
}

#[test]
fn duplicate_codes() {
    let (line, msg) = error(
        "\n[[consts]]\nname = \"g\"\nkind = \"enum\"\ntype = \"u32\"\nvalues = [\n  { name = \"A\", value = 1 },\n  { name = \"B\", value = 1 },\n]\n",
        "duplicate code",
    );
    assert_eq!(line, 14, "{msg}");
    assert!(msg.contains("`A`"), "{msg}");
}

#[test]
fn overlapping_flags() {
    let (_, msg) = error(
        "\n[[consts]]\nname = \"g\"\nkind = \"flags\"\ntype = \"u32\"\nvalues = [\n  { name = \"A\", value = 3 },\n  { name = \"B\", value = 2 },\n]\n",
        "overlaps",
    );
    assert!(msg.contains("consts g, value B"), "{msg}");
    // A mask made of others is fine once marked.
    let text = format!("{HEAD}\n[[consts]]\nname = \"g\"\nkind = \"flags\"\ntype = \"u32\"\nvalues = [\n  {{ name = \"A\", value = 1 }},\n  {{ name = \"B\", value = 2 }},\n  {{ name = \"AB\", value = 3, composite = true }},\n]\n");
    model::parse(&text, Path::new("spec/t.toml")).unwrap();
}

#[test]
fn sample_facts_are_checked() {
    // An encoding is a fact of a sample format, which has a width.
    let (line, msg) = error(
        "\n[[consts]]\nname = \"g\"\nkind = \"bit\"\ntype = \"u8\"\nvalues = [\n  { name = \"A\", value = 0, encoding = \"signed\" },\n]\n",
        "key encoding",
    );
    assert_eq!(line, 13, "{msg}");
    assert!(msg.contains("consts g, value A"), "{msg}");
    // Only the encodings the schema names.
    let text = format!("{HEAD}\n[[consts]]\nname = \"g\"\nkind = \"bit\"\ntype = \"u8\"\nvalues = [\n  {{ name = \"A\", value = 0, width = 8, phys_width = 8, encoding = \"bcd\" }},\n]\n");
    let err = model::parse(&text, Path::new("spec/t.toml")).expect_err("must be rejected");
    assert!(err.to_string().contains("bcd"), "{err}");
}

#[test]
fn duplicate_constant_names_and_out_of_range_values() {
    let (_, msg) = error(
        "\n[[consts]]\nname = \"g\"\nkind = \"values\"\ntype = \"u8\"\nvalues = [\n  { name = \"A\", value = 1 },\n  { name = \"A\", value = 2 },\n]\n",
        "declared twice",
    );
    assert!(msg.contains("value A"), "{msg}");
    let (_, msg) = error("\n[[consts]]\nname = \"g\"\nkind = \"values\"\ntype = \"u8\"\nvalues = [ { name = \"A\", value = 256 } ]\n", "does not fit");
    assert!(msg.contains("u8"), "{msg}");
}

#[test]
fn pointers_belong_to_the_right_kind() {
    let (_, msg) = error(
        "\n[[struct]]\nname = \"a\"\nfields = [ { name = \"p\", type = \"ptr<u8>\" } ]\n",
        "pointer",
    );
    assert!(msg.contains("wire"), "{msg}");
    let (_, msg) = error(
        "\n[[struct]]\nname = \"a\"\nkind = \"user\"\nfields = [ { name = \"p\", type = \"ptr<u8>\" } ]\n",
        "user_ptr",
    );
    assert!(msg.contains("field p"), "{msg}");
}

#[test]
fn requests_are_checked() {
    let body = "\n[[consts]]\nname = \"code\"\nkind = \"enum\"\ntype = \"u32\"\nvalues = [ { name = \"R_X\", value = 1 }, { name = \"S_OK\", value = 2 } ]\n\n[[struct]]\nname = \"hdr\"\nfields = [ { name = \"code\", type = \"le32\" } ]\n\n[[request]]\ncode = \"R_X\"\nrequest = \"hdr\"\nresponse = \"hdr\"\nitems = \"hdr\"\nitem_count = \"nothing\"\n";
    let (_, msg) = error(body, "item_count");
    assert!(msg.contains("neither"), "{msg}");
    let (_, msg) = error(body, "status_ok");
    assert!(msg.contains("request"), "{msg}");
}

#[test]
fn a_self_containing_struct_is_reported() {
    let (_, msg) = error(
        "\n[[struct]]\nname = \"a\"\nfields = [ { name = \"x\", type = \"a\" } ]\n",
        "contains itself",
    );
    assert!(msg.contains("struct a"), "{msg}");
}

#[test]
fn unreadable_file_names_it() {
    let err = model::load(Path::new("/nonexistent/x.toml"), Path::new("spec/x.toml")).unwrap_err();
    assert!(err.to_string().starts_with("spec/x.toml:"), "{err}");
}

#[test]
fn in_header_false_without_a_header() {
    // HEAD records no [abi] header, so `in_header = false` would be silently ignored.
    let (line, msg) = error(
        "\n[[consts]]\nname = \"g\"\nkind = \"bit\"\ntype = \"u8\"\nvalues = [\n  { name = \"A\", value = 0, in_header = false },\n]\n",
        "consts g, A, key in_header",
    );
    assert_eq!(line, 13, "{msg}");
    assert!(msg.contains("this spec records no [abi] header"), "{msg}");
    let (line, msg) = error(
        "\n[[struct]]\nname = \"a\"\nin_header = false\nfields = [ { name = \"x\", type = \"u8\" } ]\n",
        "struct a, key in_header",
    );
    assert_eq!(line, 9, "{msg}");
    // With a header it is accepted.
    let text = format!(
        "{HEAD}header = \"x.h\"\n\n[[consts]]\nname = \"g\"\nkind = \"bit\"\ntype = \"u8\"\nvalues = [\n  {{ name = \"A\", value = 0, in_header = false }},\n]\n"
    );
    model::parse(&text, Path::new("spec/t.toml")).unwrap_or_else(|e| panic!("{e}"));
}
