//! `cargo xtask gen`: every file derived from `spec/*.toml`, written only here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use codegen::{emit_c, emit_json, emit_rust, model, Spec};

use crate::{bindgen_check, root, Result};

/// The spec files, in the order their modules are generated.
pub const SPECS: [&str; 3] = [
    "spec/virtio_snd.toml",
    "spec/hmulti_audio.toml",
    "spec/haiku_driver.toml",
];

/// Loads every spec; all diagnostics of all files are reported together.
pub fn load_all() -> Result<Vec<Spec>> {
    let root = root();
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    for rel in SPECS {
        match model::load(&root.join(rel), Path::new(rel)) {
            Ok(s) => specs.push(s),
            Err(d) => errors.push(d.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors.join("\n").into())
    }
}

/// Every generated file: path relative to the root, and its contents.
pub fn outputs(specs: &[Spec]) -> Result<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    for s in specs {
        out.insert(
            PathBuf::from(format!("spec/src/generated/{}.rs", s.name)),
            emit_rust::emit(s)?,
        );
        out.insert(
            PathBuf::from(format!("spec/generated/{}.h", s.name)),
            emit_c::header(s),
        );
    }
    let json = emit_json::layout(specs);
    out.insert(
        PathBuf::from("spec/generated/layout.json"),
        format!("{:#}\n", json),
    );
    out.insert(
        PathBuf::from("spec/generated/kernel_stub.c"),
        emit_c::kernel_stub(specs),
    );
    Ok(out)
}

pub fn run(check: bool, haiku: Option<&Path>) -> Result {
    let specs = load_all()?;
    let files = outputs(&specs)?;
    // A real C compiler confirms every size and offset of the emitted headers.
    crate::bindgen_check::compile_headers(&files)?;
    // bindgen confirms our layout and constants against the real headers.
    let mut mismatches = Vec::new();
    for s in &specs {
        if let Some(h) = &s.header {
            if h.starts_with("linux/") {
                mismatches.extend(bindgen_check::check_system_header(s)?);
            }
        }
    }
    if let Some(tree) = haiku {
        mismatches.extend(bindgen_check::check_haiku(&specs, tree)?);
    }
    if !mismatches.is_empty() {
        return Err(format!(
            "the spec disagrees with the C headers; nothing was written:\n  {}",
            mismatches.join("\n  ")
        )
        .into());
    }
    let root = root();
    let mut stale = Vec::new();
    for (rel, contents) in &files {
        let path = root.join(rel);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == *contents {
            continue;
        }
        if check {
            let diff = similar::TextDiff::from_lines(&current, contents);
            let shown = diff
                .unified_diff()
                .context_radius(2)
                .header(
                    &format!("a/{}", rel.display()),
                    &format!("b/{}", rel.display()),
                )
                .to_string();
            let lines: Vec<&str> = shown.lines().collect();
            let max = 80;
            eprintln!("{}", lines[..lines.len().min(max)].join("\n"));
            if lines.len() > max {
                eprintln!("... ({} more diff lines)", lines.len() - max);
            }
            stale.push(rel.display().to_string());
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, contents)?;
            eprintln!("wrote {}", rel.display());
        }
    }
    if !stale.is_empty() {
        return Err(format!(
            "generated files are stale: {}; run `cargo xtask gen` and commit",
            stale.join(", ")
        )
        .into());
    }
    Ok(())
}

pub fn layout() -> Result {
    let specs = load_all()?;
    println!("{:#}", emit_json::layout(&specs));
    Ok(())
}
