//! `cargo xtask gen`: every file derived from `spec/*.toml`, written only here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use codegen::{emit_c, emit_imports, emit_json, emit_md, emit_rust, model, Spec};

use crate::{bindgen_check, root, Result};

/// The spec files, in the order their modules are generated.
pub const SPECS: [&str; 3] = [
    "spec/virtio_snd.toml",
    "spec/hmulti_audio.toml",
    "spec/haiku_driver.toml",
];

/// Where the generated reference documents go: a directory of their own, so every file in
/// it is generated (the tidy test checks each one's header) and the hand-written guides in
/// `docs/` are never mistaken for them.
pub const GENERATED_DOCS: &str = "docs/generated";

/// Loads every spec; all diagnostics of all files are reported together.
pub fn load_all() -> Result<Vec<Spec>> {
    load_all_in(&root())
}

fn load_all_in(root: &Path) -> Result<Vec<Spec>> {
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
        out.insert(
            PathBuf::from(format!("{GENERATED_DOCS}/{}.md", s.name)),
            emit_md::emit(s),
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
    // The add-on's declarations of the same imports (the only `extern "C"` block of them).
    out.insert(
        PathBuf::from(emit_imports::ADDON_FILE),
        emit_imports::extern_block(specs)?,
    );
    Ok(out)
}

pub fn run(check: bool, haiku: Option<&Path>) -> Result {
    run_in(&root(), check, haiku)
}

/// `gen` on the workspace at `root`. With `check`, only the freshness check: every output
/// is made in memory and compared with the checked-in file; nothing outside this process
/// runs (no C compiler, no libclang). Writing first has a C compiler confirm every size and
/// offset of the emitted headers (`bindgen_check::compile_headers`), so a layout the
/// compiler disagrees with is never written. `haiku`: the Haiku tree's headers are
/// cross-checked first (bindgen).
pub fn run_in(root: &Path, check: bool, haiku: Option<&Path>) -> Result {
    run_with_header(root, check, haiku, None)
}

/// `gen`, with the spec that records `imported`'s file name cross-checked against that
/// file instead of the system's copy (what `gen --import` does: the header just imported
/// is the truth, and the system's may be older).
pub fn run_with_header(
    root: &Path,
    check: bool,
    haiku: Option<&Path>,
    imported: Option<&Path>,
) -> Result {
    let specs = load_all_in(root)?;
    let files = outputs(&specs)?;
    if let Some(file) = imported {
        // The header just imported is the truth for the spec that records its name (the
        // system's copy may be older): bindgen confirms the spec against it.
        let mut mismatches = Vec::new();
        for s in &specs {
            let named = s.header.as_deref().map(|h| Path::new(h).file_name());
            if named.is_some_and(|n| n == file.file_name()) {
                mismatches.extend(bindgen_check::check_header_file(s, file)?);
            }
        }
        if !mismatches.is_empty() {
            return Err(format!(
                "the spec disagrees with {}; nothing was written:\n  {}",
                file.display(),
                mismatches.join("\n  ")
            )
            .into());
        }
    }
    if let Some(tree) = haiku {
        let mismatches = bindgen_check::check_haiku(&specs, tree)?;
        if !mismatches.is_empty() {
            return Err(format!(
                "the spec disagrees with the Haiku tree's headers; nothing was written:\n  {}",
                mismatches.join("\n  ")
            )
            .into());
        }
    }
    if !check {
        bindgen_check::compile_headers(&files)?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of the workspace's spec inputs and generated outputs.
    fn workspace_copy() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let files = outputs(&load_all().unwrap()).unwrap();
        for rel in SPECS.iter().map(PathBuf::from).chain(files.keys().cloned()) {
            let to = dir.path().join(&rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(root().join(&rel), &to).unwrap();
        }
        dir
    }

    #[test]
    fn output_is_reproducible() {
        let specs = load_all().unwrap();
        assert_eq!(
            outputs(&specs).unwrap(),
            outputs(&load_all().unwrap()).unwrap()
        );
    }

    #[test]
    fn check_fails_on_a_stale_file_and_gen_repairs_it() {
        let dir = workspace_copy();
        run_in(dir.path(), true, None).unwrap();
        let stale = dir.path().join("spec/src/generated/virtio_snd.rs");
        let good = std::fs::read_to_string(&stale).unwrap();
        std::fs::write(
            &stale,
            good.replace("pub struct PcmInfo", "pub struct PcmInfoEdited"),
        )
        .unwrap();
        let missing = dir.path().join("spec/generated/layout.json");
        std::fs::remove_file(&missing).unwrap();
        let err = run_in(dir.path(), true, None).unwrap_err().to_string();
        assert!(
            err.contains("spec/src/generated/virtio_snd.rs") && err.contains("layout.json"),
            "{err}"
        );
        assert!(!missing.exists(), "--check must not write");
        run_in(dir.path(), false, None).unwrap();
        assert_eq!(std::fs::read_to_string(&stale).unwrap(), good);
        run_in(dir.path(), true, None).unwrap();
    }

    #[test]
    fn a_spec_error_writes_nothing() {
        let dir = workspace_copy();
        let toml = dir.path().join("spec/virtio_snd.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(
            &toml,
            text.replacen("type = \"le64\"", "type = \"le65\"", 1),
        )
        .unwrap();
        let before =
            std::fs::read_to_string(dir.path().join("spec/src/generated/virtio_snd.rs")).unwrap();
        let err = run_in(dir.path(), false, None).unwrap_err().to_string();
        assert!(
            err.contains("spec/virtio_snd.toml:") && err.contains("le65"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("spec/src/generated/virtio_snd.rs")).unwrap(),
            before
        );
    }
}
