//! The ABI review on fixture pairs. Each expectation is the literal review a person writes
//! from the two files: what changed, and whether code built against the old file breaks
//! (breaking), only fails to compile (rename), or is unaffected (additive).

use std::path::{Path, PathBuf};

use codegen::diff::{diff, render, summary, Change, Class};
use codegen::model;

fn load(name: &str) -> codegen::Spec {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    model::load(&p, Path::new(name)).unwrap_or_else(|e| panic!("{e}"))
}

/// The review of `old` -> `new` must be exactly `want`, in order.
fn assert_review(old: &str, new: &str, want: &[(&str, Class, &str)]) {
    let changes = diff(&load(old), &load(new));
    let got: Vec<(&str, Class, &str)> = changes
        .iter()
        .map(|c| (c.section.as_str(), c.class, c.text.as_str()))
        .collect();
    assert_eq!(
        got,
        want,
        "\n{}",
        render(&format!("{old} -> {new}"), &changes)
    );
}

#[test]
fn virtio_1_2_to_1_3_is_additive() {
    use Class::Additive;
    assert_review(
        "virtio_snd_1_2.toml",
        "virtio_snd_1_3.toml",
        &[
            (
                "struct virtio_snd_config",
                Additive,
                "field controls added at offset 12 (le32, 4 bytes, since 1.3, only with VIRTIO_SND_F_CTLS)",
            ),
            (
                "struct virtio_snd_config",
                Additive,
                "size 12 -> 16 bytes (grows at the end; read only with VIRTIO_SND_F_CTLS)",
            ),
            ("struct virtio_snd_ctl_hdr", Additive, "added (8 bytes, since 1.3)"),
            ("consts feature", Additive, "VIRTIO_SND_F_CTLS = 0 added"),
            ("consts request", Additive, "VIRTIO_SND_R_CTL_INFO = 0x300 added"),
            ("consts request", Additive, "VIRTIO_SND_R_CTL_READ = 0x302 added"),
        ],
    );
    let changes = diff(&load("virtio_snd_1_2.toml"), &load("virtio_snd_1_3.toml"));
    assert_eq!(
        summary(&changes),
        "summary: 0 breaking, 0 rename, 6 additive"
    );
    // The reverse direction removes things: breaking.
    let back = diff(&load("virtio_snd_1_3.toml"), &load("virtio_snd_1_2.toml"));
    assert!(back
        .iter()
        .any(|c| c.class == Class::Breaking && c.text.contains("controls removed")));
}

#[test]
fn a_moved_field_is_breaking() {
    use Class::Breaking;
    assert_review(
        "moved_old.toml",
        "moved_new.toml",
        &[
            (
                "struct virtio_snd_pcm_set_params",
                Breaking,
                "field buffer_bytes moved: offset 4 -> 8",
            ),
            (
                "struct virtio_snd_pcm_set_params",
                Breaking,
                "field period_bytes moved: offset 8 -> 4",
            ),
        ],
    );
    let changes = diff(&load("moved_old.toml"), &load("moved_new.toml"));
    assert!(render("moved", &changes).contains("struct virtio_snd_pcm_set_params\n  breaking"));
}

#[test]
fn growth_at_the_end_is_additive_only_where_the_reader_accepts_it() {
    use Class::Breaking;
    assert_review(
        "growth_old.toml",
        "growth_new.toml",
        &[
            (
                "struct virtio_snd_config",
                Breaking,
                "field chmaps added at offset 8 (le32, 4 bytes)",
            ),
            (
                "struct virtio_snd_config",
                Breaking,
                "size 8 -> 12 bytes: grows at the end, but field chmaps has no feature gate, so a reader of the new layout reads it from writers of the old 8 bytes",
            ),
            (
                "struct virtio_snd_pcm_hdr",
                Breaking,
                "field flags added at offset 8 (le32, 4 bytes)",
            ),
            (
                "struct virtio_snd_pcm_hdr",
                Breaking,
                "size 8 -> 12 bytes: grows at the end, but a wire message part, and the generated decoders take exactly its size",
            ),
            (
                "struct multi_thing",
                Breaking,
                "field extra added at offset 4 (i32, 4 bytes)",
            ),
            (
                "struct multi_thing",
                Breaking,
                "size 4 -> 8 bytes: grows at the end, but a user struct: MultiIoctl::decode refuses a caller's length below the new size",
            ),
            (
                "struct hook_table",
                Breaking,
                "field uninit added at offset 8 (fn() -> i32, 8 bytes)",
            ),
            (
                "struct hook_table",
                Breaking,
                "size 8 -> 16 bytes: grows at the end, but a kernel struct, passed by pointer with no length: a reader of the new layout reads past the end of an older writer's",
            ),
        ],
    );
}

#[test]
fn ioctl_contracts_driver_writes_direction_and_kind() {
    use Class::{Additive, Breaking};
    assert_review(
        "ioctl_old.toml",
        "ioctl_new.toml",
        &[
            (
                "struct multi_description",
                Breaking,
                "driver_writes: now also writes back interface_minimum (callers were promised it is left as they wrote it)",
            ),
            (
                "struct multi_get_event",
                Breaking,
                "driver_writes: no longer writes back count (callers read it as the answer)",
            ),
            (
                "struct multi_set_event_info",
                Breaking,
                "kind user -> kernel (how the structure is read, aligned and generated)",
            ),
            (
                "ioctl B_MULTI_SET_EVENT_INFO",
                Breaking,
                "direction in -> inout (the driver now writes back into the caller's argument)",
            ),
            (
                "ioctl B_MULTI_GET_EVENT",
                Breaking,
                "direction out -> inout (the driver now reads what old callers leave unset)",
            ),
            (
                "ioctl B_MULTI_GET_MIX",
                Additive,
                "direction inout -> out (the driver reads less of the argument)",
            ),
        ],
    );
}

#[test]
fn renames_are_their_own_class() {
    use Class::Rename;
    assert_review(
        "renames_old.toml",
        "renames_new.toml",
        &[
            ("struct virtio_snd_hdr", Rename, "Rust name Hdr -> Header"),
            (
                "struct virtio_snd_pcm_hdr",
                Rename,
                "renamed to virtio_snd_pcm_stream_hdr (same layout, 8 bytes)",
            ),
            (
                "struct virtio_snd_pcm_xfer",
                Rename,
                "field stream_id renamed to stream (same offset 0 and type le32)",
            ),
            (
                "consts request",
                Rename,
                "VIRTIO_SND_R_PCM_START renamed to VIRTIO_SND_R_PCM_BEGIN (same value 0x104)",
            ),
        ],
    );
    let changes = diff(&load("renames_old.toml"), &load("renames_new.toml"));
    assert_eq!(
        summary(&changes),
        "summary: 0 breaking, 4 rename, 0 additive"
    );
    assert!(render("r", &changes).contains("struct virtio_snd_hdr\n  rename    Rust name"));
}

/// Facts code derives behaviour from (the driver's rate and format maps): gained is
/// additive, lost or changed is breaking, though the wire is the same.
#[test]
fn facts_gained_lost_and_changed() {
    use Class::{Additive, Breaking};
    assert_review(
        "facts_old.toml",
        "facts_new.toml",
        &[
            ("consts format", Breaking, "FMT_S24: phys_width 32 -> 24"),
            (
                "consts format",
                Breaking,
                "FMT_U8: encoding removed (was unsigned)",
            ),
            ("consts rate", Breaking, "RATE_44100: hz 44100 -> 44000"),
            ("consts rate", Additive, "RATE_VAR: hz = 96000 added"),
        ],
    );
}

#[test]
fn availability_since_feature_only_in() {
    use Class::{Additive, Breaking};
    assert_review(
        "gates_old.toml",
        "gates_new.toml",
        &[
            (
                "struct virtio_snd_config",
                Breaking,
                "field jacks: now only with VIRTIO_SND_F_CTLS (was present without a feature)",
            ),
            (
                "struct virtio_snd_config",
                Additive,
                "field controls: no longer needs VIRTIO_SND_F_CTLS",
            ),
            (
                "struct virtio_snd_ctl_hdr",
                Breaking,
                "feature VIRTIO_SND_F_CTLS -> VIRTIO_SND_F_OTHER",
            ),
            (
                "consts memory_type",
                Additive,
                "B_MTR_UC: now in every Haiku version (was only in beta5)",
            ),
            (
                "consts memory_type",
                Breaking,
                "B_WRITE_BACK_MEMORY: now only in nightly (was in every Haiku version)",
            ),
            (
                "consts request",
                Additive,
                "VIRTIO_SND_R_CTL_INFO: since 1.3 -> 1.2 (now also in 1.2)",
            ),
            (
                "consts request",
                Breaking,
                "VIRTIO_SND_R_PCM_STOP: since 1.2 -> 1.3 (now absent from 1.2)",
            ),
            (
                "request VIRTIO_SND_R_PCM_START",
                Breaking,
                "now only with VIRTIO_SND_F_CTLS (was present without a feature)",
            ),
            (
                "import spin",
                Additive,
                "now in every Haiku version (was only in nightly)",
            ),
            (
                "import snooze",
                Breaking,
                "now only in beta5 (was in every Haiku version)",
            ),
        ],
    );
}

#[test]
fn retypes_are_breaking_and_a_spec_equals_itself() {
    let old = load("moved_old.toml");
    let mut new = old.clone();
    let t = new
        .types
        .iter_mut()
        .find(|t| t.name == "virtio_snd_pcm_set_params")
        .unwrap();
    t.fields[4].ty = codegen::types::parse("i8").unwrap();
    assert_eq!(
        diff(&old, &new),
        vec![Change {
            section: "struct virtio_snd_pcm_set_params".into(),
            class: Class::Breaking,
            text: "field format retyped: u8 -> i8 (1 -> 1 bytes)".into(),
        }]
    );
    assert!(diff(&old, &old).is_empty());
    for f in [
        "growth_new.toml",
        "ioctl_new.toml",
        "renames_new.toml",
        "gates_new.toml",
    ] {
        assert!(diff(&load(f), &load(f)).is_empty(), "{f}");
    }
}
