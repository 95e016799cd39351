//! `gen --import` on scratch workspaces holding the fixture specs of
//! `xtask/tests/fixtures/import/` (see its README). Expectations are the fixtures' C
//! declarations and the spec schema, written out literally.

use std::path::{Path, PathBuf};

use super::*;

fn fixture(rel: &str) -> PathBuf {
    root().join("xtask/tests/fixtures/import").join(rel)
}

/// A workspace with the two fixture specs in place of the real ones (and the real driver
/// ABI spec, which records no header), so `gen` can run on it.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("spec")).unwrap();
    for (from, to) in [
        (fixture("virtio/virtio_snd.toml"), "spec/virtio_snd.toml"),
        (
            fixture("hmulti/hmulti_audio.toml"),
            "spec/hmulti_audio.toml",
        ),
        (
            root().join("spec/haiku_driver.toml"),
            "spec/haiku_driver.toml",
        ),
    ] {
        std::fs::copy(from, dir.path().join(to)).unwrap();
    }
    dir
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap()
}

/// Every line of `old` is still in `new`, in the same order: comments, docs and
/// annotations survive.
fn keeps_every_line(old: &str, new: &str) {
    let mut rest = new.lines();
    for line in old.lines() {
        assert!(
            rest.any(|l| l == line),
            "line lost or moved: {line:?}\n--- new:\n{new}"
        );
    }
}

/// The line after `anchor` in `text`.
fn line_after<'t>(text: &'t str, anchor: &str) -> &'t str {
    let mut lines = text.lines();
    lines.find(|l| l.contains(anchor)).unwrap();
    lines.next().unwrap_or_default()
}

/// 1-based line of the first line holding `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    match text.lines().position(|l| l.contains(needle)) {
        Some(i) => i + 1,
        None => panic!("{needle:?} not in:\n{text}"),
    }
}

#[test]
fn the_header_a_spec_describes_changes_nothing() {
    let dir = scratch();
    for (header, rel) in [
        ("virtio/base/virtio_snd.h", "spec/virtio_snd.toml"),
        ("hmulti/base/hmulti_audio.h", "spec/hmulti_audio.toml"),
    ] {
        let before = read(dir.path(), rel);
        let out = import_in(dir.path(), &fixture(header), &Options::default()).unwrap();
        assert!(!out.written, "{}", out.text);
        assert!(out.text.contains("already agrees"), "{}", out.text);
        assert!(!out.text.contains("no longer in"), "{}", out.text);
        assert_eq!(read(dir.path(), rel), before);
    }
}

/// The real Linux header and today's spec: byte-identical after the import, when the
/// machine has the header and the spec agrees with it (the bindgen cross-check).
#[test]
fn the_real_virtio_snd_header_round_trips() {
    let real = Path::new("/usr/include/linux/virtio_snd.h");
    if !real.exists() {
        eprintln!("skipped: no {}", real.display());
        return;
    }
    let spec = gen::load_all()
        .unwrap()
        .into_iter()
        .find(|s| s.name == "virtio_snd")
        .unwrap();
    if !bindgen_check::check_system_header(&spec)
        .unwrap()
        .is_empty()
    {
        eprintln!("skipped: the spec does not match this machine's header");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("spec")).unwrap();
    for rel in gen::SPECS {
        std::fs::copy(root().join(rel), dir.path().join(rel)).unwrap();
    }
    let out = import_in(dir.path(), real, &Options::default()).unwrap();
    assert!(!out.written, "{}", out.text);
    assert_eq!(
        std::fs::read(dir.path().join("spec/virtio_snd.toml")).unwrap(),
        std::fs::read(root().join("spec/virtio_snd.toml")).unwrap()
    );
}

#[test]
fn a_new_request_code_struct_and_field_are_added_and_the_request_is_marked() {
    let dir = scratch();
    let rel = "spec/virtio_snd.toml";
    let before = read(dir.path(), rel);
    let header = fixture("virtio/grown/virtio_snd.h");
    let out = import_in(dir.path(), &header, &Options::default()).unwrap();
    assert!(out.written);
    let after = read(dir.path(), rel);
    keeps_every_line(&before, &after);

    // The code joins its C enum's request group, after PCM_STOP, written like its
    // neighbours (four hex digits, a Rust name from the group's common prefix).
    assert_eq!(
        line_after(&after, "\"VIRTIO_SND_R_PCM_STOP\""),
        r#"  { name = "VIRTIO_SND_R_PCM_DRAIN", value = 0x0106, rust = "PcmDrain" },"#
    );
    // The new structure, after the header's previous one, every byte declared (the C
    // compiler pads 13 bytes to 16).
    assert!(
        after.contains(
            "[[struct]]\nname = \"virtio_snd_pcm_drain\"\nfields = [\n  \
             { name = \"hdr\", type = \"virtio_snd_pcm_hdr\" },\n  \
             { name = \"timeout_ms\", type = \"le32\" },\n  \
             { name = \"flush\", type = \"u8\" },\n  \
             { name = \"padding\", type = \"[u8; 3]\", padding = true },\n]\n\n\
             [[struct]]\nname = \"virtio_snd_pcm_status\""
        ),
        "{after}"
    );
    assert_eq!(
        line_after(&after, "\"latency_bytes\""),
        r#"  { name = "position", type = "le32" },"#
    );
    // The request: what it sends and expects is not in the header.
    assert!(
        after.ends_with(
            "\n[[request]]\ncode = \"VIRTIO_SND_R_PCM_DRAIN\"\n\
             todo = \"VIRTIO_SND_R_PCM_DRAIN is new in virtio_snd.h; the header cannot say which structure this request sends (`request`, and `request_payload` if any) and which the device answers with (`response`, and `response_payload` or `items` with `item_count`)\"\n\
             request = \"?\"\nresponse = \"?\"\n"
        ),
        "{after}"
    );
    let todo_line = line_of(&after, "todo = \"VIRTIO_SND_R_PCM_DRAIN");
    assert_eq!(out.markers.len(), 1, "{:?}", out.markers);
    assert!(
        out.markers[0].starts_with(&format!(
            "spec/virtio_snd.toml:{todo_line}:1: request VIRTIO_SND_R_PCM_DRAIN, key todo: "
        )),
        "{:?}",
        out.markers
    );
    // The spec-diff of the change: the status trailer grew (breaking: it is part of no
    // request, but its new field has no feature gate), the rest is additive.
    for line in [
        "== spec-diff spec/virtio_snd.toml",
        "  additive  added (16 bytes)",
        "  additive  VIRTIO_SND_R_PCM_DRAIN = 0x106 added",
        "  breaking  field position added at offset 8 (le32, 4 bytes)",
    ] {
        assert!(
            out.text.contains(line),
            "{line:?} missing from:\n{}",
            out.text
        );
    }

    // With the marker left, nothing is generated, and `gen` refuses the spec by line.
    let err = finish(dir.path(), &header, &out).unwrap_err().to_string();
    assert!(err.contains("1 marker(s) need a person"), "{err}");
    assert!(!dir.path().join("spec/src").exists());
    let err = gen::run_in(dir.path(), false, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "spec/virtio_snd.toml:{todo_line}:1: request VIRTIO_SND_R_PCM_DRAIN, key todo: left for a person to fill in"
        )),
        "{err}"
    );

    // A person fills it in; importing again changes nothing and generates everything.
    let filled = after
        .replace(
            "request = \"?\"\nresponse = \"?\"\n",
            "request = \"virtio_snd_pcm_drain\"\nresponse = \"virtio_snd_hdr\"\n",
        )
        .lines()
        .filter(|l| !l.starts_with("todo = "))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    std::fs::write(dir.path().join(rel), &filled).unwrap();
    let again = import_in(dir.path(), &header, &Options::default()).unwrap();
    assert!(!again.written, "{}", again.text);
    finish(dir.path(), &header, &again).unwrap();
    let generated = read(dir.path(), "spec/src/generated/virtio_snd.rs");
    assert!(generated.contains("PcmDrain"), "{generated}");
    assert!(read(dir.path(), "spec/generated/virtio_snd.h").contains("virtio_snd_pcm_drain"));
}

#[test]
fn a_moved_field_is_moved_with_its_doc_and_the_diff_says_breaking() {
    let dir = scratch();
    let rel = "spec/virtio_snd.toml";
    let header = fixture("virtio/moved/virtio_snd.h");
    let out = import_in(dir.path(), &header, &Options::default()).unwrap();
    let after = read(dir.path(), rel);
    assert_eq!(
        line_after(&after, "\"period_bytes\""),
        r#"  { name = "buffer_bytes", type = "le32", doc = "Ring size." },"#
    );
    assert!(
        out.text
            .contains("struct virtio_snd_pcm_set_params: field buffer_bytes moved: offset 8 -> 12"),
        "{}",
        out.text
    );
    assert!(
        out.text
            .contains("breaking  field buffer_bytes moved: offset 8 -> 12"),
        "{}",
        out.text
    );
    assert!(out.markers.is_empty());
    // Nothing left for a person: it regenerates, cross-checked against the imported header.
    finish(dir.path(), &header, &out).unwrap();
    assert!(dir.path().join("spec/src/generated/virtio_snd.rs").exists());
}

#[test]
fn a_removed_constant_is_reported_and_kept_unless_removal_is_allowed() {
    let dir = scratch();
    let rel = "spec/virtio_snd.toml";
    let before = read(dir.path(), rel);
    let header = fixture("virtio/removed/virtio_snd.h");
    let out = import_in(dir.path(), &header, &Options::default()).unwrap();
    assert!(!out.written, "{}", out.text);
    assert!(
        out.text.contains(
            "no longer in virtio_snd.h:\n  VIRTIO_SND_S_IO_ERR (group status): not in virtio_snd.h; kept (pass --allow-removal to remove it)\n"
        ),
        "{}",
        out.text
    );
    assert_eq!(read(dir.path(), rel), before);

    let allow = Options {
        allow_removal: true,
        ..Options::default()
    };
    let out = import_in(dir.path(), &header, &allow).unwrap();
    assert!(out.written);
    let after = read(dir.path(), rel);
    assert!(!after.contains("VIRTIO_SND_S_IO_ERR"), "{after}");
    assert_eq!(
        before
            .lines()
            .filter(|l| !l.contains("VIRTIO_SND_S_IO_ERR"))
            .collect::<Vec<_>>(),
        after.lines().collect::<Vec<_>>()
    );
    assert!(
        out.text.contains("breaking  VIRTIO_SND_S_IO_ERR removed"),
        "{}",
        out.text
    );
}

#[test]
fn an_hmulti_shaped_header_shifts_opcodes_and_marks_what_the_driver_writes() {
    let dir = scratch();
    let rel = "spec/hmulti_audio.toml";
    let before = read(dir.path(), rel);
    let header = fixture("hmulti/grown/hmulti_audio.h");
    let out = import_in(dir.path(), &header, &Options::default()).unwrap();
    let after = read(dir.path(), rel);
    // The inserted opcode takes 8021 and the ones after it move up by one.
    let opcodes: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("name = \"B_MULTI_") && l.contains("value = 80"))
        .filter(|l| !l.contains("DRIVER_BASE"))
        .collect();
    assert_eq!(
        opcodes,
        [
            r#"  { name = "B_MULTI_GET_DESCRIPTION", value = 8020, rust = "GetDescription" },"#,
            r#"  { name = "B_MULTI_GET_EVENT", value = 8021, rust = "GetEvent" },"#,
            r#"  { name = "B_MULTI_GET_ENABLED_CHANNELS", value = 8022, rust = "GetEnabledChannels" },"#,
            r#"  { name = "B_MULTI_SET_ENABLED_CHANNELS", value = 8023, rust = "SetEnabledChannels" },"#,
            r#"  { name = "B_MULTI_BUFFER_EXCHANGE", value = 8024, rust = "BufferExchange" },"#,
            r#"  { name = "B_MULTI_BUFFER_FORCE_STOP", value = 8025, rust = "BufferForceStop" },"#,
        ]
    );
    assert!(
        out.text
            .contains("B_MULTI_BUFFER_FORCE_STOP changed: 0x1f58 -> 0x1f59 (group opcode)"),
        "{}",
        out.text
    );
    // A #define between two sample rates joins them.
    assert_eq!(
        line_after(&after, "\"B_SR_96000\""),
        r#"  { name = "B_SR_192000", value = 0x2000, rust = "V192000" },"#
    );
    // A field appended to a caller structure: who writes it is for a person to say.
    assert_eq!(
        line_after(&after, "{ name = \"lock_data\", type = \"i32\" },"),
        r#"  { name = "timecode_source", type = "u32" },"#
    );
    assert!(
        after.contains("todo = \"new field(s) timecode_source from hmulti_audio.h: add to driver_writes those an ioctl handler writes back to the caller\""),
        "{after}"
    );
    // A new caller structure, with C's natural alignment (no padding fields), marked.
    assert!(
        after.contains(
            "[[struct]]\nname = \"multi_get_event\"\ntodo = \"multi_get_event is new in hmulti_audio.h: list in driver_writes the fields an ioctl handler writes back to the caller (driver_writes = [] if none)\"\nfields = [\n  \
             { name = \"info_size\", type = \"size_t\" },\n  \
             { name = \"event\", type = \"u32\" },\n  \
             { name = \"timestamp\", type = \"bigtime_t\" },\n  \
             { name = \"count\", type = \"i32\" },\n]\n"
        ),
        "{after}"
    );
    assert!(
        after.contains("[[ioctl]]\ncode = \"B_MULTI_GET_EVENT\"\ntodo = \"B_MULTI_GET_EVENT is new in hmulti_audio.h; the header cannot say what the argument points to (`arg`; none for an opcode without one, with direction none) and who reads and writes it (`direction`: in, out, inout or none)\"\narg = \"?\"\ndirection = \"?\"\n"),
        "{after}"
    );
    // B_AUDIO_DRIVER_BASE comes from the included Drivers.h: not a removal.
    assert!(!out.text.contains("no longer in"), "{}", out.text);
    assert!(after.contains("B_AUDIO_DRIVER_BASE"));
    assert_eq!(out.markers.len(), 3, "{:#?}", out.markers);
    for (needle, item) in [
        (
            "todo = \"new field(s)",
            "struct multi_channel_enable, key todo",
        ),
        (
            "todo = \"multi_get_event is new",
            "struct multi_get_event, key todo",
        ),
        (
            "todo = \"B_MULTI_GET_EVENT is new",
            "ioctl B_MULTI_GET_EVENT, key todo",
        ),
    ] {
        let line = line_of(&after, needle);
        assert!(
            out.markers
                .iter()
                .any(|m| m.starts_with(&format!("spec/hmulti_audio.toml:{line}:1: {item}: "))),
            "{item} at line {line}: {:#?}",
            out.markers
        );
    }
    keeps_every_line(
        &before
            .lines()
            .filter(|l| !l.contains("value = 802"))
            .collect::<Vec<_>>()
            .join("\n"),
        &after,
    );
    // The spec-diff: a shifted opcode breaks every caller built against the old number.
    for line in [
        "  breaking  B_MULTI_BUFFER_FORCE_STOP changed: 0x1f58 -> 0x1f59",
        "  additive  B_MULTI_GET_EVENT = 0x1f55 added",
        "  breaking  field timecode_source added at offset 24 (u32, 4 bytes)",
        // size_t, u32, 4 bytes of padding, bigtime_t, i32, 4 bytes of tail padding.
        "  additive  added (32 bytes)",
    ] {
        assert!(
            out.text.contains(line),
            "{line:?} missing from:\n{}",
            out.text
        );
    }
}

#[test]
fn a_malformed_header_is_refused_by_line_and_nothing_is_written() {
    let dir = scratch();
    let before = read(dir.path(), "spec/virtio_snd.toml");
    let header = fixture("virtio/malformed/virtio_snd.h");
    let err = import_in(dir.path(), &header, &Options::default())
        .unwrap_err()
        .to_string();
    // The broken declaration is line 51 of the fixture (`__le32 hda_fn_nid` without `;`).
    assert!(err.contains("virtio_snd.h:51:"), "{err}");
    assert!(
        err.contains("does not compile; nothing was written"),
        "{err}"
    );
    assert_eq!(read(dir.path(), "spec/virtio_snd.toml"), before);
}

#[test]
fn a_header_no_spec_records_is_refused() {
    let dir = scratch();
    let header = fixture("other/sound.h");
    let err = import_in(dir.path(), &header, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sound.h: not one of ours: no spec file's `[abi] header` names a file called sound.h (spec/virtio_snd.toml records linux/virtio_snd.h, spec/hmulti_audio.toml records hmulti_audio.h); nothing was written"),
        "{err}"
    );
}

#[test]
fn a_spec_with_a_marker_left_is_refused_before_anything_is_read() {
    let dir = scratch();
    let rel = "spec/virtio_snd.toml";
    let text = read(dir.path(), rel).replace(
        "name = \"virtio_snd_pcm_status\"\n",
        "name = \"virtio_snd_pcm_status\"\ntodo = \"say who writes it\"\n",
    );
    std::fs::write(dir.path().join(rel), &text).unwrap();
    let line = line_of(&text, "todo = \"say who writes it\"");
    let err = import_in(
        dir.path(),
        &fixture("virtio/grown/virtio_snd.h"),
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "spec/virtio_snd.toml:{line}:1: struct virtio_snd_pcm_status, key todo: left for a person to fill in: say who writes it"
        )),
        "{err}"
    );
    assert!(err.ends_with("nothing was written"), "{err}");
    assert_eq!(read(dir.path(), rel), text);
}
