//! `cargo xtask spec-diff`: the ABI review of a spec change.
//!
//! - no argument: the working tree against HEAD
//! - `REV`: the working tree against a git revision
//! - `OLD.toml NEW.toml`: two files
//! - `--baseline`: the working tree against the released ABI in `spec/baseline/`
//! - `--update-baseline`: make the working tree's spec the released ABI (a deliberate commit)
//!
//! `--deny-breaking` fails, listing them, when anything is breaking; `--json` prints the
//! changes as an array of `{file, section, class, text}`.

use std::path::{Path, PathBuf};
use std::process::Command;

use codegen::diff::{self, Change, Class};
use codegen::model;

use crate::gen::SPECS;
use crate::{root, Result};

/// The folder holding the released spec files.
pub const BASELINE: &str = "spec/baseline";

#[derive(Debug, Clone, clap::Args)]
pub struct SpecDiffArgs {
    /// A git revision to compare the working tree with (default HEAD), or two TOML files.
    args: Vec<String>,
    /// Compare the working tree with the released ABI checked in under spec/baseline/.
    #[arg(long, conflicts_with = "args")]
    baseline: bool,
    /// Exit non-zero, listing the breaking changes, if anything breaking changed.
    #[arg(long)]
    deny_breaking: bool,
    /// Print the changes as JSON: an array of {"file", "section", "class", "text"}, where
    /// class is "breaking", "rename" or "additive" (nothing else is printed on stdout).
    #[arg(long)]
    json: bool,
    /// Make the working tree's spec the released ABI: copy spec/*.toml to spec/baseline/.
    /// A deliberate step: commit the result on its own, as a reviewed ABI change.
    #[arg(long, conflicts_with_all = ["args", "baseline", "deny_breaking", "json"])]
    update_baseline: bool,
}

/// The review of one spec file (or of one pair of files).
pub struct Review {
    /// The heading of the text review.
    pub title: String,
    /// The file the changes are in (the new side).
    pub file: String,
    pub changes: Vec<Change>,
}

fn git_show(rev: &str, rel: &str) -> Result<Option<String>> {
    let out = Command::new("git")
        .current_dir(root())
        .args(["show", &format!("{rev}:{rel}")])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        return Ok(Some(String::from_utf8(out.stdout)?));
    }
    // A spec file that did not exist at that revision compares as absent.
    let verify = Command::new("git")
        .current_dir(root())
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ])
        .output()?;
    if verify.status.success() {
        Ok(None)
    } else {
        Err(format!("`{rev}` is not a git revision").into())
    }
}

/// Compares `old_text` (shown as `old_name`, `None` when the file is absent there) with the
/// working tree's `rel` under `root`.
fn review(root: &Path, rel: &str, old: Option<(String, String)>, absent: &str) -> Result<Review> {
    let new_text = std::fs::read_to_string(root.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
    let new = model::parse(&new_text, Path::new(rel))?;
    let changes = match old {
        Some((old_name, old_text)) => {
            let old = model::parse(&old_text, Path::new(&old_name))?;
            diff::diff(&old, &new)
        }
        None => vec![Change {
            section: rel.to_string(),
            class: Class::Additive,
            text: format!("new spec file ({absent})"),
        }],
    };
    Ok(Review {
        title: rel.to_string(),
        file: rel.to_string(),
        changes,
    })
}

/// The review of every spec file between `rev` and the working tree.
pub fn against_revision(rev: &str) -> Result<Vec<Review>> {
    SPECS
        .iter()
        .map(|rel| {
            let old = git_show(rev, rel)?.map(|t| (format!("{rev}:{rel}"), t));
            review(&root(), rel, old, &format!("absent at {rev}"))
        })
        .collect()
}

/// `spec/virtio_snd.toml` -> `spec/baseline/virtio_snd.toml`.
fn baseline_of(rel: &str) -> PathBuf {
    let name = Path::new(rel).file_name().unwrap_or_default();
    Path::new(BASELINE).join(name)
}

/// The review of every spec file between the released ABI (`spec/baseline/`) and the
/// working tree, both under `root`.
pub fn against_baseline(root: &Path) -> Result<Vec<Review>> {
    SPECS
        .iter()
        .map(|rel| {
            let base = baseline_of(rel);
            let old = match std::fs::read_to_string(root.join(&base)) {
                Ok(t) => Some((base.display().to_string(), t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(format!("{}: {e}", base.display()).into()),
            };
            review(root, rel, old, &format!("absent from {BASELINE}/"))
        })
        .collect()
}

/// The review between two spec files.
pub fn between_files(old: &Path, new: &Path) -> Result<Vec<Change>> {
    let o = model::load(old, old)?;
    let n = model::load(new, new)?;
    Ok(diff::diff(&o, &n))
}

/// The changes as the `--json` array.
pub fn to_json(reviews: &[Review]) -> serde_json::Value {
    reviews
        .iter()
        .flat_map(|r| {
            r.changes.iter().map(|c| {
                serde_json::json!({
                    "file": r.file,
                    "section": c.section,
                    "class": c.class.to_string(),
                    "text": c.text,
                })
            })
        })
        .collect()
}

/// Fails with every breaking change listed, one a line, when there is any.
pub fn deny_breaking(reviews: &[Review]) -> Result {
    let breaking: Vec<String> = reviews
        .iter()
        .flat_map(|r| {
            r.changes
                .iter()
                .filter(|c| c.class == Class::Breaking)
                .map(|c| format!("  {}: {}: {}", r.file, c.section, c.text))
        })
        .collect();
    if breaking.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} breaking ABI change(s):\n{}",
        breaking.len(),
        breaking.join("\n")
    )
    .into())
}

fn print_text(reviews: &[Review]) {
    let mut all = Vec::new();
    for r in reviews {
        print!("{}", diff::render(&r.title, &r.changes));
        all.extend(r.changes.iter().cloned());
    }
    println!("{}", diff::summary(&all));
}

/// Copies the working tree's spec files under `root` to `spec/baseline/`; returns what it
/// tells the user.
pub fn update_baseline(root: &Path) -> Result<String> {
    let reviews = against_baseline(root)?;
    let count: usize = reviews.iter().map(|r| r.changes.len()).sum();
    std::fs::create_dir_all(root.join(BASELINE)).map_err(|e| format!("{BASELINE}: {e}"))?;
    let mut copied = Vec::new();
    for rel in SPECS {
        let base = baseline_of(rel);
        let text = std::fs::read(root.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
        if std::fs::read(root.join(&base)).ok().as_deref() != Some(&text[..]) {
            std::fs::write(root.join(&base), &text)
                .map_err(|e| format!("{}: {e}", base.display()))?;
            copied.push(base.display().to_string());
        }
    }
    let mut msg = String::new();
    for r in &reviews {
        msg.push_str(&diff::render(&r.title, &r.changes));
    }
    if copied.is_empty() {
        msg.push_str(&format!(
            "{BASELINE}/ already holds the working tree's spec files; nothing changed.\n"
        ));
    } else {
        msg.push_str(&format!(
            "The released ABI is now the working tree's spec ({count} change(s) above accepted): wrote {}.\n\
             This is deliberate: commit {BASELINE}/ on its own, saying why the ABI changed, for review. \
             From now on `spec-diff --baseline --deny-breaking` (a step of `cargo xtask test`) \
             compares against it.\n",
            copied.join(", ")
        ));
    }
    Ok(msg)
}

/// The step of `cargo xtask test`: the working tree against the released ABI, failing on
/// anything breaking.
pub fn gate() -> Result {
    let reviews = against_baseline(&root())?;
    print_text(&reviews);
    deny_breaking(&reviews)
}

pub fn run(a: &SpecDiffArgs) -> Result {
    if a.update_baseline {
        print!("{}", update_baseline(&root())?);
        return Ok(());
    }
    let reviews: Vec<Review> = match (a.baseline, a.args.as_slice()) {
        (true, _) => against_baseline(&root())?,
        (false, []) => against_revision("HEAD")?,
        (false, [rev]) => against_revision(rev)?,
        (false, [old, new]) => vec![Review {
            title: format!("{old} -> {new}"),
            file: new.clone(),
            changes: between_files(Path::new(old), Path::new(new))?,
        }],
        _ => return Err("spec-diff takes nothing, a git revision, or two TOML files".into()),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&reviews))?);
    } else {
        print_text(&reviews);
    }
    if a.deny_breaking {
        deny_breaking(&reviews)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch workspace holding today's spec files and, as its baseline, the same files.
    fn scratch() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(BASELINE)).unwrap();
        for rel in SPECS {
            let text = std::fs::read(root().join(rel)).unwrap();
            std::fs::write(dir.path().join(rel), &text).unwrap();
            std::fs::write(dir.path().join(baseline_of(rel)), &text).unwrap();
        }
        dir
    }

    #[test]
    fn a_breaking_edit_fails_the_gate_and_names_the_change() {
        let dir = scratch();
        let rel = "spec/virtio_snd.toml";
        let text = std::fs::read_to_string(dir.path().join(rel)).unwrap();
        let field =
            r#"{ name = "stream_id", type = "le32", doc = "Stream the frames belong to." }"#;
        assert!(text.contains(field), "the fixture edit needs this line");
        let edited = text.replace(field, &field.replace("le32", "le16"));
        std::fs::write(dir.path().join(rel), edited).unwrap();
        let reviews = against_baseline(dir.path()).unwrap();
        let err = deny_breaking(&reviews).unwrap_err().to_string();
        assert!(err.starts_with("3 breaking ABI change(s):\n"), "{err}");
        assert!(
            err.contains("  spec/virtio_snd.toml: struct virtio_snd_pcm_xfer: field stream_id retyped: le32 -> le16 (4 -> 2 bytes)"),
            "{err}"
        );
        assert!(
            err.contains("  spec/virtio_snd.toml: struct virtio_snd_pcm_xfer: size 4 -> 2 bytes"),
            "{err}"
        );
        // The C header's struct holds a __le32, so it is 4-aligned; a __le16 makes it 2.
        assert!(
            err.ends_with("  spec/virtio_snd.toml: struct virtio_snd_pcm_xfer: alignment 4 -> 2"),
            "{err}"
        );
    }

    #[test]
    fn update_baseline_accepts_the_working_tree() {
        let dir = scratch();
        let msg = update_baseline(dir.path()).unwrap();
        assert!(msg.contains("nothing changed"), "{msg}");
        // A new spec file with no baseline, and an additive edit.
        let rel = "spec/hmulti_audio.toml";
        std::fs::remove_file(dir.path().join(baseline_of(rel))).unwrap();
        let reviews = against_baseline(dir.path()).unwrap();
        assert_eq!(reviews[1].changes.len(), 1);
        assert_eq!(
            reviews[1].changes[0].text,
            "new spec file (absent from spec/baseline/)"
        );
        assert!(deny_breaking(&reviews).is_ok());
        let msg = update_baseline(dir.path()).unwrap();
        assert!(
            msg.contains("This is deliberate: commit spec/baseline/ on its own"),
            "{msg}"
        );
        assert!(
            msg.contains("wrote spec/baseline/hmulti_audio.toml."),
            "{msg}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(baseline_of(rel))).unwrap(),
            std::fs::read(dir.path().join(rel)).unwrap()
        );
        assert!(against_baseline(dir.path())
            .unwrap()
            .iter()
            .all(|r| r.changes.is_empty()));
    }
}
