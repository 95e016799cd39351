//! Conventions made into tests.

use std::path::Path;
use std::process::Command;

/// The repository's files (tracked, and untracked but not ignored) with their text, by path
/// relative to the root; files that are not UTF-8 text are left out.
fn repository_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("git")
        .current_dir(&root)
        .args(["ls-files", "-co", "--exclude-standard"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|f| Some((f.to_string(), std::fs::read_to_string(root.join(f)).ok()?)))
        .collect()
}

/// Nothing committed names a path of the machine it was written on or a package registry.
#[test]
fn no_machine_paths_or_registry_hosts() {
    let forbidden = [
        ["/wo", "rk/"].concat(),
        ["/ro", "ot/"].concat(),
        ["crates", ".io"].concat(),
        ["pypi", ".org"].concat(),
        ["deb.", "debian.org"].concat(),
        ["registry", ".npmjs"].concat(),
    ];
    let mut hits = Vec::new();
    for (f, text) in repository_files() {
        // Lock files name the registry of every package (the fuzz workspace has its own).
        if f == "Cargo.lock" || f.ends_with("/Cargo.lock") {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            for bad in &forbidden {
                if line.contains(bad.as_str()) {
                    hits.push(format!("{f}:{}: {bad}", i + 1));
                }
            }
            // An absolute home directory of this machine; relative paths that happen to
            // contain it (Haiku's /boot/home, an install tree's home/) are fine.
            let home = ["/ho", "me/"].concat();
            for (at, _) in line.match_indices(&home) {
                let before = line[..at].chars().next_back();
                if before.is_none_or(|c| !(c.is_alphanumeric() || "_-./".contains(c))) {
                    hits.push(format!("{f}:{}: {home}", i + 1));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "machine paths or registry hosts committed:\n{}",
        hits.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The architecture's invariants (ARCHITECTURE.md, "Invariants"), each checked from `cargo
// metadata` and the source. The document lists them by id; `invariants_are_the_documented_ones`
// keeps the list and these checks the same set.

/// The invariant ids this file checks, in the order ARCHITECTURE.md lists them.
const CHECKED: [&str; 13] = [
    "code-map",
    "front-door-alone",
    "driver-sees-only-platform",
    "no-std",
    "ffi-in-addon",
    "kernel-imports-in-spec",
    "independent-of-driver",
    "no-dev-cycles",
    "unsafe-where-allowed",
    "unsafe-documented",
    "generated-header",
    "stands-alone",
    "build-flags-once",
];

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The workspace's crates: name → (directory relative to the root, normal dependencies on
/// other members, dev dependencies on other members).
struct Member {
    dir: String,
    deps: Vec<String>,
    dev: Vec<String>,
}

fn members() -> std::collections::BTreeMap<String, Member> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ws = meta["workspace_root"].as_str().unwrap().to_string();
    let mut m = std::collections::BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let manifest = p["manifest_path"].as_str().unwrap();
        let dir = Path::new(manifest)
            .parent()
            .unwrap()
            .strip_prefix(&ws)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let mut deps = Vec::new();
        let mut dev = Vec::new();
        for d in p["dependencies"].as_array().unwrap() {
            if d["path"].is_null() {
                continue;
            }
            let name = d["name"].as_str().unwrap().to_string();
            match d["kind"].as_str() {
                Some("dev") => dev.push(name),
                _ => deps.push(name),
            }
        }
        m.insert(
            p["name"].as_str().unwrap().to_string(),
            Member { dir, deps, dev },
        );
    }
    m
}

/// Every member `name` reaches through normal (and build) dependencies, itself excluded.
fn reaches(m: &std::collections::BTreeMap<String, Member>, name: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut todo = m[name].deps.clone();
    while let Some(n) = todo.pop() {
        if !seen.contains(&n) {
            todo.extend(m[&n].deps.iter().cloned());
            seen.push(n);
        }
    }
    seen
}

/// The `.rs` files under `dir` (relative to the root), recursively.
fn rust_files(dir: &str) -> Vec<(String, String)> {
    fn walk(p: &Path, rel: &str, out: &mut Vec<(String, String)>) {
        let Ok(rd) = std::fs::read_dir(p) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = format!("{rel}/{name}");
            let path = e.path();
            if path.is_dir() {
                walk(&path, &rel, out);
            } else if name.ends_with(".rs") {
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), dir, &mut out);
    out.sort();
    out
}

/// Lines of `text` with `//` comments cut off (string contents are kept: good enough for
/// the tokens checked here, which never appear in this workspace's strings outside codegen).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
}

#[test]
fn invariants_are_the_documented_ones() {
    let doc = read("ARCHITECTURE.md");
    let section = doc
        .split("\n## Invariants\n")
        .nth(1)
        .expect("ARCHITECTURE.md has an `## Invariants` section");
    let section = section.split("\n## ").next().unwrap();
    let listed: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("- **`"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert_eq!(
        listed, CHECKED,
        "ARCHITECTURE.md's invariants and the ones this test checks differ"
    );
}

/// code-map: every crate of the workspace has an entry in ARCHITECTURE.md's code map, and
/// every directory the code map names is a crate.
#[test]
fn code_map_names_every_crate() {
    let doc = read("ARCHITECTURE.md");
    let map = doc
        .split("\n## Code map\n")
        .nth(1)
        .expect("a `## Code map` section")
        .split("\n## ")
        .next()
        .unwrap();
    let named: Vec<&str> = map
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split('`').next())
        .filter_map(|d| d.strip_suffix('/'))
        .collect();
    let m = members();
    let dirs: Vec<&str> = m.values().map(|c| c.dir.as_str()).collect();
    for d in &dirs {
        assert!(
            named.contains(d),
            "crate directory {d}/ is not in the code map"
        );
    }
    for d in &named {
        assert!(
            dirs.contains(d),
            "the code map names {d}/, which is not a crate"
        );
    }
}

/// front-door-alone: `cargo xtask` (the `xtask` package, library and binary) reaches no
/// workspace crate but `codegen` through its normal and build dependencies, so a spec edit
/// that breaks the ABI crate, the driver, the add-on or the simulator cannot keep
/// `gen --check`, `gen`, `layout`, `spec-diff`, `crosscheck` or `setup` from building.
/// `xtask/tests/front_door_alone.rs` proves it by building in a copy where nothing else
/// compiles.
#[test]
fn the_front_door_reaches_only_codegen() {
    let m = members();
    let r = reaches(&m, "xtask");
    for c in [
        "spec",
        "driver",
        "virtio-sound-addon",
        "platform",
        "macros",
        "sim-kernel",
        "snd-model",
        "haiku-sim",
        "haiku-elf",
        "virtio-pci-uio",
        "hmulti-client",
        "sim-guest",
        "xtask-addon",
    ] {
        assert!(
            m.contains_key(c),
            "{c} is no longer a crate: update this list"
        );
        assert!(!r.contains(&c.to_string()), "xtask depends on {c}: {r:?}");
    }
    assert_eq!(r, ["codegen"], "the front door reaches more than codegen");
    // The add-on's commands are run through cargo by package name, never linked.
    assert!(m.contains_key(xtask::forward::PACKAGE));
}

/// driver-sees-only-platform: the driver depends on the seams, the ABI and its macros only.
#[test]
fn driver_sees_only_platform() {
    let m = members();
    let mut deps = m["driver"].deps.clone();
    deps.sort();
    assert_eq!(deps, ["macros", "platform", "spec"]);
    assert_eq!(m["platform"].deps, ["spec"]);
    for (f, text) in rust_files("driver/src") {
        for (n, l) in code_lines(&text) {
            for bad in [
                "std::",
                "extern \"C\"",
                "no_mangle",
                "spec::haiku_driver::B_",
            ] {
                // Status codes are platform's `Status`; the driver names no Haiku symbol.
                if bad == "spec::haiku_driver::B_" && !l.contains("extern") {
                    continue;
                }
                assert!(!l.contains(bad), "{f}:{n}: `{bad}` in the driver");
            }
        }
    }
}

/// no-std: the code that runs in the kernel is `no_std` outside its unit tests.
#[test]
fn kernel_crates_are_no_std() {
    for lib in [
        "platform/src/lib.rs",
        "driver/src/lib.rs",
        "addon/src/lib.rs",
    ] {
        assert!(
            read(lib).contains("#![cfg_attr(not(test), no_std)]"),
            "{lib} is not no_std"
        );
    }
    assert!(read("spec/src/lib.rs").contains("#![no_std]"));
}

/// ffi-in-addon: foreign imports (`extern "C" {`) and `#[link]` only in the add-on (and in
/// haiku-sim, of its own C shim's `sim_haiku_*` functions only); C-ABI exports
/// (`#[no_mangle]`) only in the add-on and in haiku-sim, which *is* the kernel the add-on
/// imports from.
#[test]
fn ffi_only_in_the_addon() {
    let m = members();
    for c in m.values() {
        for (f, text) in rust_files(&format!("{}/src", c.dir)) {
            let lines: Vec<(usize, &str)> = code_lines(&text).collect();
            for (i, &(n, l)) in lines.iter().enumerate() {
                let t = l.trim_start();
                let import = t.starts_with("extern \"C\" {")
                    || t.starts_with("unsafe extern \"C\" {")
                    || t.starts_with("#[link(");
                let export = t.starts_with("#[no_mangle]") || t.starts_with("#[unsafe(no_mangle)]");
                if import && c.dir == "haiku-sim" && l.trim() == "extern \"C\" {" {
                    for &(k, decl) in lines[i + 1..].iter().take_while(|(_, d)| d.trim() != "}") {
                        let d = decl.trim();
                        assert!(
                            d.is_empty() || d.starts_with("fn sim_haiku_"),
                            "{f}:{k}: haiku-sim imports `{d}`, which is not its shim's"
                        );
                    }
                } else if import {
                    assert_eq!(c.dir, "addon", "{f}:{n}: a foreign import outside addon/");
                }
                if export {
                    assert!(
                        c.dir == "addon" || c.dir == "haiku-sim",
                        "{f}:{n}: a C export outside addon/ and haiku-sim/"
                    );
                }
            }
        }
    }
}

/// kernel-imports-in-spec: the kernel symbols the add-on may import, with their signatures,
/// are written only in `spec/haiku_driver.toml`. The add-on's only foreign-import block is
/// the one `cargo xtask gen` writes into `addon/src/generated/`, and nothing but the
/// generator and the front door reads a spec TOML: no other crate reaches `codegen`, and
/// none builds a TOML file into itself.
#[test]
fn kernel_imports_only_in_the_spec() {
    for (f, text) in rust_files("addon/src") {
        for (n, l) in code_lines(&text) {
            let t = l.trim_start();
            if t.starts_with("extern \"C\" {") || t.starts_with("unsafe extern \"C\" {") {
                assert!(
                    f.starts_with("addon/src/generated/"),
                    "{f}:{n}: a hand-written extern block; the kernel imports are generated \
                     from spec/haiku_driver.toml"
                );
            }
        }
    }
    let m = members();
    for (name, c) in &m {
        if c.dir == "codegen" || c.dir.starts_with("xtask") {
            continue;
        }
        assert!(
            !reaches(&m, name).contains(&"codegen".to_string()),
            "{name} depends on codegen: it would read the spec TOML at run time instead of \
             the generated tables"
        );
        for (f, text) in rust_files(&format!("{}/src", c.dir)) {
            for (n, l) in code_lines(&text) {
                assert!(
                    !(l.contains("include_str!(") || l.contains("include_bytes!("))
                        || !l.contains(".toml"),
                    "{f}:{n}: builds a TOML file in; take the generated tables from `spec`"
                );
            }
        }
    }
}

/// independent-of-driver: the client, the device model, the simulated kernel and
/// everything built on them reach neither the driver nor the add-on, so what they expect
/// cannot come from the code under test.
#[test]
fn simulator_and_client_are_independent_of_the_driver() {
    let m = members();
    for c in [
        "platform",
        "sim-kernel",
        "snd-model",
        "haiku-sim",
        "virtio-pci-uio",
        "hmulti-client",
        "sim-guest",
        "hpkg-writer",
    ] {
        let r = reaches(&m, c);
        for d in ["driver", "virtio-sound-addon"] {
            assert!(!r.contains(&d.to_string()), "{c} depends on {d}: {r:?}");
        }
        for d in &m[c].dev {
            assert!(
                d != "driver" && d != "virtio-sound-addon",
                "{c}'s tests depend on {d}"
            );
        }
    }
}

/// no-dev-cycles: no crate's tests pull in a crate that depends on it (the old `sim` ⇄
/// `driver` loop).
#[test]
fn no_dependency_loops_through_tests() {
    let m = members();
    for (name, c) in &m {
        for d in &c.dev {
            assert!(
                !reaches(&m, d).contains(name),
                "{name} dev-depends on {d}, which depends on {name}"
            );
        }
    }
}

/// unsafe-where-allowed: the ABI, the client, the generator, the macros and the front door
/// forbid `unsafe`; in the driver an `unsafe` block only calls one of platform's `unsafe fn`
/// contracts (queue a chain, free DMA memory, delete an area).
#[test]
fn unsafe_only_where_allowed() {
    for lib in [
        "spec/src/lib.rs",
        "hmulti-client/src/lib.rs",
        "codegen/src/lib.rs",
        "macros/src/lib.rs",
        "haiku-elf/src/lib.rs",
        "xtask/src/lib.rs",
        "xtask/src/main.rs",
        "xtask-addon/src/main.rs",
        "hpkg-writer/src/lib.rs",
    ] {
        assert!(
            read(lib).contains("#![forbid(unsafe_code)]"),
            "{lib} does not forbid unsafe code"
        );
    }
    let allowed = [".queue_request(", ".free(", ".delete_area("];
    for (f, text) in rust_files("driver/src") {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("unsafe {") {
            let block = &rest[at + "unsafe ".len()..];
            let mut depth = 0;
            let mut end = block.len();
            for (i, ch) in block.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let body = &block[..end];
            assert!(
                allowed.iter().any(|a| body.contains(a)),
                "{f}: an unsafe block that calls none of platform's contracts: {body}"
            );
            assert!(
                !body.contains("unsafe") && !body.contains(" as *"),
                "{f}: an unsafe block with more than a contract call: {body}"
            );
            rest = &block[end..];
        }
        for (n, l) in code_lines(&text) {
            assert!(
                !l.contains("unsafe fn") && !l.contains("unsafe impl"),
                "{f}:{n}: the driver defines unsafe APIs; they belong in platform"
            );
        }
    }
}

/// unsafe-documented: every crate takes the workspace lints, which deny an `unsafe` block
/// without a `// SAFETY:` comment and an unsafe operation in an `unsafe fn` without a block.
#[test]
fn every_crate_takes_the_unsafe_lints() {
    let ws = read("Cargo.toml");
    assert!(ws.contains("undocumented_unsafe_blocks = \"deny\""));
    assert!(ws.contains("unsafe_op_in_unsafe_fn = \"deny\""));
    for c in members().values() {
        let manifest = read(&format!("{}/Cargo.toml", c.dir));
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{}/Cargo.toml does not take the workspace lints",
            c.dir
        );
    }
}

/// generated-header: everything under the generated directories says it is generated by
/// `cargo xtask gen` and from which TOML. The generated reference documents have a
/// directory of their own (`docs/generated/`), so a new one is checked without being listed
/// here and the hand-written guides beside it in `docs/` are never taken for generated.
#[test]
fn generated_files_carry_their_header() {
    let mut n = 0;
    for dir in [
        "spec/src/generated",
        "spec/generated",
        "docs/generated",
        "addon/src/generated",
    ] {
        for e in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "mod.rs" {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap();
            let head: String = text.lines().take(6).collect::<Vec<_>>().join("\n");
            assert!(
                head.contains("Generated by `cargo xtask gen`"),
                "{dir}/{name} has no generated-file header"
            );
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} generated files found");
}

/// stands-alone: nothing cites documents outside the repository; facts name their upstream
/// source instead.
#[test]
fn nothing_cites_documents_outside_the_repository() {
    let forbidden = [
        ["reference", " notes"].concat(),
        ["DESIGN", ".md"].concat(),
        ["STYLE", ".md"].concat(),
        ["../sha", "red"].concat(),
        ["shared/", "reference"].concat(),
    ];
    let mut hits = Vec::new();
    for (f, text) in repository_files() {
        for (i, line) in text.lines().enumerate() {
            for bad in &forbidden {
                if line.contains(bad.as_str()) {
                    hits.push(format!("{f}:{}: {bad}", i + 1));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "citations outside the repository:\n{}",
        hits.join("\n")
    );
}

/// build-flags-once: the add-on's link flags are written in `haiku_elf::build` only; the
/// build, the audit's tests and the loader's tests take them from there (a test that links
/// a deliberately different file writes its own, without these, or names the one flag it
/// swaps, as the loader's tests do with `-z noseparate-code`).
#[test]
fn the_addons_build_flags_are_defined_once() {
    let flags = [
        "\"-Wl,-z,max-page-size=0x1000\"",
        "\"-Wl,-z,norelro\"",
        "\"relocation-model=pic\"",
        "\"no-redzone=yes\"",
        "\"-Wl,-soname,kernel_x86_64\"",
        "\"-Wl,-soname,virtio_sound\"",
    ];
    let mut hits = Vec::new();
    for (f, text) in repository_files() {
        if !f.ends_with(".rs") || f == "haiku-elf/src/build.rs" {
            continue;
        }
        for (n, l) in code_lines(&text) {
            for flag in &flags {
                if l.contains(flag) {
                    hits.push(format!("{f}:{n}: {flag}"));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "the add-on's build flags written outside haiku_elf::build:\n{}",
        hits.join("\n")
    );
}
