//! The ABI review on fixtures: the virtio 1.2 -> 1.3 change is additive, a moved field is not.

use std::path::{Path, PathBuf};

use codegen::diff::{diff, render, summary, Class};
use codegen::model;

fn load(name: &str) -> codegen::Spec {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    model::load(&p, Path::new(name)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn virtio_1_2_to_1_3_is_additive() {
    let changes = diff(&load("virtio_snd_1_2.toml"), &load("virtio_snd_1_3.toml"));
    let text = render("1.2 -> 1.3", &changes);
    assert!(changes.iter().all(|c| c.class == Class::Additive), "{text}");
    let has = |section: &str, needle: &str| {
        changes
            .iter()
            .any(|c| c.section == section && c.text.contains(needle))
    };
    assert!(
        has(
            "struct virtio_snd_config",
            "field controls added at offset 12"
        ),
        "{text}"
    );
    assert!(
        has(
            "struct virtio_snd_config",
            "size 12 -> 16 bytes (grows at the end)"
        ),
        "{text}"
    );
    assert!(
        has("struct virtio_snd_ctl_hdr", "added (8 bytes, since 1.3)"),
        "{text}"
    );
    assert!(
        has("consts request", "VIRTIO_SND_R_CTL_INFO = 0x300 added"),
        "{text}"
    );
    assert!(
        has("consts feature", "VIRTIO_SND_F_CTLS = 0 added"),
        "{text}"
    );
    assert_eq!(
        summary(&changes),
        "summary: 0 breaking, 6 additive",
        "{text}"
    );
    // The reverse direction removes things: breaking.
    let back = diff(&load("virtio_snd_1_3.toml"), &load("virtio_snd_1_2.toml"));
    assert!(back
        .iter()
        .any(|c| c.class == Class::Breaking && c.text.contains("controls removed")));
}

#[test]
fn a_moved_field_is_breaking() {
    let changes = diff(&load("moved_old.toml"), &load("moved_new.toml"));
    let text = render("moved", &changes);
    let moved: Vec<_> = changes
        .iter()
        .filter(|c| c.text.contains("moved"))
        .collect();
    assert_eq!(moved.len(), 2, "{text}");
    assert!(moved.iter().all(|c| c.class == Class::Breaking), "{text}");
    assert!(
        changes
            .iter()
            .any(|c| c.text == "field buffer_bytes moved: offset 4 -> 8"),
        "{text}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.text == "field period_bytes moved: offset 8 -> 4"),
        "{text}"
    );
    assert!(
        text.contains("struct virtio_snd_pcm_set_params\n  breaking"),
        "{text}"
    );
}

#[test]
fn renames_and_retypes() {
    let old = load("moved_old.toml");
    let mut new = old.clone();
    let t = new
        .types
        .iter_mut()
        .find(|t| t.name == "virtio_snd_pcm_set_params")
        .unwrap();
    t.fields[0].name = "stream".into();
    t.fields[4].ty = codegen::types::parse("i8").unwrap();
    let changes = diff(&old, &new);
    let text = render("edit", &changes);
    assert!(
        changes
            .iter()
            .any(|c| c.class == Class::Additive && c.text.contains("stream_id renamed to stream")),
        "{text}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.class == Class::Breaking && c.text.contains("format retyped: u8 -> i8")),
        "{text}"
    );
    assert!(diff(&old, &old).is_empty());
}
