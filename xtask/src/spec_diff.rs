//! `cargo xtask spec-diff`: the ABI review of a spec change.
//!
//! - no argument: the working tree against HEAD
//! - `REV`: the working tree against a git revision
//! - `OLD.toml NEW.toml`: two files

use std::path::Path;
use std::process::Command;

use codegen::diff::{self, Change, Class};
use codegen::model;

use crate::gen::SPECS;
use crate::{root, Result};

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

/// The review of every spec file between `rev` and the working tree.
pub fn against_revision(rev: &str) -> Result<Vec<(String, Vec<Change>)>> {
    let mut all = Vec::new();
    for rel in SPECS {
        let new_text =
            std::fs::read_to_string(root().join(rel)).map_err(|e| format!("{rel}: {e}"))?;
        let new = model::parse(&new_text, Path::new(rel))?;
        let changes = match git_show(rev, rel)? {
            Some(old_text) => {
                let old = model::parse(&old_text, Path::new(&format!("{rev}:{rel}")))?;
                diff::diff(&old, &new)
            }
            None => vec![Change {
                section: rel.to_string(),
                class: Class::Additive,
                text: format!("new spec file (absent at {rev})"),
            }],
        };
        all.push((rel.to_string(), changes));
    }
    Ok(all)
}

/// The review between two spec files.
pub fn between_files(old: &Path, new: &Path) -> Result<Vec<Change>> {
    let o = model::load(old, old)?;
    let n = model::load(new, new)?;
    Ok(diff::diff(&o, &n))
}

pub fn run(args: &[String], deny_breaking: bool) -> Result {
    let reviews: Vec<(String, Vec<Change>)> = match args {
        [] => against_revision("HEAD")?,
        [rev] => against_revision(rev)?,
        [old, new] => vec![(
            format!("{old} -> {new}"),
            between_files(Path::new(old), Path::new(new))?,
        )],
        _ => return Err("spec-diff takes nothing, a git revision, or two TOML files".into()),
    };
    let mut all = Vec::new();
    for (title, changes) in &reviews {
        print!("{}", diff::render(title, changes));
        all.extend(changes.iter().cloned());
    }
    println!("{}", diff::summary(&all));
    if deny_breaking && all.iter().any(|c| c.class == Class::Breaking) {
        return Err("breaking ABI changes (see above)".into());
    }
    Ok(())
}
