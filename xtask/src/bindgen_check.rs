//! `cargo xtask crosscheck`: the spec against real C. The emitted headers compiled by the
//! system C compiler (static assertions), and bindgen's view of the real headers compared
//! with ours. bindgen loads libclang at run time, only here: `cargo xtask gen --check` never
//! comes here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use codegen::model::Val;
use codegen::Spec;

use crate::{gen, Result};

/// `cargo xtask crosscheck [--haiku PATH]`: the C compiler on every emitted header, then
/// bindgen on each spec's system header (`[abi] header`) and, with `haiku`, on a Haiku
/// source tree's headers; every disagreement is listed.
pub fn run(haiku: Option<&Path>) -> Result {
    let specs = gen::load_all()?;
    compile_headers(&gen::outputs(&specs)?)?;
    let mut mismatches = Vec::new();
    for s in &specs {
        if s.header.as_deref().is_some_and(|h| h.starts_with("linux/")) {
            mismatches.extend(check_system_header(s)?);
        }
    }
    if let Some(tree) = haiku {
        mismatches.extend(check_haiku(&specs, tree)?);
    }
    if !mismatches.is_empty() {
        return Err(format!(
            "the spec disagrees with the C headers:\n  {}",
            mismatches.join("\n  ")
        )
        .into());
    }
    Ok(())
}

/// Compiles every emitted `.h` and `.c` with `-fsyntax-only -Werror`: each `_Static_assert`
/// is a layout fact the compiler must agree with. The kernel stub defines `malloc` and friends
/// with dummy types, so it is compiled without the compiler's builtin declarations.
pub fn compile_headers(files: &BTreeMap<PathBuf, String>) -> Result {
    let dir = tempfile::tempdir()?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    for (rel, text) in files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "h" || e == "c"))
    {
        let name = rel.file_name().ok_or("header without a name")?;
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        let out = Command::new(&cc)
            .args([
                "-std=c11",
                "-fsyntax-only",
                "-fno-builtin",
                "-Wall",
                "-Werror",
                "-x",
                "c",
            ])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run the C compiler `{cc}`: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the C compiler rejects the header generated for {}:\n{}",
                rel.display(),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
    }
    Ok(())
}

/// What bindgen says about a header: struct sizes, alignments, field offsets and constants.
#[derive(Debug, Default)]
pub struct HeaderFacts {
    pub sizes: HashMap<String, u64>,
    pub aligns: HashMap<String, u64>,
    /// struct -> field -> offset, fields in header order.
    pub offsets: HashMap<String, Vec<(String, u64)>>,
    pub constants: HashMap<String, i128>,
}

/// Reads the numbers out of bindgen's layout assertions and constant items.
pub fn facts_from_bindings(code: &str) -> Result<HeaderFacts> {
    let mut facts = HeaderFacts::default();
    // Layout tests look like: ["Size of NAME"][::std::mem::size_of::<NAME>() - 24usize];
    // rustfmt may wrap an assertion over two lines, so scan the whole text.
    for (start, _) in code.match_indices("[\"") {
        let rest = &code[start + 2..];
        let Some((label, tail)) = rest.split_once("\"]") else {
            continue;
        };
        let Some(stmt) = tail.split("];").next() else {
            continue;
        };
        let Some(num) = stmt
            .rsplit_once(" - ")
            .and_then(|(_, n)| n.split("usize").next())
        else {
            continue;
        };
        let Ok(n) = num.trim().parse::<u64>() else {
            continue;
        };
        if let Some(name) = label.strip_prefix("Size of ") {
            facts.sizes.insert(name.to_string(), n);
        } else if let Some(name) = label.strip_prefix("Alignment of ") {
            facts.aligns.insert(name.to_string(), n);
        } else if let Some(path) = label.strip_prefix("Offset of field: ") {
            if let Some((s, f)) = path.split_once("::") {
                facts
                    .offsets
                    .entry(s.to_string())
                    .or_default()
                    .push((c_field_name(f), n));
            }
        }
    }
    let file = syn::parse_file(code)?;
    for item in file.items {
        if let syn::Item::Const(c) = item {
            if let Some(v) = int_expr(&c.expr) {
                facts.constants.insert(c.ident.to_string(), v);
            }
        }
    }
    Ok(facts)
}

fn is_anonymous(spec: &Spec, ty: &codegen::types::Ty) -> bool {
    matches!(ty, codegen::types::Ty::Named(n) if spec.type_named(n).is_some_and(|t| t.anonymous))
}

/// bindgen appends `_` to C names that are Rust keywords (`type` becomes `type_`).
fn c_field_name(f: &str) -> String {
    match f.strip_suffix('_') {
        Some(stem) if syn::parse_str::<syn::Ident>(stem).is_err() => stem.to_string(),
        _ => f.to_string(),
    }
}

fn int_expr(e: &syn::Expr) -> Option<i128> {
    match e {
        syn::Expr::Lit(l) => match &l.lit {
            syn::Lit::Int(i) => i.base10_parse::<i128>().ok(),
            _ => None,
        },
        syn::Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => int_expr(&u.expr).map(|v| -v),
        syn::Expr::Cast(c) => int_expr(&c.expr),
        syn::Expr::Paren(p) => int_expr(&p.expr),
        _ => None,
    }
}

/// Whether libclang loads, found as bindgen finds it (clang-sys's search: `LIBCLANG_PATH`,
/// `llvm-config`, the usual directories); then lets it go, as bindgen loads its own copy.
/// Without this, bindgen panics when it finds none.
pub fn libclang() -> std::result::Result<String, String> {
    clang_sys::load()?;
    let path = clang_sys::get_library().map(|l| l.path().display().to_string());
    clang_sys::unload()?;
    Ok(path.unwrap_or_else(|| "loaded".into()))
}

fn bindgen_facts(contents: &str, clang_args: &[String], allow: &str) -> Result<HeaderFacts> {
    libclang().map_err(|e| {
        format!(
            "bindgen reads the real headers with libclang, which does not load: {e}\n\
             (Debian: libclang-dev; `cargo xtask setup` installs it)"
        )
    })?;
    let bindings = bindgen::Builder::default()
        .header_contents("xtask_check.h", contents)
        .clang_args(clang_args)
        .allowlist_file(allow)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .generate()
        .map_err(|e| format!("bindgen could not read the header: {e}"))?;
    facts_from_bindings(&bindings.to_string())
}

/// How much of a spec a header must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// The header is at the spec's `[abi] version`: every structure, field and constant of
    /// the spec must be in it, except what is newer than that version (`since`) and the
    /// constants marked `in_header = false`. Linux's UAPI header.
    Complete,
    /// The header may be older: structures and fields of a newer version or behind a
    /// feature may be missing, and the spec's constants are not looked for. A Haiku tree,
    /// whose headers differ between Haiku versions.
    Partial,
}

impl Coverage {
    /// Whether a header may lack an item with this `since` and `feature`.
    fn may_lack(self, spec: &Spec, since: Option<&String>, feature: Option<&String>) -> bool {
        match self {
            Coverage::Complete => since.is_some_and(|s| newer(s, &spec.version)),
            Coverage::Partial => since.is_some() || feature.is_some(),
        }
    }
}

/// Whether version `a` is newer than `b` (dotted numbers: "1.4" is newer than "1.3").
fn newer(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parts(a) > parts(b)
}

/// Every difference between `spec` and what a header says, `coverage` saying what the
/// header may lack.
pub fn compare(spec: &Spec, facts: &HeaderFacts, header: &str, coverage: Coverage) -> Vec<String> {
    let mut out = Vec::new();
    let file = spec.path.display();
    for t in &spec.types {
        let Some(&hsize) = facts.sizes.get(&t.name) else {
            let may_lack = match coverage {
                Coverage::Complete => !t.in_header,
                Coverage::Partial => false,
            } || coverage.may_lack(spec, t.since.as_ref(), t.feature.as_ref());
            if !t.anonymous && !may_lack && t.kind != codegen::schema::StructKind::Opaque {
                out.push(format!("{file}: {} is not in {header}", t.name));
            }
            continue;
        };
        let hfields = facts.offsets.get(&t.name).cloned().unwrap_or_default();
        let mut expected_size = t.size;
        let mut first_missing: Option<u64> = None;
        for f in &t.fields {
            match hfields.iter().find(|(n, _)| *n == f.name) {
                Some((_, off)) => {
                    if first_missing.is_some() {
                        out.push(format!(
                            "{file}: {}.{} follows a field {header} lacks",
                            t.name, f.name
                        ));
                    }
                    if *off != f.offset {
                        out.push(format!(
                            "{file}: {}.{} is at offset {} in the spec but {} in {header}",
                            t.name, f.name, f.offset, off
                        ));
                    }
                }
                None if f.padding => {}
                // C++ leaves a nested union unnamed; bindgen calls it __bindgen_anon_N.
                None if is_anonymous(spec, &f.ty)
                    && hfields
                        .iter()
                        .any(|(n, off)| n.starts_with("__bindgen_anon") && *off == f.offset) => {}
                None if coverage.may_lack(spec, f.since.as_ref(), f.feature.as_ref())
                    && !t.is_union =>
                {
                    first_missing.get_or_insert(f.offset);
                }
                None => out.push(format!("{file}: {}.{} is not in {header}", t.name, f.name)),
            }
        }
        for (hname, _) in &hfields {
            if !t.fields.iter().any(|f| &f.name == hname) && !hname.starts_with("__bindgen") {
                out.push(format!(
                    "{file}: {header} has {}.{}, the spec does not",
                    t.name, hname
                ));
            }
        }
        if let Some(off) = first_missing {
            expected_size = off.div_ceil(t.align.max(1)) * t.align.max(1);
        }
        if hsize != expected_size {
            out.push(format!(
                "{file}: {} is {} bytes in the spec but {} in {header}",
                t.name, expected_size, hsize
            ));
        }
        if first_missing.is_none() {
            if let Some(&ha) = facts.aligns.get(&t.name) {
                if ha != t.align {
                    out.push(format!(
                        "{file}: {} has alignment {} in the spec but {} in {header}",
                        t.name, t.align, ha
                    ));
                }
            }
        }
    }
    let ours: HashMap<&str, i128> = spec
        .constants()
        .filter_map(|(_, v)| match v.value {
            Val::Int(i) => Some((v.name.as_str(), i)),
            Val::Str(_) => None,
        })
        .collect();
    if coverage == Coverage::Complete {
        for (g, v) in spec.constants() {
            let since = v.since.as_ref().or(g.since.as_ref());
            if matches!(v.value, Val::Int(_))
                && v.in_header
                && !coverage.may_lack(spec, since, None)
                && !facts.constants.contains_key(&v.name)
            {
                out.push(format!("{file}: {} is not in {header}", v.name));
            }
        }
    }
    let mut names: Vec<&String> = facts.constants.keys().collect();
    names.sort();
    for name in names {
        let hv = facts.constants[name];
        match ours.get(name.as_str()) {
            Some(&v)
                if v == hv
                    || (v < 0 && hv == v + (1i128 << 32))
                    || (v < 0 && hv == v + (1i128 << 64)) => {}
            Some(&v) => out.push(format!(
                "{file}: {name} is {v:#x} in the spec but {hv:#x} in {header}"
            )),
            None => out.push(format!(
                "{file}: {header} defines {name} = {hv:#x}, the spec does not"
            )),
        }
    }
    out
}

/// Where a spec's `[abi] header` is looked for.
pub const SYSTEM_INCLUDE: &str = "/usr/include";

/// How to get a header new enough on Debian bookworm, whose own (Linux 6.1) lacks virtio
/// 1.3's control elements: Linux added them to `include/uapi/linux/virtio_snd.h` in 6.9, and
/// bookworm-backports has linux-libc-dev 6.12.
pub const NEWER_HEADER: &str = "`cargo xtask setup` installs a newer one (on Debian bookworm: \
    `apt-get install -t bookworm-backports linux-libc-dev`, Linux 6.12)";

/// The spec's structures (those not newer than its `[abi] version`, not `in_header = false`,
/// not anonymous or opaque) that a header's text does not define: a header older than the
/// spec lacks some. A scan of the text for `struct NAME {` (or `union`), without libclang,
/// so that `cargo xtask setup --check` can tell an old header in no time.
pub fn structs_missing_from(spec: &Spec, header_text: &str) -> Vec<String> {
    let code = without_comments(header_text);
    let words: Vec<&str> = code.split_whitespace().collect();
    let defined = |keyword: &str, name: &str| {
        words.windows(3).any(|w| {
            w[0] == keyword
                && (w[1] == format!("{name}{{") || (w[1] == name && w[2].starts_with('{')))
        })
    };
    spec.types
        .iter()
        .filter(|t| {
            t.in_header
                && !t.anonymous
                && t.kind != codegen::schema::StructKind::Opaque
                && !t.since.as_deref().is_some_and(|v| newer(v, &spec.version))
        })
        .filter(|t| !defined(if t.is_union { "union" } else { "struct" }, &t.name))
        .map(|t| t.name.clone())
        .collect()
}

/// C text with its `/* */` and `//` comments replaced by spaces.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        let (at, end) = match (block, line) {
            (Some(b), l) if l.is_none_or(|l| b < l) => (
                b,
                rest[b + 2..]
                    .find("*/")
                    .map_or(rest.len(), |e| b + 2 + e + 2),
            ),
            (_, Some(l)) => (l, rest[l..].find('\n').map_or(rest.len(), |e| l + e)),
            _ => break,
        };
        out.push_str(&rest[..at]);
        out.push(' ');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Whether the header at `path` is one `spec` can be checked against completely: it exists
/// and defines every structure of the spec's version. `Ok(path)` or `Err(what is wrong)`.
pub fn header_is_current(spec: &Spec, path: &Path) -> std::result::Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("no {} ({e})", path.display()))?;
    let missing = structs_missing_from(spec, &text);
    if missing.is_empty() {
        Ok(path.display().to_string())
    } else {
        Err(format!(
            "{} is older than virtio {} (the spec's version): it lacks {}",
            path.display(),
            spec.version,
            missing.join(", ")
        ))
    }
}

/// The spec against its header under the system include path (Debian's linux-libc-dev),
/// which must be at the spec's version: every structure and constant is compared.
pub fn check_system_header(spec: &Spec) -> Result<Vec<String>> {
    let Some(h) = &spec.header else {
        return Ok(Vec::new());
    };
    let path = Path::new(SYSTEM_INCLUDE).join(h);
    header_is_current(spec, &path).map_err(|e| format!("{e}; {NEWER_HEADER}"))?;
    check_header_file(spec, &path)
}

/// The spec against one header file given by path: every structure, field and constant
/// of the spec's version must be in it ([`Coverage::Complete`]).
pub fn check_header_file(spec: &Spec, path: &Path) -> Result<Vec<String>> {
    let contents = format!("#include \"{}\"\n", path.display());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let facts = bindgen_facts(&contents, &[], &format!(".*{}", regex_escape(&name)))?;
    Ok(compare(spec, &facts, &name, Coverage::Complete))
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// The hmulti and driver ABI specs against a Haiku source tree's headers, compiled for the
/// Haiku x86_64 target.
pub fn check_haiku(specs: &[Spec], tree: &Path) -> Result<Vec<String>> {
    let h = tree.join("headers");
    if !h.join("private/audio/hmulti_audio.h").exists() {
        return Err(format!(
            "{} does not look like a Haiku source tree (no headers/private/audio/hmulti_audio.h)",
            tree.display()
        )
        .into());
    }
    let mut args: Vec<String> = vec![
        "--target=x86_64-unknown-haiku".into(),
        "-D_KERNEL_MODE".into(),
        // Haiku's own headers replace the host's; the compiler's builtin headers (stddef.h,
        // stdarg.h) still come from clang.
        "-nostdlibinc".into(),
        "-ffreestanding".into(),
    ];
    if let Some(builtin) = clang_builtin_include() {
        args.push(format!("-idirafter{}", builtin.display()));
    }
    args.push(format!("-I{}", h.display()));
    for d in [
        "config",
        "os",
        "os/drivers",
        "os/kernel",
        "os/support",
        "os/storage",
        "os/app",
        "os/media",
        "posix",
        "private/audio",
        "private/virtio",
        "private/kernel",
        "private/system",
        "private/system/arch/x86_64",
        "private/kernel/arch/x86_64",
        "private/shared",
        "build/private/kernel",
    ] {
        args.push(format!("-I{}", h.join(d).display()));
    }
    for d in ["/usr/include", "/usr/include/x86_64-linux-gnu"] {
        args.push(format!("-idirafter{d}"));
    }
    let mut out = Vec::new();
    for spec in specs {
        let (includes, allow) = match spec.name.as_str() {
            "hmulti_audio" => ("#include <hmulti_audio.h>\n", ".*hmulti_audio\\.h"),
            "haiku_driver" => (
                "#include <OS.h>\n#include <KernelExport.h>\n#include <module.h>\n#include <device_manager.h>\n#include <virtio.h>\n#include <drivers/driver_settings.h>\n",
                ".*(module|device_manager|virtio|KernelExport|OS|Errors|driver_settings|TypeConstants)\\.h",
            ),
            _ => continue,
        };
        // hmulti_audio.h names its unions `u` only when compiled as C; the driver ABI headers
        // are read as the C++ the kernel is written in.
        let mut spec_args = args.clone();
        if spec.name == "hmulti_audio" {
            spec_args.extend(["-x".into(), "c".into(), "-std=gnu11".into()]);
        } else {
            spec_args.extend(["-x".into(), "c++".into(), "-std=c++14".into()]);
        }
        let facts = bindgen_facts(includes, &spec_args, allow)?;
        // Only what the spec describes is compared: the Haiku headers hold much more.
        let mut filtered = HeaderFacts::default();
        let names: std::collections::HashSet<&str> =
            spec.constants().map(|(_, v)| v.name.as_str()).collect();
        filtered.constants = facts
            .constants
            .into_iter()
            .filter(|(k, _)| names.contains(k.as_str()))
            .collect();
        filtered.sizes = facts.sizes;
        filtered.aligns = facts.aligns;
        filtered.offsets = facts.offsets;
        out.extend(compare(
            spec,
            &filtered,
            &format!("{} (Haiku tree)", spec.name),
            Coverage::Partial,
        ));
    }
    Ok(out)
}

/// The include directory of the compiler's builtin headers that libclang uses.
fn clang_builtin_include() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
        .flat_map(|e| {
            std::fs::read_dir(e.path().join("lib/clang"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path().join("include"))
        .filter(|p| p.join("stddef.h").exists())
        .collect();
    found.sort();
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bindgen_layout_tests() {
        let code = r#"
pub const VIRTIO_SND_S_OK: _bindgen_ty_1 = 32768;
pub const NEG: i32 = -5;
const _: () = {
    ["Size of virtio_snd_hdr"][::std::mem::size_of::<virtio_snd_hdr>() - 4usize];
    ["Alignment of virtio_snd_hdr"][::std::mem::align_of::<virtio_snd_hdr>() - 4usize];
    ["Offset of field: virtio_snd_hdr::code"][::std::mem::offset_of!(virtio_snd_hdr, code) - 0usize];
};
"#;
        let f = facts_from_bindings(code).unwrap();
        assert_eq!(f.sizes["virtio_snd_hdr"], 4);
        assert_eq!(f.aligns["virtio_snd_hdr"], 4);
        assert_eq!(f.offsets["virtio_snd_hdr"], vec![("code".to_string(), 0)]);
        assert_eq!(f.constants["VIRTIO_SND_S_OK"], 32768);
        assert_eq!(f.constants["NEG"], -5);
    }
}

#[cfg(test)]
mod cross_check {
    use super::*;

    fn virtio_spec() -> Spec {
        gen::load_all()
            .unwrap()
            .into_iter()
            .find(|s| s.name == "virtio_snd")
            .unwrap()
    }

    #[test]
    fn the_real_virtio_snd_header_agrees() {
        let spec = virtio_spec();
        let found = check_system_header(&spec).unwrap();
        assert!(found.is_empty(), "{found:#?}");
    }

    /// A copy of the real header with one field moved and one constant changed must be
    /// reported on both counts, and nothing else.
    #[test]
    fn a_moved_field_and_a_changed_constant_are_reported() {
        let real = std::fs::read_to_string("/usr/include/linux/virtio_snd.h").unwrap();
        // Swap buffer_bytes and period_bytes in virtio_snd_pcm_set_params.
        let start = real.find("struct virtio_snd_pcm_set_params {").unwrap();
        let body_end = start + real[start..].find("};").unwrap();
        let body = &real[start..body_end];
        let b = body.find("__le32 buffer_bytes;").unwrap();
        let p = body.find("__le32 period_bytes;").unwrap();
        assert!(b < p);
        let mut swapped = body.to_string();
        swapped.replace_range(p..p + "__le32 period_bytes;".len(), "__le32 buffer_bytes;");
        swapped.replace_range(b..b + "__le32 buffer_bytes;".len(), "__le32 period_bytes;");
        let mut text = format!("{}{}{}", &real[..start], swapped, &real[body_end..]);
        assert!(text.contains("VIRTIO_SND_S_OK = 0x8000"));
        text = text.replacen("VIRTIO_SND_S_OK = 0x8000", "VIRTIO_SND_S_OK = 0x8010", 1);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("virtio_snd.h");
        std::fs::write(&path, text).unwrap();
        let found = check_header_file(&virtio_spec(), &path).unwrap();
        let joined = found.join("\n");
        assert!(
            joined.contains(
                "virtio_snd_pcm_set_params.buffer_bytes is at offset 8 in the spec but 12"
            ),
            "{joined}"
        );
        assert!(
            joined.contains(
                "virtio_snd_pcm_set_params.period_bytes is at offset 12 in the spec but 8"
            ),
            "{joined}"
        );
        assert!(
            joined.contains("VIRTIO_SND_S_OK is 0x8000 in the spec but 0x8010"),
            "{joined}"
        );
        // The S_* codes after S_OK are implicit in the C enum, so they shift too.
        assert!(
            found
                .iter()
                .all(|l| l.contains("set_params") || l.contains("VIRTIO_SND_S_")),
            "{joined}"
        );
    }

    /// The spec with `edit` made to the text of `spec/virtio_snd.toml`.
    fn edited_spec(edit: impl Fn(&str) -> String) -> Spec {
        let text = std::fs::read_to_string(crate::root().join("spec/virtio_snd.toml")).unwrap();
        let edited = edit(&text);
        assert_ne!(edited, text, "the edit changed nothing");
        codegen::model::parse(&edited, Path::new("spec/virtio_snd.toml")).unwrap()
    }

    /// A deliberately wrong TOML: `role` and `type` of virtio_snd_ctl_info (a virtio 1.3
    /// structure) swapped. Linux's header has `role` at 4 and `type` at 8, after the 4-byte
    /// `struct virtio_snd_info hdr`; the check names both fields, and nothing else.
    #[test]
    fn a_wrong_offset_in_the_toml_is_reported() {
        let spec = edited_spec(|t| {
            let role = t
                .lines()
                .find(|l| l.contains("{ name = \"role\", type = \"le32\""))
                .unwrap();
            let ty = t
                .lines()
                .find(|l| l.contains("{ name = \"type\", type = \"le32\", enum = \"ctl_type\""))
                .unwrap();
            t.replacen(&format!("{role}\n{ty}\n"), &format!("{ty}\n{role}\n"), 1)
        });
        let found = check_system_header(&spec).unwrap();
        assert_eq!(
            found,
            [
                "spec/virtio_snd.toml: virtio_snd_ctl_info.type is at offset 4 in the spec but 8 in virtio_snd.h",
                "spec/virtio_snd.toml: virtio_snd_ctl_info.role is at offset 8 in the spec but 4 in virtio_snd.h",
            ]
        );
    }

    /// A header at the spec's version must hold every structure and constant of it; what
    /// is newer (`since = "1.4"`) or `in_header = false` may be missing.
    #[test]
    fn what_the_header_lacks_is_reported() {
        let real = std::fs::read_to_string("/usr/include/linux/virtio_snd.h").unwrap();
        let start = real.find("struct virtio_snd_ctl_enum_item {").unwrap();
        let end = start + real[start..].find("};").unwrap() + 2;
        let gain = "\tVIRTIO_SND_CTL_ROLE_GAIN\n";
        assert!(real.contains(gain));
        let text = format!("{}{}", &real[..start], &real[end..]).replacen(gain, "", 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("virtio_snd.h");
        std::fs::write(&path, text).unwrap();
        let found = check_header_file(&virtio_spec(), &path).unwrap();
        assert_eq!(
            found,
            [
                "spec/virtio_snd.toml: virtio_snd_ctl_enum_item is not in virtio_snd.h",
                "spec/virtio_snd.toml: VIRTIO_SND_CTL_ROLE_GAIN is not in virtio_snd.h",
            ]
        );
        // The spec's own names and virtio 1.4's rates are not looked for.
        let spec = virtio_spec();
        let exempt: Vec<&str> = spec
            .constants()
            .filter(|(_, v)| !v.in_header || v.since.as_deref() == Some("1.4"))
            .map(|(_, v)| v.name.as_str())
            .collect();
        assert!(exempt.contains(&"VIRTIO_SND_PCM_RATE_12000"), "{exempt:?}");
        assert!(
            exempt.contains(&"VIRTIO_SND_CTL_COUNT_MAX_BYTES"),
            "{exempt:?}"
        );
        assert!(!real.contains("VIRTIO_SND_PCM_RATE_12000"));
    }

    #[test]
    fn a_header_field_the_spec_lacks_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("virtio_snd.h");
        std::fs::write(
            &path,
            "#include <stdint.h>\nstruct virtio_snd_hdr { uint32_t code; uint32_t extra; };\nenum { VIRTIO_SND_NEW_THING = 7 };\n",
        )
        .unwrap();
        let found = check_header_file(&virtio_spec(), &path).unwrap().join("\n");
        assert!(
            found.contains("has virtio_snd_hdr.extra, the spec does not"),
            "{found}"
        );
        assert!(
            found.contains("virtio_snd_hdr is 4 bytes in the spec but 8"),
            "{found}"
        );
        assert!(
            found.contains("defines VIRTIO_SND_NEW_THING = 0x7, the spec does not"),
            "{found}"
        );
    }

    #[test]
    fn the_emitted_headers_compile_and_a_wrong_one_does_not() {
        let specs = gen::load_all().unwrap();
        let mut files = gen::outputs(&specs).unwrap();
        compile_headers(&files).unwrap();
        let h = files
            .get_mut(std::path::Path::new("spec/generated/virtio_snd.h"))
            .unwrap();
        *h = h.replacen(
            "_Static_assert(sizeof(virtio_snd_pcm_info) == 32",
            "_Static_assert(sizeof(virtio_snd_pcm_info) == 33",
            1,
        );
        let err = compile_headers(&files).unwrap_err().to_string();
        assert!(err.contains("virtio_snd.h"), "{err}");
    }
}

#[cfg(test)]
mod haiku_tree {
    use super::*;

    /// A made-up Haiku tree whose hmulti_audio.h has two fields swapped and a wrong opcode:
    /// the `--haiku` path compiles it for the Haiku target and reports both.
    #[test]
    fn a_haiku_tree_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path().join("headers");
        for sub in [
            "private/audio",
            "os/drivers",
            "os/kernel",
            "private/virtio",
            "config",
        ] {
            std::fs::create_dir_all(h.join(sub)).unwrap();
        }
        std::fs::write(
            h.join("private/audio/hmulti_audio.h"),
            "#include <stdint.h>\n#define B_MULTI_GET_DESCRIPTION 8021\n\
             typedef struct multi_channel_info { int32_t channel_id; int32_t kind; uint32_t connectors; uint32_t designations; uint32_t _reserved_[4]; } multi_channel_info;\n",
        )
        .unwrap();
        for f in [
            "os/kernel/OS.h",
            "os/drivers/KernelExport.h",
            "os/drivers/module.h",
            "os/drivers/device_manager.h",
            "private/virtio/virtio.h",
            "os/drivers/driver_settings.h",
        ] {
            std::fs::write(h.join(f), "/* empty */\n").unwrap();
        }
        let specs = gen::load_all().unwrap();
        let found = check_haiku(&specs, dir.path()).unwrap().join("\n");
        assert!(
            found.contains("multi_channel_info.designations is at offset 8 in the spec but 12"),
            "{found}"
        );
        assert!(
            found.contains("B_MULTI_GET_DESCRIPTION is 0x1f54 in the spec but 0x1f55"),
            "{found}"
        );
        assert!(
            found.contains("multi_description is not in hmulti_audio (Haiku tree)"),
            "{found}"
        );
    }

    #[test]
    fn a_directory_that_is_not_a_haiku_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let specs = gen::load_all().unwrap();
        let err = check_haiku(&specs, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("does not look like a Haiku source tree"),
            "{err}"
        );
    }
}
