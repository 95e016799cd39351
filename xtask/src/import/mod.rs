//! `cargo xtask gen --import HEADER.h`: brings a changed C header into the spec that
//! describes it, so the TOML stays the single source of truth.
//!
//! 1. The header is read with libclang (bindgen): constants with their C enums, structs and
//!    unions with their fields' types and offsets (`header.rs`).
//! 2. The spec file is the one whose `[abi] header` has the same file name.
//! 3. The differences are applied to the TOML in place with `toml_edit` (`apply.rs`): new
//!    constants join the group of their C enum or of their neighbours, new structures go
//!    after the header's previous one, changed values, types and field orders are updated,
//!    items the header dropped are reported and kept unless `--allow-removal`. What the
//!    header cannot say gets a `todo` marker (see spec/SCHEMA.md), which codegen refuses.
//! 4. The result must agree with the header (the bindgen cross-check's comparison) before
//!    anything is written; the file is replaced atomically (temp file + rename).
//! 5. Then the spec-diff of the change is printed and, with no marker left, everything is
//!    regenerated as `cargo xtask gen` does, the cross-check reading the imported header.

pub mod apply;
pub mod header;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use codegen::{diff, marker, model};
use toml_edit::{DocumentMut, Item, Value};

use crate::bindgen_check::{self, Coverage};
use crate::{gen, root, Result};

/// What the command line gives.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Remove what the header no longer declares instead of keeping and reporting it.
    pub allow_removal: bool,
    /// Extra arguments for libclang (include directories, a target).
    pub clang_args: Vec<String>,
}

/// What an import did.
#[derive(Debug)]
pub struct Outcome {
    /// The spec file, relative to the workspace root.
    pub spec: String,
    /// Whether the spec file was rewritten (false when it already agreed).
    pub written: bool,
    /// The text shown to the user: the changes, the removals, the spec-diff.
    pub text: String,
    /// The markers left for a person, one `file:line:col: item: message` each.
    pub markers: Vec<String>,
}

/// `cargo xtask gen --import HEADER`.
pub fn run(header: &Path, opts: &Options) -> Result {
    let outcome = import_in(&root(), header, opts)?;
    print!("{}", outcome.text);
    finish(&root(), header, &outcome)
}

/// After the import: stop on markers, else regenerate.
pub fn finish(root: &Path, header: &Path, outcome: &Outcome) -> Result {
    if !outcome.markers.is_empty() {
        return Err(format!(
            "{} was written, but {} marker(s) need a person before anything is generated:\n  {}",
            outcome.spec,
            outcome.markers.len(),
            outcome.markers.join("\n  ")
        )
        .into());
    }
    // Also when the spec already agreed: after a person filled in the markers, this is
    // how the generated files follow the imported header.
    if !outcome.written {
        eprintln!("regenerating from {} as it stands", outcome.spec);
    }
    gen::run_with_header(root, false, None, Some(header))
}

/// The spec file under `root` whose `[abi] header` names a file called like `header`.
fn find_spec(root: &Path, header: &Path) -> Result<(String, String)> {
    let wanted = header
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", header.display()))?;
    let mut recorded = Vec::new();
    for rel in gen::SPECS {
        let text = std::fs::read_to_string(root.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
        let doc: DocumentMut = text.parse().map_err(|e| format!("{rel}: {e}"))?;
        let Some(h) = doc
            .get("abi")
            .and_then(|a| a.get("header"))
            .and_then(Item::as_str)
        else {
            continue;
        };
        if Path::new(h).file_name() == Some(wanted) {
            return Ok((rel.to_string(), text));
        }
        recorded.push(format!("{rel} records {h}"));
    }
    Err(format!(
        "{}: not one of ours: no spec file's `[abi] header` names a file called {} ({}); nothing was written",
        header.display(),
        wanted.to_string_lossy(),
        recorded.join(", ")
    )
    .into())
}

/// The import on the workspace at `root`: reads, compares, writes the spec (unless it
/// already agrees). Nothing is written on any error.
pub fn import_in(root: &Path, header_path: &Path, opts: &Options) -> Result<Outcome> {
    let (rel, old_text) = find_spec(root, header_path)?;
    let old = model::parse(&old_text, Path::new(&rel)).map_err(|d| {
        format!(
            "{d}\n{rel} must load before an import (markers from an earlier import are filled in first); nothing was written"
        )
    })?;
    let header = header::read(header_path, &opts.clang_args)?;
    let doc: DocumentMut = old_text.parse().map_err(|e| format!("{rel}: {e}"))?;
    let mut imp = apply::Import::new(doc, &old, &header, opts.allow_removal);
    imp.run().map_err(|e| format!("{e}; nothing was written"))?;
    let new_text = imp.doc.to_string();
    let report = std::mem::take(&mut imp.report);

    // The result, markers set aside, must load and agree with the header.
    let markers: Vec<String> = marker::find(&new_text, Path::new(&rel))
        .iter()
        .map(ToString::to_string)
        .collect();
    let (checkable, marked_types) = without_markers(&new_text)?;
    let new = model::parse(&checkable, Path::new(&rel))
        .map_err(|d| format!("the imported spec does not load:\n{d}\nnothing was written"))?;
    let header_name = header_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    // Partial: the header may rely on constants another header defines (hmulti_audio.h on
    // Drivers.h's B_AUDIO_DRIVER_BASE); what it no longer declares is the import's own
    // report (kept or removed), not a disagreement.
    let disagree: Vec<String> =
        bindgen_check::compare(&new, &header.facts, &header_name, Coverage::Partial)
            .into_iter()
            .filter(|line| {
                !report
                    .kept
                    .iter()
                    .chain(marked_types.iter())
                    .any(|k| mentions(line, k))
            })
            .collect();
    if !disagree.is_empty() {
        return Err(format!(
            "the import could not make {rel} agree with {}; nothing was written:\n  {}",
            header_path.display(),
            disagree.join("\n  ")
        )
        .into());
    }

    let mut text = String::new();
    let written = new_text != old_text;
    if written {
        write_atomically(&root.join(&rel), &new_text)?;
        writeln!(text, "{rel}: imported {}", header_path.display())?;
    } else {
        writeln!(
            text,
            "{rel} already agrees with {}; nothing changed",
            header_path.display()
        )?;
    }
    for c in &report.changes {
        writeln!(text, "  {c}")?;
    }
    if !report.removed.is_empty() {
        writeln!(text, "no longer in {header_name}:")?;
        for r in &report.removed {
            writeln!(text, "  {r}")?;
        }
    }
    if written {
        let changes = diff::diff(&old, &new);
        text.push_str(&diff::render(&format!("spec-diff {rel}"), &changes));
        writeln!(text, "{}", diff::summary(&changes))?;
    }
    Ok(Outcome {
        spec: rel,
        written,
        text,
        markers,
    })
}

/// Whether a cross-check line is about `item` (`name` or `struct.field`).
fn mentions(line: &str, item: &str) -> bool {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .any(|w| w == item || w.split('.').next() == Some(item))
}

/// The spec text with every marked item set aside, so the rest can be loaded and checked:
/// `todo` keys dropped, entries holding a `"?"` placeholder removed (request, event and
/// ioctl entries; fields, whose structures are then not compared). Returns the text and the
/// structures with a field set aside.
fn without_markers(text: &str) -> Result<(String, Vec<String>)> {
    let mut doc: DocumentMut = text.parse()?;
    let mut marked_types = Vec::new();
    for section in ["request", "event", "ioctl"] {
        if let Some(arr) = doc.get_mut(section).and_then(Item::as_array_of_tables_mut) {
            arr.retain(|t| !t.iter().any(|(_, v)| v.as_str() == Some(apply::UNKNOWN)));
        }
    }
    for section in ["struct", "union", "consts"] {
        let Some(arr) = doc.get_mut(section).and_then(Item::as_array_of_tables_mut) else {
            continue;
        };
        for t in arr.iter_mut() {
            t.remove(marker::KEY);
            let name = t
                .get("name")
                .and_then(Item::as_str)
                .unwrap_or_default()
                .to_string();
            for list in ["fields", "values"] {
                if let Some(a) = t.get_mut(list).and_then(Item::as_array_mut) {
                    let before = a.len();
                    a.retain(|v| {
                        !v.as_inline_table().is_some_and(|it| {
                            it.iter().any(|(_, x)| x.as_str() == Some(apply::UNKNOWN))
                        })
                    });
                    if a.len() != before {
                        marked_types.push(name.clone());
                    }
                    for v in a.iter_mut() {
                        if let Value::InlineTable(it) = v {
                            it.remove(marker::KEY);
                        }
                    }
                }
            }
        }
    }
    Ok((doc.to_string(), marked_types))
}

/// Replaces `path` with `text` through a temporary file in the same directory and a
/// rename, so a reader never sees half a file.
fn write_atomically(path: &Path, text: &str) -> Result {
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| format!("{}: cannot create a temporary file: {e}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .map_err(|e| format!("{}: cannot replace: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests;
