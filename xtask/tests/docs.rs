//! The hand-written documents cannot rot: every relative link leads to a file that exists
//! (and to an anchor that file has), every function or test a link names is defined in the
//! file it links to, and every step of the hmulti guide links to the client code that
//! performs it and to a test that proves the driver answers it.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `[text](target)` links of a Markdown text, with their line numbers (inline links only:
/// the documents use no reference-style links).
fn links(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(open) = rest.find('[') {
            let after = &rest[open + 1..];
            let Some(close) = after.find("](") else {
                break;
            };
            let label = &after[..close];
            let tail = &after[close + 2..];
            let Some(end) = tail.find(')') else {
                break;
            };
            // A label holds no `[` of its own: restart inside it if it does.
            if let Some(inner) = label.rfind('[') {
                rest = &after[inner..];
                continue;
            }
            out.push((i + 1, label.to_string(), tail[..end].to_string()));
            rest = &tail[end + 1..];
        }
    }
    out
}

/// Whether `name` is defined as a function in `source`; a `tests/` file must mark it
/// `#[test]` (the attribute may be separated from the `fn` by doc comments and attributes).
fn defines(source: &str, name: &str, must_be_test: bool) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    lines.iter().enumerate().any(|(i, l)| {
        let t = l.trim_start();
        let t = t.strip_prefix("pub ").unwrap_or(t);
        let Some(after) = t.strip_prefix("fn ").map(|r| r.strip_prefix(name)) else {
            return false;
        };
        if !after.is_some_and(|a| a.starts_with('(') || a.starts_with('<')) {
            return false;
        }
        !must_be_test
            || lines[..i]
                .iter()
                .rev()
                .take_while(|p| {
                    let p = p.trim_start();
                    p.starts_with("#[") || p.starts_with("///")
                })
                .any(|p| p.trim() == "#[test]")
    })
}

/// Whether `source` has an `impl` block for the type `ty` (`impl Ty`, `impl<..> Ty<..>`,
/// `impl Trait for Ty`).
fn implements(source: &str, ty: &str) -> bool {
    source.lines().any(|l| {
        let t = l.trim_start();
        t.starts_with("impl")
            && t.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == ty)
    })
}

/// Everything wrong with the links of `text`, a document in directory `dir` of the
/// repository at `root`.
fn problems(root: &Path, dir: &Path, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (line, label, target) in links(text) {
        if target.starts_with("http://") || target.starts_with("https://") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            None
        } else {
            Some(root.join(dir).join(path))
        };
        let here = format!("line {line}: [{label}]({target})");
        let text_of = |f: &Option<PathBuf>| match f {
            Some(f) => std::fs::read_to_string(f).ok(),
            None => Some(text.to_string()),
        };
        let Some(contents) = text_of(&file) else {
            out.push(format!("{here}: no such file"));
            continue;
        };
        if let Some(a) = anchor {
            if !contents.contains(&format!("<a id=\"{a}\"></a>")) {
                out.push(format!("{here}: no anchor `{a}` there"));
            }
        }
        // A code label naming a Rust item: `name` or `Type::name`.
        let is_rust = path.ends_with(".rs");
        if let (true, Some(item)) = (
            is_rust,
            label.strip_prefix('`').and_then(|l| l.strip_suffix('`')),
        ) {
            let (ty, name) = match item.rsplit_once("::") {
                Some((t, n)) => (Some(t), n),
                None => (None, item),
            };
            let in_tests = Path::new(path)
                .components()
                .any(|c| c.as_os_str() == "tests");
            if !defines(&contents, name, in_tests) {
                let what = if in_tests { "test" } else { "function" };
                out.push(format!("{here}: no {what} `{name}` in {path}"));
            }
            if let Some(t) = ty {
                if !implements(&contents, t) {
                    out.push(format!("{here}: no `impl {t}` in {path}"));
                }
            }
        }
    }
    out
}

/// The hand-written documents: `docs/*.md` outside `docs/generated/`.
fn guides() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_link_and_named_function_of_the_guides_exists() {
    let guides = guides();
    assert!(
        guides.iter().any(|g| g.ends_with("hmulti-guide.md")),
        "{guides:?}"
    );
    let mut all = Vec::new();
    for g in &guides {
        let text = std::fs::read_to_string(g).unwrap();
        let name = g.file_name().unwrap_or_default().to_string_lossy();
        assert!(!links(&text).is_empty(), "docs/{name} has no links");
        for p in problems(&root(), Path::new("docs"), &text) {
            all.push(format!("docs/{name}: {p}"));
        }
    }
    assert!(all.is_empty(), "broken links:\n{}", all.join("\n"));
}

/// Each numbered step of the guide shows the client code that performs it and a test that
/// proves the driver answers it.
#[test]
fn every_step_of_the_hmulti_guide_links_client_code_and_a_test() {
    let text = std::fs::read_to_string(root().join("docs/hmulti-guide.md")).unwrap();
    let mut steps = 0;
    for section in text.split("\n## ").skip(1) {
        let title = section.lines().next().unwrap_or_default();
        if !title.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        steps += 1;
        let targets: Vec<String> = links(section).into_iter().map(|(_, _, t)| t).collect();
        assert!(
            targets
                .iter()
                .any(|t| t.starts_with("../hmulti-client/") || t.starts_with("../haiku-sim/")),
            "step `{title}` links no client code"
        );
        assert!(
            targets.iter().any(|t| t.contains("/tests/")),
            "step `{title}` links no test"
        );
    }
    assert_eq!(steps, 10, "the guide's steps, open to close");
}

/// The checker itself finds each kind of rot.
#[test]
fn the_link_checker_finds_rot() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::create_dir_all(r.join("docs")).unwrap();
    std::fs::create_dir_all(r.join("c/src")).unwrap();
    std::fs::create_dir_all(r.join("c/tests")).unwrap();
    std::fs::write(
        r.join("c/src/lib.rs"),
        "pub struct S;\nimpl<D: X> S {\n    pub fn go<D>(&self) {}\n}\nfn helper() {}\n",
    )
    .unwrap();
    std::fs::write(
        r.join("c/tests/t.rs"),
        "/// Doc.\n#[test]\nfn proves() {}\n\nfn not_a_test() {}\n",
    )
    .unwrap();
    std::fs::write(r.join("docs/ref.md"), "### <a id=\"x\"></a>X\n").unwrap();
    let good = "[`S::go`](../c/src/lib.rs) [`helper`](../c/src/lib.rs) \
                [`proves`](../c/tests/t.rs) [ref](ref.md#x) [web](https://example.org)";
    assert_eq!(problems(r, Path::new("docs"), good), Vec::<String>::new());
    for (bad, why) in [
        ("[`gone`](../c/src/lib.rs)", "no function `gone`"),
        ("[`T::go`](../c/src/lib.rs)", "no `impl T`"),
        ("[`not_a_test`](../c/tests/t.rs)", "no test `not_a_test`"),
        ("[`proves`](../c/tests/other.rs)", "no such file"),
        ("[ref](ref.md#y)", "no anchor `y`"),
        ("[here](#nowhere)", "no anchor `nowhere`"),
    ] {
        let p = problems(r, Path::new("docs"), bad);
        assert!(
            p.len() == 1 && p[0].contains(why),
            "{bad}: expected `{why}`, got {p:?}"
        );
    }
}
