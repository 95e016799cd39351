//! Emits the reference documentation of one spec as Markdown: every opcode or request with
//! its structures, every structure with each field's type, offset, size, meaning and (for
//! ioctl structures) who fills it, and every constant group.
//!
//! Only what the TOML holds is written: a meaning is the TOML's `doc` text, and an item
//! without one is shown without one. Anchors are explicit (`<a id>`), named by kind and C
//! name, so links do not depend on a renderer's heading slugs.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::emit_c;
use crate::model::{Group, ItemCount, Payload, Spec, TypeDef, Val, Value};
use crate::schema::{ConstKind, Direction, ElfType, Encoding, OnlyIn, StructKind};
use crate::types::{Prim, PtrKind, Ty};

/// The anchor of a structure or union.
pub fn struct_anchor(name: &str) -> String {
    format!("struct-{name}")
}

/// The anchor of a constant group.
pub fn group_anchor(name: &str) -> String {
    format!("const-{name}")
}

/// The anchor of an ioctl opcode, control request or event (by its code's C name).
pub fn code_anchor(code: &str) -> String {
    format!("code-{code}")
}

/// The anchor of a typedef.
pub fn typedef_anchor(name: &str) -> String {
    format!("typedef-{name}")
}

/// Text for one table cell or one line: no line breaks, `|` escaped.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn code(s: &str) -> String {
    format!("`{s}`")
}

fn link(text: &str, anchor: &str) -> String {
    format!("[{text}](#{anchor})")
}

/// The C spelling of a type, with the virtio little-endian types as `__leN` (the Linux
/// header's spelling) so the byte order stays visible.
fn c_type(ty: &Ty) -> String {
    match ty {
        Ty::Prim(Prim::Le16) => "__le16".into(),
        Ty::Prim(Prim::Le32) => "__le32".into(),
        Ty::Prim(Prim::Le64) => "__le64".into(),
        Ty::Array(e, n) => format!("{}[{n}]", c_type(e)),
        Ty::Ptr(PtrKind::User, t) => format!(
            "{} (user)",
            emit_c::decl(&Ty::Ptr(PtrKind::Mut, t.clone()), "")
        ),
        _ => emit_c::decl(ty, ""),
    }
}

/// The structure, union or typedef a type names, looking through arrays and pointers.
fn named_in(ty: &Ty) -> Option<&str> {
    match ty {
        Ty::Named(n) => Some(n),
        Ty::Array(e, _) | Ty::Ptr(_, e) => named_in(e),
        _ => None,
    }
}

/// The type as code, linked to its definition when this document has one.
fn type_ref(spec: &Spec, ty: &Ty) -> String {
    let text = code(&c_type(ty));
    match named_in(ty) {
        Some(n) if spec.type_named(n).is_some() => link(&text, &struct_anchor(n)),
        Some(n) if spec.typedef_named(n).is_some() => link(&text, &typedef_anchor(n)),
        _ => text,
    }
}

fn struct_ref(name: &str) -> String {
    link(&code(name), &struct_anchor(name))
}

fn only_in(o: OnlyIn) -> &'static str {
    match o {
        OnlyIn::Nightly => "Haiku nightly only",
        OnlyIn::Beta5 => "Haiku R1/beta5 only",
    }
}

/// `since 1.3`, `feature X`, `only in ...`, joined; empty when the TOML says none.
fn gates(since: &Option<String>, feature: &Option<String>, only: Option<OnlyIn>) -> String {
    let mut out = Vec::new();
    if let Some(s) = since {
        out.push(format!("since {s}"));
    }
    if let Some(f) = feature {
        out.push(format!("feature {}", code(f)));
    }
    if let Some(o) = only {
        out.push(only_in(o).to_string());
    }
    out.join(", ")
}

/// A doc text followed by its note, for a table cell.
fn meaning(doc: &str, note: &Option<String>) -> String {
    let mut s = cell(doc);
    if let Some(n) = note {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str("Note: ");
        s.push_str(&cell(n));
    }
    s
}

fn number(v: i128, kind: ConstKind) -> String {
    match kind {
        ConstKind::Flags if v >= 0 => format!("{v:#x}"),
        ConstKind::Enum | ConstKind::Values if v >= 16 => format!("{v} ({v:#x})"),
        _ => v.to_string(),
    }
}

fn value_text(v: &Value, kind: ConstKind) -> String {
    match &v.value {
        Val::Int(i) => code(&number(*i, kind)),
        Val::Str(s) => code(&format!("{s:?}")),
    }
}

fn kind_text(kind: ConstKind) -> &'static str {
    match kind {
        ConstKind::Enum => "enum: distinct codes",
        ConstKind::Bit => "bit numbers: the mask of a value is `1 << value`",
        ConstKind::Flags => "flags: masks that may be or-ed together",
        ConstKind::Values => "values: named numbers",
        ConstKind::Strings => "strings",
    }
}

fn struct_kind_text(kind: StructKind) -> &'static str {
    match kind {
        StructKind::Wire => {
            "wire (virtio message or config layout, little-endian, no implicit padding)"
        }
        StructKind::User => "user (ioctl caller's memory, natural C alignment)",
        StructKind::Kernel => "kernel (exchanged with the Haiku kernel)",
        StructKind::Opaque => "opaque (only seen behind a pointer)",
    }
}

fn direction_text(d: Direction) -> &'static str {
    match d {
        Direction::In => "in: the driver reads the argument",
        Direction::Out => "out: the driver writes the argument",
        Direction::Inout => "inout: the driver reads the argument and writes results into it",
        Direction::None => "none: no argument",
    }
}

/// The opcode, request and event constants' own doc, by C name.
fn code_value<'a>(spec: &'a Spec, name: &str) -> Option<&'a Value> {
    spec.constants().map(|(_, v)| v).find(|v| v.name == name)
}

/// Who fills the fields of user structure `t`: its own `driver_writes`, or, when it lists
/// none and is held by value in another structure's field, that field's.
fn fill_rule(spec: &Spec, t: &TypeDef) -> Option<FillRule> {
    if t.kind != StructKind::User {
        return None;
    }
    if t.driver_writes.is_empty() {
        for outer in &spec.types {
            for f in &outer.fields {
                if by_value_named(&f.ty) == Some(t.name.as_str()) {
                    return Some(FillRule::Enclosing(outer.name.clone(), f.name.clone()));
                }
            }
        }
    }
    Some(FillRule::Own)
}

enum FillRule {
    Own,
    Enclosing(String, String),
}

fn by_value_named(ty: &Ty) -> Option<&str> {
    match ty {
        Ty::Named(n) => Some(n),
        Ty::Array(e, _) => by_value_named(e),
        _ => None,
    }
}

/// Where a structure is used: opcodes, requests, events, and other structures.
fn uses(spec: &Spec, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for i in &spec.ioctls {
        if i.arg.as_ref().and_then(named_in) == Some(name) {
            out.push(format!(
                "argument of {}",
                link(&code(&i.code), &code_anchor(&i.code))
            ));
        }
    }
    for r in &spec.requests {
        let c = link(&code(&r.code), &code_anchor(&r.code));
        let payload = |p: &Option<Payload>| matches!(p, Some(Payload::Struct(s)) if s == name);
        if r.request == name {
            out.push(format!("request of {c}"));
        }
        if payload(&r.request_payload) {
            out.push(format!("request payload of {c}"));
        }
        if r.response == name {
            out.push(format!("response of {c}"));
        }
        if payload(&r.response_payload) {
            out.push(format!("response payload of {c}"));
        }
        if r.items.as_deref() == Some(name) {
            out.push(format!("response items of {c}"));
        }
    }
    for e in &spec.events {
        if e.layout == name {
            out.push(format!(
                "layout of {}",
                link(&code(&e.code), &code_anchor(&e.code))
            ));
        }
    }
    for t in &spec.types {
        for f in &t.fields {
            if named_in(&f.ty) == Some(name) {
                let how = if by_value_named(&f.ty).is_some() {
                    "held in"
                } else {
                    "pointed to by"
                };
                out.push(format!("{how} {}.{}", struct_ref(&t.name), f.name));
            }
        }
    }
    out
}

/// The Markdown reference of `spec`.
pub fn emit(spec: &Spec) -> String {
    let mut s = String::new();
    let path = spec.path.display().to_string().replace('\\', "/");
    let _ = writeln!(s, "# {}\n", spec.title);
    let _ = writeln!(
        s,
        "> Generated by `cargo xtask gen` from `{path}`; do not edit by hand. Every meaning \
         below is the TOML's `doc` text (an item without one has none); `spec/SCHEMA.md` \
         describes the keys.\n"
    );
    let _ = writeln!(s, "Version: {}.\n", cell(&spec.version));
    let _ = writeln!(s, "Source: {}.\n", cell(&spec.source));
    if let Some(h) = &spec.header {
        let _ = writeln!(s, "C header: {}.\n", code(h));
    }
    let _ = writeln!(
        s,
        "Rust module: {}.\n",
        code(&format!("spec::{}", spec.name))
    );

    let mut contents = Vec::new();
    if !spec.ioctls.is_empty() {
        contents.push(("Opcodes", "opcodes"));
    }
    if !spec.requests.is_empty() {
        contents.push(("Control requests", "requests"));
    }
    if !spec.events.is_empty() {
        contents.push(("Events", "events"));
    }
    if !spec.types.is_empty() {
        contents.push(("Structures", "structures"));
    }
    if !spec.typedefs.is_empty() {
        contents.push(("Typedefs", "typedefs"));
    }
    if !spec.groups.is_empty() {
        contents.push(("Constants", "constants"));
    }
    if !spec.imports.is_empty() {
        contents.push(("Kernel imports", "imports"));
    }
    for (title, anchor) in &contents {
        let _ = writeln!(s, "- {}", link(title, anchor));
    }
    s.push('\n');

    if !spec.ioctls.is_empty() {
        ioctls(&mut s, spec);
    }
    if !spec.requests.is_empty() {
        requests(&mut s, spec);
    }
    if !spec.events.is_empty() {
        events(&mut s, spec);
    }
    if !spec.types.is_empty() {
        let _ = writeln!(s, "## <a id=\"structures\"></a>Structures\n");
        for t in &spec.types {
            structure(&mut s, spec, t);
        }
    }
    if !spec.typedefs.is_empty() {
        typedefs(&mut s, spec);
    }
    if !spec.groups.is_empty() {
        let _ = writeln!(s, "## <a id=\"constants\"></a>Constants\n");
        for g in &spec.groups {
            group(&mut s, spec, g);
        }
    }
    if !spec.imports.is_empty() {
        imports(&mut s, spec);
    }
    while s.ends_with("\n\n") {
        s.pop();
    }
    s
}

/// The constant's doc, the item's doc and its note, as paragraphs.
fn paragraphs(s: &mut String, value_doc: Option<&Value>, doc: &str, note: &Option<String>) {
    if let Some(v) = value_doc.filter(|v| !v.doc.trim().is_empty()) {
        let _ = writeln!(s, "{}\n", cell(&v.doc));
    }
    if !doc.trim().is_empty() {
        let _ = writeln!(s, "{}\n", cell(doc));
    }
    if let Some(n) = note {
        let _ = writeln!(s, "Note: {}\n", cell(n));
    }
}

fn ioctls(s: &mut String, spec: &Spec) {
    let _ = writeln!(s, "## <a id=\"opcodes\"></a>Opcodes\n");
    let _ = writeln!(
        s,
        "Each opcode is an ioctl whose argument points to the structure named. The direction \
         says who reads and who writes the argument; within a structure, the \"Filled by\" \
         column says which fields the driver writes back (`driver_writes`).\n"
    );
    for i in &spec.ioctls {
        let _ = writeln!(s, "### <a id=\"{}\"></a>{}\n", code_anchor(&i.code), i.code);
        let _ = writeln!(
            s,
            "- Value: {} (group {})",
            code(&number(i.value, ConstKind::Enum)),
            link(&code(&i.group), &group_anchor(&i.group))
        );
        let _ = writeln!(s, "- Direction: {}", direction_text(i.direction));
        match &i.arg {
            Some(ty) => {
                let size = spec
                    .layout_of(ty)
                    .map(|(n, _)| format!(" ({n} bytes)"))
                    .unwrap_or_default();
                let _ = writeln!(s, "- Argument: {}{size}", type_ref(spec, ty));
            }
            None => {
                let _ = writeln!(s, "- Argument: none");
            }
        }
        s.push('\n');
        paragraphs(s, code_value(spec, &i.code), &i.doc, &i.note);
    }
}

fn payload_text(p: &Option<Payload>) -> String {
    match p {
        None => String::new(),
        Some(Payload::Struct(n)) => format!(", then {}", struct_ref(n)),
        Some(Payload::Tlv) => {
            ", then a TLV: a `virtio_snd_ctl_tlv` header followed by a variable number of value bytes"
                .into()
        }
    }
}

fn requests(s: &mut String, spec: &Spec) {
    let _ = writeln!(s, "## <a id=\"requests\"></a>Control requests\n");
    let _ = writeln!(
        s,
        "Each request is a device-readable request structure (optionally followed by a \
         payload) and a device-writable response."
    );
    if let Some((ok, group, _)) = &spec.status_ok {
        let _ = writeln!(
            s,
            "The response carries a status of group {}; {} means success.",
            link(&code(group), &group_anchor(group)),
            code(ok)
        );
    }
    s.push('\n');
    for r in &spec.requests {
        let _ = writeln!(s, "### <a id=\"{}\"></a>{}\n", code_anchor(&r.code), r.code);
        let _ = writeln!(
            s,
            "- Value: {} (group {})",
            code(&number(r.value, ConstKind::Enum)),
            link(&code(&r.group), &group_anchor(&r.group))
        );
        let _ = writeln!(
            s,
            "- Request (driver to device): {}{}",
            struct_ref(&r.request),
            payload_text(&r.request_payload)
        );
        let mut resp = format!(
            "{}{}",
            struct_ref(&r.response),
            payload_text(&r.response_payload)
        );
        if let Some(items) = &r.items {
            let count = match &r.item_count {
                Some(ItemCount::Field(f)) => format!("the request's `{f}`"),
                Some(ItemCount::Argument) => "given by the caller".into(),
                None => "unspecified".into(),
            };
            let _ = write!(resp, ", then N × {} (N: {count})", struct_ref(items));
        }
        let _ = writeln!(s, "- Response (device to driver): {resp}");
        if let Some((ok, _, _)) = &spec.status_ok {
            let _ = writeln!(s, "- Success status: {}", code(ok));
        }
        let g = gates(&r.since, &r.feature, None);
        if !g.is_empty() {
            let _ = writeln!(s, "- Availability: {g}");
        }
        s.push('\n');
        paragraphs(s, code_value(spec, &r.code), &r.doc, &r.note);
    }
}

fn events(s: &mut String, spec: &Spec) {
    let _ = writeln!(s, "## <a id=\"events\"></a>Events\n");
    for e in &spec.events {
        let _ = writeln!(s, "### <a id=\"{}\"></a>{}\n", code_anchor(&e.code), e.code);
        let _ = writeln!(
            s,
            "- Value: {} (group {})",
            code(&number(e.value, ConstKind::Enum)),
            link(&code(&e.group), &group_anchor(&e.group))
        );
        let _ = writeln!(s, "- Layout: {}", struct_ref(&e.layout));
        if let Some(d) = &e.data {
            let _ = writeln!(s, "- `data` holds: {}", code(d));
        }
        let g = gates(&e.since, &e.feature, None);
        if !g.is_empty() {
            let _ = writeln!(s, "- Availability: {g}");
        }
        s.push('\n');
        paragraphs(s, code_value(spec, &e.code), &e.doc, &e.note);
    }
}

fn structure(s: &mut String, spec: &Spec, t: &TypeDef) {
    let kw = if t.is_union { "union" } else { "struct" };
    let _ = writeln!(
        s,
        "### <a id=\"{}\"></a>{kw} {}\n",
        struct_anchor(&t.name),
        t.name
    );
    if t.kind == StructKind::Opaque {
        let _ = writeln!(s, "- Kind: {}", struct_kind_text(t.kind));
    } else {
        let _ = writeln!(
            s,
            "- Size: {} bytes, alignment {}; kind: {}",
            t.size,
            t.align,
            struct_kind_text(t.kind)
        );
    }
    let _ = writeln!(
        s,
        "- Rust: {}",
        code(&format!("spec::{}::{}", spec.name, t.rust))
    );
    if t.anonymous {
        let _ = writeln!(s, "- Unnamed in the C header (a nested anonymous {kw})");
    }
    let g = gates(&t.since, &t.feature, t.only_in);
    if !g.is_empty() {
        let _ = writeln!(s, "- Availability: {g}");
    }
    let used = uses(spec, &t.name);
    if !used.is_empty() {
        let _ = writeln!(s, "- Used as: {}", used.join("; "));
    }
    s.push('\n');
    paragraphs(s, None, &t.doc, &t.note);
    if t.fields.is_empty() {
        return;
    }
    let fill = fill_rule(spec, t);
    let values = t
        .fields
        .iter()
        .any(|f| f.enum_group.is_some() || f.bits.is_some());
    let gated = t
        .fields
        .iter()
        .any(|f| f.since.is_some() || f.feature.is_some() || f.only_in.is_some());
    let mut head = vec!["Field", "C type", "Offset", "Size"];
    if fill.is_some() {
        head.push("Filled by");
    }
    if values {
        head.push("Values");
    }
    if gated {
        head.push("Availability");
    }
    head.push("Meaning");
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(
        s,
        "|{}",
        head.iter()
            .map(|h| if matches!(*h, "Offset" | "Size") {
                "---:|"
            } else {
                "---|"
            })
            .collect::<String>()
    );
    for f in &t.fields {
        let mut row = vec![
            code(&f.name),
            type_ref(spec, &f.ty),
            f.offset.to_string(),
            f.size.to_string(),
        ];
        match &fill {
            Some(FillRule::Own) => row.push(
                if t.driver_writes.contains(&f.name) {
                    "driver"
                } else {
                    "caller"
                }
                .into(),
            ),
            Some(FillRule::Enclosing(outer, field)) => {
                row.push(format!("as {}.{field}", struct_ref(outer)))
            }
            None => {}
        }
        if values {
            row.push(match (&f.enum_group, &f.bits) {
                (Some(g), _) => format!("one of {}", link(&code(g), &group_anchor(g))),
                (None, Some(g)) => format!("mask of {}", link(&code(g), &group_anchor(g))),
                (None, None) => String::new(),
            });
        }
        if gated {
            row.push(gates(&f.since, &f.feature, f.only_in));
        }
        let mut m = meaning(&f.doc, &f.note);
        if f.padding {
            m = if m.is_empty() {
                "Padding.".into()
            } else {
                format!("Padding. {m}")
            };
        }
        row.push(m);
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s.push('\n');
}

fn typedefs(s: &mut String, spec: &Spec) {
    let _ = writeln!(s, "## <a id=\"typedefs\"></a>Typedefs\n");
    let _ = writeln!(s, "| Name | C type | Size | Meaning |\n|---|---|---:|---|");
    for td in &spec.typedefs {
        let size = spec
            .layout_of(&td.ty)
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| <a id=\"{}\"></a>{} | {} | {size} | {} |",
            typedef_anchor(&td.name),
            code(&td.name),
            type_ref(spec, &td.ty),
            meaning(&td.doc, &td.note)
        );
    }
    s.push('\n');
}

fn group(s: &mut String, spec: &Spec, g: &Group) {
    let _ = writeln!(
        s,
        "### <a id=\"{}\"></a>{}\n",
        group_anchor(&g.name),
        g.name
    );
    let _ = writeln!(s, "- Kind: {}", kind_text(g.kind));
    if let Some(t) = &g.c_type {
        let ty = Ty::Named(t.clone());
        let shown = match crate::types::parse(t) {
            Ok(parsed) => {
                if spec.typedef_named(t).is_some() {
                    type_ref(spec, &ty)
                } else {
                    code(&c_type(&parsed))
                }
            }
            Err(_) => code(t),
        };
        let _ = writeln!(s, "- Type: {shown}");
    }
    let _ = writeln!(
        s,
        "- Rust: {}",
        code(&format!("spec::{}::{}", spec.name, g.rust))
    );
    let gate = gates(&g.since, &g.feature, None);
    if !gate.is_empty() {
        let _ = writeln!(s, "- Availability: {gate}");
    }
    let users: BTreeSet<String> = spec
        .types
        .iter()
        .flat_map(|t| {
            t.fields
                .iter()
                .filter(|f| {
                    f.enum_group.as_deref() == Some(g.name.as_str())
                        || f.bits.as_deref() == Some(g.name.as_str())
                })
                .map(move |f| format!("{}.{}", struct_ref(&t.name), f.name))
        })
        .collect();
    if !users.is_empty() {
        let _ = writeln!(
            s,
            "- Fields holding it: {}",
            users.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    s.push('\n');
    paragraphs(s, None, &g.doc, &g.note);
    let hz = g.values.iter().any(|v| v.hz.is_some());
    let width = g.values.iter().any(|v| v.width.is_some());
    let encoding = g.values.iter().any(|v| v.encoding.is_some());
    let gated = g
        .values
        .iter()
        .any(|v| v.since.is_some() || v.feature.is_some() || v.only_in.is_some());
    let composite = g.values.iter().any(|v| v.composite);
    let mut head = vec!["Name", "Value"];
    if hz {
        head.push("Rate (Hz)");
    }
    if width {
        head.push("Bits (significant / container)");
    }
    if encoding {
        head.push("Encoding");
    }
    if gated {
        head.push("Availability");
    }
    head.push("Meaning");
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
    for v in &g.values {
        let mut row = vec![code(&v.name), value_text(v, g.kind)];
        if hz {
            row.push(v.hz.map(|h| h.to_string()).unwrap_or_default());
        }
        if width {
            row.push(match (v.width, v.phys_width) {
                (Some(w), Some(p)) => format!("{w} / {p}"),
                _ => String::new(),
            });
        }
        if encoding {
            row.push(match v.encoding {
                Some(Encoding::Signed) => "signed".into(),
                Some(Encoding::Unsigned) => "unsigned".into(),
                Some(Encoding::Float) => "float".into(),
                None => String::new(),
            });
        }
        if gated {
            row.push(gates(&v.since, &v.feature, v.only_in));
        }
        let mut m = meaning(&v.doc, &v.note);
        if composite && v.composite {
            m = if m.is_empty() {
                "A mask made of other values.".into()
            } else {
                format!("A mask made of other values. {m}")
            };
        }
        row.push(m);
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s.push('\n');
}

fn imports(s: &mut String, spec: &Spec) {
    let _ = writeln!(s, "## <a id=\"imports\"></a>Kernel imports\n");
    let _ = writeln!(
        s,
        "| Symbol | ELF type | Declaration | Availability | Meaning |\n|---|---|---|---|---|"
    );
    for i in &spec.imports {
        let elf = match i.elf {
            ElfType::Func => "FUNC",
            ElfType::Object => "OBJECT",
        };
        let decl = crate::emit_imports::c_declaration(i);
        let _ = writeln!(
            s,
            "| {} | {elf} | {} | {} | {} |",
            code(&i.name),
            code(&cell(&decl)),
            gates(&None, &None, i.only_in),
            meaning(&i.doc, &i.note)
        );
    }
    s.push('\n');
}
