//! The ABI review behind `cargo xtask spec-diff`: what changed between two versions of a
//! spec, field by field and code by code, each change marked breaking, rename or additive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::model::{Field, Spec, TypeDef, Val, Value};
use crate::schema::{Direction, Encoding, OnlyIn, StructKind};
use crate::types::Ty;

/// What a change does to code built against the old ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// A binary built against the old ABI can misbehave against the new one.
    Breaking,
    /// Binary-compatible (same offsets, sizes, types and values) but a name changed, so
    /// source using the old name no longer builds.
    Rename,
    /// Nothing built against the old ABI is affected.
    Additive,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Breaking => "breaking",
            Class::Rename => "rename",
            Class::Additive => "additive",
        })
    }
}

/// One line of the review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `struct virtio_snd_config`, `consts request`, `request VIRTIO_SND_R_PCM_INFO`...
    pub section: String,
    pub class: Class,
    pub text: String,
}

struct Out(Vec<Change>);

impl Out {
    fn push(&mut self, section: &str, class: Class, text: String) {
        self.0.push(Change {
            section: section.to_string(),
            class,
            text,
        });
    }
}

fn show(v: &Val) -> String {
    match v {
        Val::Int(i) if *i >= 16 => format!("{i:#x}"),
        Val::Int(i) => i.to_string(),
        Val::Str(s) => format!("{s:?}"),
    }
}

fn kind_name(k: StructKind) -> &'static str {
    match k {
        StructKind::Wire => "wire",
        StructKind::User => "user",
        StructKind::Kernel => "kernel",
        StructKind::Opaque => "opaque",
    }
}

fn only_in_name(o: OnlyIn) -> &'static str {
    match o {
        OnlyIn::Nightly => "nightly",
        OnlyIn::Beta5 => "beta5",
    }
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
        Direction::Inout => "inout",
        Direction::None => "none",
    }
}

/// Names that were renamed between the two specs (old name -> new name).
#[derive(Default)]
struct Renames {
    types: HashMap<String, String>,
    consts: HashMap<String, String>,
}

impl Renames {
    fn ty(&self, name: &str) -> String {
        self.types
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    fn code(&self, name: &str) -> String {
        self.consts
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    /// An old type as it is spelled in the new spec.
    fn map(&self, t: &Ty) -> Ty {
        match t {
            Ty::Named(n) => Ty::Named(self.ty(n)),
            Ty::Array(e, n) => Ty::Array(Box::new(self.map(e)), *n),
            Ty::Ptr(k, e) => Ty::Ptr(*k, Box::new(self.map(e))),
            Ty::Fn {
                args,
                variadic,
                ret,
            } => Ty::Fn {
                args: args.iter().map(|a| self.map(a)).collect(),
                variadic: *variadic,
                ret: ret.as_ref().map(|r| Box::new(self.map(r))),
            },
            Ty::Void | Ty::Prim(_) => t.clone(),
        }
    }
}

/// The availability keys one item may carry: `since`, `feature`, `only_in`.
#[derive(Clone, Copy)]
struct Gates<'a> {
    since: Option<&'a str>,
    feature: Option<&'a str>,
    only_in: Option<OnlyIn>,
}

impl<'a> Gates<'a> {
    fn of(since: &'a Option<String>, feature: &'a Option<String>, only_in: Option<OnlyIn>) -> Self {
        Gates {
            since: since.as_deref(),
            feature: feature.as_deref(),
            only_in,
        }
    }
}

/// `1.10` after `1.3`; `None` when either is not dotted numbers.
fn version_later(a: &str, b: &str) -> Option<bool> {
    let parse = |s: &str| -> Option<Vec<u64>> { s.split('.').map(|p| p.parse().ok()).collect() };
    Some(parse(b)? > parse(a)?)
}

/// Changes of `since`, `feature` and `only_in` on one item. An item that becomes available
/// in fewer places (a later version, a new feature gate, one Haiku version only) is breaking
/// for code that used it there; one that becomes available in more places is additive.
fn diff_gates(out: &mut Out, sec: &str, what: &str, old: Gates, new: Gates) {
    match (old.feature, new.feature) {
        (None, Some(f)) => out.push(
            sec,
            Class::Breaking,
            format!("{what}now only with {f} (was present without a feature)"),
        ),
        (Some(f), None) => out.push(sec, Class::Additive, format!("{what}no longer needs {f}")),
        (Some(a), Some(b)) if a != b => {
            out.push(sec, Class::Breaking, format!("{what}feature {a} -> {b}"))
        }
        _ => {}
    }
    match (old.since, new.since) {
        (None, Some(v)) => out.push(
            sec,
            Class::Breaking,
            format!("{what}now since {v} (was in every version)"),
        ),
        (Some(v), None) => out.push(
            sec,
            Class::Additive,
            format!("{what}now in every version (was since {v})"),
        ),
        (Some(a), Some(b)) if a != b => {
            let (class, why) = match version_later(a, b) {
                Some(false) => (Class::Additive, format!("now also in {b}")),
                Some(true) => (Class::Breaking, format!("now absent from {a}")),
                None => (Class::Breaking, "versions not comparable".to_string()),
            };
            out.push(sec, class, format!("{what}since {a} -> {b} ({why})"));
        }
        _ => {}
    }
    match (old.only_in, new.only_in) {
        (None, Some(o)) => out.push(
            sec,
            Class::Breaking,
            format!(
                "{what}now only in {} (was in every Haiku version)",
                only_in_name(o)
            ),
        ),
        (Some(o), None) => out.push(
            sec,
            Class::Additive,
            format!(
                "{what}now in every Haiku version (was only in {})",
                only_in_name(o)
            ),
        ),
        (Some(a), Some(b)) if a != b => out.push(
            sec,
            Class::Breaking,
            format!("{what}only in {} -> {}", only_in_name(a), only_in_name(b)),
        ),
        _ => {}
    }
}

/// Every structure a control request, its response or an event is made of, nested by value.
/// Changes of a value's facts (`hz`, `width`, `phys_width`, `encoding`). The wire is the
/// same, but code derives behaviour from them (the driver's rate and format maps): a fact
/// gained is additive, a fact lost or changed is breaking.
fn diff_facts(out: &mut Out, sec: &str, name: &str, old: &Value, new: &Value) {
    let enc = |e: Option<Encoding>| {
        e.map(|e| match e {
            Encoding::Signed => "signed".to_owned(),
            Encoding::Unsigned => "unsigned".to_owned(),
            Encoding::Float => "float".to_owned(),
        })
    };
    let facts = [
        (
            "hz",
            old.hz.map(|v| v.to_string()),
            new.hz.map(|v| v.to_string()),
        ),
        (
            "width",
            old.width.map(|v| v.to_string()),
            new.width.map(|v| v.to_string()),
        ),
        (
            "phys_width",
            old.phys_width.map(|v| v.to_string()),
            new.phys_width.map(|v| v.to_string()),
        ),
        ("encoding", enc(old.encoding), enc(new.encoding)),
    ];
    for (fact, a, b) in facts {
        match (a, b) {
            (None, Some(b)) => {
                out.push(sec, Class::Additive, format!("{name}: {fact} = {b} added"))
            }
            (Some(a), None) => out.push(
                sec,
                Class::Breaking,
                format!("{name}: {fact} removed (was {a})"),
            ),
            (Some(a), Some(b)) if a != b => {
                out.push(sec, Class::Breaking, format!("{name}: {fact} {a} -> {b}"))
            }
            _ => {}
        }
    }
}

fn message_types(spec: &Spec) -> HashSet<String> {
    let mut todo: Vec<String> = Vec::new();
    for r in &spec.requests {
        todo.push(r.request.clone());
        todo.push(r.response.clone());
        todo.extend(r.items.clone());
        for p in [&r.request_payload, &r.response_payload]
            .into_iter()
            .flatten()
        {
            if let crate::model::Payload::Struct(s) = p {
                todo.push(s.clone());
            }
        }
    }
    todo.extend(spec.events.iter().map(|e| e.layout.clone()));
    let mut seen = HashSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(t) = spec.type_named(&name) {
            for f in &t.fields {
                let mut ty = &f.ty;
                while let Ty::Array(e, _) = ty {
                    ty = e;
                }
                if let Ty::Named(n) = ty {
                    todo.push(n.clone());
                }
            }
        }
    }
    seen
}

/// Whether a structure that grew at the end (every old field where it was, the new fields
/// after them) still reads right for the side built against the other size. This is decided
/// by how each kind is read:
///
/// - `wire`, part of a control request, response or event: no. The generated decoders in
///   `codegen/src/emit_rust.rs` take exactly the message's size: `ControlRequest::decode`
///   returns `DecodeError::Oversized` for a readable part longer than the request,
///   `decode_response` wants `reply.len()` equal to the header plus the payload or items,
///   `DeviceEvent::decode` the event's exact size.
/// - `wire`, not in any message (the config space): only when every new field is gated by a
///   feature bit. The driver reads the prefix its negotiated features cover
///   (`read_device_config(0, ..)` in `driver/src/virtio/mod.rs`, 12 or 16 bytes), the rule of
///   virtio 1.x section 2.5 ("Device Configuration Space"); an ungated field would be read
///   from devices that do not have it.
/// - `user`: no. `MultiIoctl::decode` (`user_arg` in `emit_rust.rs`) refuses a caller's
///   length below the structure's size (`IoctlError::TooShort`), and the ioctl table copies
///   the new size in and out of a buffer the caller sized with the old header.
/// - `kernel`: no. Module and hook tables are passed by pointer with no length, so a reader
///   of the new layout reads past the end of an older writer's structure.
/// - `opaque`: has no fields and no size to grow.
fn growth_verdict(
    old: &TypeDef,
    new: &TypeDef,
    in_message: bool,
    added: &[&Field],
) -> Result<String, String> {
    match new.kind {
        StructKind::Wire if in_message => Err(
            "a wire message part, and the generated decoders take exactly its size".into(),
        ),
        StructKind::Wire => match added.iter().find(|f| f.feature.is_none()) {
            Some(f) => Err(format!(
                "field {} has no feature gate, so a reader of the new layout reads it from writers of the old {} bytes",
                f.name, old.size
            )),
            None => {
                let mut gates: Vec<&str> =
                    added.iter().filter_map(|f| f.feature.as_deref()).collect();
                gates.dedup();
                Ok(format!("read only with {}", gates.join(", ")))
            }
        },
        StructKind::User => Err(
            "a user struct: MultiIoctl::decode refuses a caller's length below the new size".into(),
        ),
        StructKind::Kernel => Err(
            "a kernel struct, passed by pointer with no length: a reader of the new layout reads past the end of an older writer's".into(),
        ),
        StructKind::Opaque => Err("an opaque type has no layout to grow".into()),
    }
}

/// Old field name -> new field name for fields that kept offset, size and type.
fn field_renames<'a>(
    old: &'a TypeDef,
    new: &'a TypeDef,
    r: &Renames,
) -> Vec<(&'a Field, &'a Field)> {
    let mut pairs: Vec<(&Field, &Field)> = Vec::new();
    for of in &old.fields {
        if new.fields.iter().any(|f| f.name == of.name) {
            continue;
        }
        let twin = new.fields.iter().find(|nf| {
            nf.offset == of.offset
                && nf.size == of.size
                && nf.ty == r.map(&of.ty)
                && !old.fields.iter().any(|o| o.name == nf.name)
                && !pairs.iter().any(|(_, p)| p.name == nf.name)
        });
        if let Some(nf) = twin {
            pairs.push((of, nf));
        }
    }
    pairs
}

fn diff_type(out: &mut Out, old: &TypeDef, new: &TypeDef, r: &Renames, in_message: bool) {
    let what = if new.is_union { "union" } else { "struct" };
    let sec = format!("{what} {}", new.name);
    let renamed = field_renames(old, new, r);
    let new_name_of = |old_name: &str| -> String {
        renamed
            .iter()
            .find(|(o, _)| o.name == old_name)
            .map(|(_, n)| n.name.clone())
            .unwrap_or_else(|| old_name.to_string())
    };
    let mut grows_at_end = true;
    for of in &old.fields {
        match new.fields.iter().find(|f| f.name == new_name_of(&of.name)) {
            Some(nf) => {
                if nf.name != of.name {
                    out.push(
                        &sec,
                        Class::Rename,
                        format!(
                            "field {} renamed to {} (same offset {} and type {})",
                            of.name, nf.name, of.offset, nf.ty
                        ),
                    );
                }
                if nf.offset != of.offset {
                    grows_at_end = false;
                    out.push(
                        &sec,
                        Class::Breaking,
                        format!(
                            "field {} moved: offset {} -> {}",
                            of.name, of.offset, nf.offset
                        ),
                    );
                }
                if nf.ty != r.map(&of.ty) {
                    grows_at_end = false;
                    out.push(
                        &sec,
                        Class::Breaking,
                        format!(
                            "field {} retyped: {} -> {} ({} -> {} bytes)",
                            of.name, of.ty, nf.ty, of.size, nf.size
                        ),
                    );
                }
                diff_gates(
                    out,
                    &sec,
                    &format!("field {}: ", nf.name),
                    Gates::of(&of.since, &of.feature, of.only_in),
                    Gates::of(&nf.since, &nf.feature, nf.only_in),
                );
            }
            None => {
                grows_at_end = false;
                out.push(
                    &sec,
                    Class::Breaking,
                    format!(
                        "field {} removed (was at offset {}, {})",
                        of.name, of.offset, of.ty
                    ),
                );
            }
        }
    }
    let added: Vec<&Field> = new
        .fields
        .iter()
        .filter(|nf| {
            !old.fields.iter().any(|f| f.name == nf.name)
                && !renamed.iter().any(|(_, n)| n.name == nf.name)
        })
        .collect();
    // A new union member overlays the old ones from offset 0; a new struct field is appended
    // when it starts at or after the old end.
    let inside: Vec<&Field> = added
        .iter()
        .copied()
        .filter(|nf| !new.is_union && nf.offset < old.size)
        .collect();
    if !inside.is_empty() {
        grows_at_end = false;
    }
    let growth =
        (new.size > old.size && grows_at_end).then(|| growth_verdict(old, new, in_message, &added));
    for nf in &added {
        let gate = match (&nf.since, &nf.feature) {
            (Some(s), Some(f)) => format!(", since {s}, only with {f}"),
            (Some(s), None) => format!(", since {s}"),
            (None, Some(f)) => format!(", only with {f}"),
            (None, None) => String::new(),
        };
        let is_inside = inside.iter().any(|f| f.name == nf.name);
        let class = match (&growth, is_inside) {
            (_, true) | (Some(Err(_)), false) => Class::Breaking,
            _ => Class::Additive,
        };
        let place = if is_inside {
            " inside the old layout"
        } else {
            ""
        };
        out.push(
            &sec,
            class,
            format!(
                "field {} added at offset {}{place} ({}, {} bytes{gate})",
                nf.name, nf.offset, nf.ty, nf.size
            ),
        );
    }
    if old.size != new.size {
        let (class, how) = match &growth {
            Some(Ok(why)) => (Class::Additive, format!(" (grows at the end; {why})")),
            Some(Err(why)) => (Class::Breaking, format!(": grows at the end, but {why}")),
            None => (Class::Breaking, String::new()),
        };
        out.push(
            &sec,
            class,
            format!("size {} -> {} bytes{how}", old.size, new.size),
        );
    }
    if old.align != new.align {
        out.push(
            &sec,
            Class::Breaking,
            format!("alignment {} -> {}", old.align, new.align),
        );
    }
    if old.is_union != new.is_union {
        out.push(
            &sec,
            Class::Breaking,
            "changed between struct and union".to_string(),
        );
    }
    if old.kind != new.kind {
        out.push(
            &sec,
            Class::Breaking,
            format!(
                "kind {} -> {} (how the structure is read, aligned and generated)",
                kind_name(old.kind),
                kind_name(new.kind)
            ),
        );
    }
    // A struct whose C name changed is reported once, as renamed, not again for its Rust name.
    if old.rust != new.rust && old.name == new.name {
        out.push(
            &sec,
            Class::Rename,
            format!("Rust name {} -> {}", old.rust, new.rust),
        );
    }
    diff_gates(
        out,
        &sec,
        "",
        Gates::of(&old.since, &old.feature, old.only_in),
        Gates::of(&new.since, &new.feature, new.only_in),
    );
    // `driver_writes`: the fields an ioctl handler copies back. A field it starts writing
    // overwrites what the caller was promised to keep; one it stops writing leaves the
    // caller reading its own input as the answer.
    let old_writes: Vec<String> = old.driver_writes.iter().map(|f| new_name_of(f)).collect();
    for f in &new.driver_writes {
        if !old_writes.contains(f) {
            out.push(
                &sec,
                Class::Breaking,
                format!("driver_writes: now also writes back {f} (callers were promised it is left as they wrote it)"),
            );
        }
    }
    for f in &old_writes {
        if !new.driver_writes.contains(f) {
            out.push(
                &sec,
                Class::Breaking,
                format!("driver_writes: no longer writes back {f} (callers read it as the answer)"),
            );
        }
    }
}

/// Same kind, size, alignment and fields (names, offsets, types after renames).
fn same_layout(old: &TypeDef, new: &TypeDef, r: &Renames) -> bool {
    old.kind == new.kind
        && old.is_union == new.is_union
        && old.size == new.size
        && old.align == new.align
        && old.fields.len() == new.fields.len()
        && old.fields.iter().zip(&new.fields).all(|(o, n)| {
            o.name == n.name && o.offset == n.offset && o.size == n.size && r.map(&o.ty) == n.ty
        })
}

/// Structures and constants that were removed and added again under another name with the
/// same layout (or value): renames. Structures are paired until nothing changes, so a
/// structure holding a renamed one is found too.
fn find_renames(old: &Spec, new: &Spec) -> Renames {
    let mut r = Renames::default();
    loop {
        let mut found = None;
        'outer: for ot in old
            .types
            .iter()
            .filter(|t| new.type_named(&t.name).is_none())
        {
            if r.types.contains_key(&ot.name) {
                continue;
            }
            for nt in new
                .types
                .iter()
                .filter(|t| old.type_named(&t.name).is_none())
            {
                if r.types.values().any(|v| v == &nt.name) {
                    continue;
                }
                if same_layout(ot, nt, &r) {
                    found = Some((ot.name.clone(), nt.name.clone()));
                    break 'outer;
                }
            }
        }
        match found {
            Some((o, n)) => {
                r.types.insert(o, n);
            }
            None => break,
        }
    }
    let new_names: HashSet<&str> = new.constants().map(|(_, v)| v.name.as_str()).collect();
    let old_names: HashSet<&str> = old.constants().map(|(_, v)| v.name.as_str()).collect();
    let mut taken: HashSet<&str> = HashSet::new();
    for (og, ov) in old
        .constants()
        .filter(|(_, v)| !new_names.contains(v.name.as_str()))
    {
        let twin = new.constants().find(|(ng, nv)| {
            ng.name == og.name
                && nv.value == ov.value
                && !old_names.contains(nv.name.as_str())
                && !taken.contains(nv.name.as_str())
        });
        if let Some((_, nv)) = twin {
            taken.insert(&nv.name);
            r.consts.insert(ov.name.clone(), nv.name.clone());
        }
    }
    r
}

/// Every ABI difference from `old` to `new`, in a stable order.
pub fn diff(old: &Spec, new: &Spec) -> Vec<Change> {
    let mut out = Out(Vec::new());
    let r = find_renames(old, new);
    let old_messages = message_types(old);
    let new_messages = message_types(new);
    for ot in &old.types {
        let what = if ot.is_union { "union" } else { "struct" };
        let new_name = r.ty(&ot.name);
        match new.type_named(&new_name) {
            Some(nt) => {
                if new_name != ot.name {
                    out.push(
                        &format!("{what} {}", ot.name),
                        Class::Rename,
                        format!("renamed to {new_name} (same layout, {} bytes)", nt.size),
                    );
                }
                let in_message = old_messages.contains(&ot.name) || new_messages.contains(&nt.name);
                diff_type(&mut out, ot, nt, &r, in_message);
            }
            None => out.push(
                &format!("{what} {}", ot.name),
                Class::Breaking,
                format!("removed ({} bytes)", ot.size),
            ),
        }
    }
    for nt in &new.types {
        if old.type_named(&nt.name).is_none() && !r.types.values().any(|v| v == &nt.name) {
            let what = if nt.is_union { "union" } else { "struct" };
            let since = nt
                .since
                .as_ref()
                .map(|s| format!(", since {s}"))
                .unwrap_or_default();
            out.push(
                &format!("{what} {}", nt.name),
                Class::Additive,
                format!("added ({} bytes{since})", nt.size),
            );
        }
    }
    // Constants are matched by C name (after renames); they are reviewed under their new group.
    let old_consts: BTreeMap<&str, (&crate::model::Group, &crate::model::Value)> = old
        .constants()
        .map(|(g, v)| (v.name.as_str(), (g, v)))
        .collect();
    let new_consts: BTreeMap<&str, (&crate::model::Group, &crate::model::Value)> = new
        .constants()
        .map(|(g, v)| (v.name.as_str(), (g, v)))
        .collect();
    for (name, (og, ov)) in &old_consts {
        let new_name = r.code(name);
        match new_consts.get(new_name.as_str()) {
            Some((ng, nv)) => {
                let sec = format!("consts {}", ng.name);
                if new_name != *name {
                    out.push(
                        &sec,
                        Class::Rename,
                        format!(
                            "{name} renamed to {new_name} (same value {})",
                            show(&nv.value)
                        ),
                    );
                }
                if ov.value != nv.value {
                    out.push(
                        &sec,
                        Class::Breaking,
                        format!("{name} changed: {} -> {}", show(&ov.value), show(&nv.value)),
                    );
                }
                if og.name != ng.name {
                    out.push(
                        &sec,
                        Class::Additive,
                        format!("{name} moved from group {}", og.name),
                    );
                }
                diff_facts(&mut out, &sec, &new_name, ov, nv);
                if ov.rust != nv.rust && new_name == *name {
                    out.push(
                        &sec,
                        Class::Rename,
                        format!("{new_name}: Rust name {} -> {}", ov.rust, nv.rust),
                    );
                }
                diff_gates(
                    &mut out,
                    &sec,
                    &format!("{new_name}: "),
                    Gates::of(&ov.since, &ov.feature, ov.only_in),
                    Gates::of(&nv.since, &nv.feature, nv.only_in),
                );
            }
            None => out.push(
                &format!("consts {}", og.name),
                Class::Breaking,
                format!("{name} removed (was {})", show(&ov.value)),
            ),
        }
    }
    for (name, (ng, nv)) in &new_consts {
        if !old_consts.contains_key(name) && !r.consts.values().any(|v| v == name) {
            out.push(
                &format!("consts {}", ng.name),
                Class::Additive,
                format!("{name} = {} added", show(&nv.value)),
            );
        }
    }
    for og in &old.groups {
        if let Some(ng) = new.group_named(&og.name) {
            diff_gates(
                &mut out,
                &format!("consts {}", ng.name),
                "group: ",
                Gates::of(&og.since, &og.feature, None),
                Gates::of(&ng.since, &ng.feature, None),
            );
        }
    }
    for t in &old.typedefs {
        match new.typedef_named(&t.name) {
            Some(n) if n.ty != r.map(&t.ty) => out.push(
                &format!("typedef {}", t.name),
                Class::Breaking,
                format!("retyped: {} -> {}", t.ty, n.ty),
            ),
            Some(_) => {}
            None => out.push(
                &format!("typedef {}", t.name),
                Class::Breaking,
                "removed".into(),
            ),
        }
    }
    for t in &new.typedefs {
        if old.typedef_named(&t.name).is_none() {
            out.push(
                &format!("typedef {}", t.name),
                Class::Additive,
                format!("added ({})", t.ty),
            );
        }
    }
    // Message shapes, with old structure names spelled as in the new spec.
    let shape = |r: &crate::model::Request, m: &dyn Fn(&str) -> String| {
        let payload = |p: &Option<crate::model::Payload>| match p {
            Some(crate::model::Payload::Struct(s)) => format!(" + {}", m(s)),
            Some(crate::model::Payload::Tlv) => " + tlv".to_string(),
            None => String::new(),
        };
        format!(
            "{}{} -> {}{}{}",
            m(&r.request),
            payload(&r.request_payload),
            m(&r.response),
            r.items
                .as_ref()
                .map(|i| format!(" + N x {}", m(i)))
                .unwrap_or_default(),
            payload(&r.response_payload),
        )
    };
    let same = |s: &str| s.to_string();
    let renamed = |s: &str| r.ty(s);
    for o in &old.requests {
        let sec = format!("request {}", r.code(&o.code));
        match new.requests.iter().find(|n| n.code == r.code(&o.code)) {
            Some(n) => {
                if shape(n, &same) != shape(o, &renamed) || n.item_count != o.item_count {
                    out.push(
                        &sec,
                        Class::Breaking,
                        format!(
                            "message changed: {} -> {}",
                            shape(o, &same),
                            shape(n, &same)
                        ),
                    );
                }
                diff_gates(
                    &mut out,
                    &sec,
                    "",
                    Gates::of(&o.since, &o.feature, None),
                    Gates::of(&n.since, &n.feature, None),
                );
            }
            None => out.push(&sec, Class::Breaking, "removed".into()),
        }
    }
    for n in &new.requests {
        if !old.requests.iter().any(|o| r.code(&o.code) == n.code) {
            out.push(
                &format!("request {}", n.code),
                Class::Additive,
                format!("added: {}", shape(n, &same)),
            );
        }
    }
    for e in &old.events {
        let sec = format!("event {}", r.code(&e.code));
        match new.events.iter().find(|n| n.code == r.code(&e.code)) {
            Some(n) => {
                if n.layout != r.ty(&e.layout) {
                    out.push(
                        &sec,
                        Class::Breaking,
                        format!("layout {} -> {}", e.layout, n.layout),
                    );
                }
                diff_gates(
                    &mut out,
                    &sec,
                    "",
                    Gates::of(&e.since, &e.feature, None),
                    Gates::of(&n.since, &n.feature, None),
                );
            }
            None => out.push(&sec, Class::Breaking, "removed".into()),
        }
    }
    for n in &new.events {
        if !old.events.iter().any(|e| r.code(&e.code) == n.code) {
            out.push(
                &format!("event {}", n.code),
                Class::Additive,
                format!("added ({})", n.layout),
            );
        }
    }
    let argname = |a: &Option<Ty>| {
        a.as_ref()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "none".into())
    };
    for i in &old.ioctls {
        let sec = format!("ioctl {}", r.code(&i.code));
        match new.ioctls.iter().find(|n| n.code == r.code(&i.code)) {
            Some(n) => {
                if n.arg != i.arg.as_ref().map(|t| r.map(t)) {
                    out.push(
                        &sec,
                        Class::Breaking,
                        format!("argument {} -> {}", argname(&i.arg), argname(&n.arg)),
                    );
                }
                if n.direction != i.direction {
                    diff_direction(&mut out, &sec, i.direction, n.direction);
                }
            }
            None => out.push(&sec, Class::Breaking, "removed".into()),
        }
    }
    for n in &new.ioctls {
        if !old.ioctls.iter().any(|i| r.code(&i.code) == n.code) {
            out.push(
                &format!("ioctl {}", n.code),
                Class::Additive,
                "added".into(),
            );
        }
    }
    for i in &old.imports {
        let sec = format!("import {}", i.name);
        match new.imports.iter().find(|n| n.name == i.name) {
            Some(n) => {
                if n.elf != i.elf
                    || n.args
                        .iter()
                        .map(|a| a.1.clone())
                        .ne(i.args.iter().map(|a| r.map(&a.1)))
                    || n.returns != i.returns.as_ref().map(|t| r.map(t))
                    || n.variadic != i.variadic
                {
                    out.push(
                        &sec,
                        Class::Breaking,
                        "signature or ELF type changed".into(),
                    )
                }
                diff_gates(
                    &mut out,
                    &sec,
                    "",
                    Gates::of(&None, &None, i.only_in),
                    Gates::of(&None, &None, n.only_in),
                );
            }
            None => out.push(
                &sec,
                Class::Breaking,
                "removed from the kernel import table".into(),
            ),
        }
    }
    for n in &new.imports {
        if !old.imports.iter().any(|i| i.name == n.name) {
            out.push(
                &format!("import {}", n.name),
                Class::Additive,
                format!("added ({:?})", n.elf),
            );
        }
    }
    out.0
}

/// An ioctl's direction says whether the driver reads the caller's argument (`in`, `inout`)
/// and writes it back (`out`, `inout`). Reading less is harmless to old callers (they still
/// fill it in); reading more reads what old callers leave unset; writing more overwrites what
/// they keep, writing less leaves them without the answer.
fn diff_direction(out: &mut Out, sec: &str, old: Direction, new: Direction) {
    let reads = |d| matches!(d, Direction::In | Direction::Inout);
    let writes = |d| matches!(d, Direction::Out | Direction::Inout);
    let why = if writes(new) && !writes(old) {
        Some("the driver now writes back into the caller's argument")
    } else if writes(old) && !writes(new) {
        Some("the driver no longer writes the answer back")
    } else if reads(new) && !reads(old) {
        Some("the driver now reads what old callers leave unset")
    } else {
        None
    };
    let (class, why) = match why {
        Some(w) => (Class::Breaking, w),
        None => (Class::Additive, "the driver reads less of the argument"),
    };
    out.push(
        sec,
        class,
        format!(
            "direction {} -> {} ({why})",
            direction_name(old),
            direction_name(new)
        ),
    );
}

/// The review as text: changes grouped by section, then a summary line.
pub fn render(title: &str, changes: &[Change]) -> String {
    let mut s = String::new();
    let mut sections: Vec<&str> = Vec::new();
    for c in changes {
        if !sections.contains(&c.section.as_str()) {
            sections.push(&c.section);
        }
    }
    if !changes.is_empty() {
        s.push_str(&format!("== {title}\n"));
    }
    for sec in sections {
        s.push_str(&format!("{sec}\n"));
        for c in changes.iter().filter(|c| c.section == sec) {
            s.push_str(&format!("  {:<9} {}\n", c.class.to_string(), c.text));
        }
    }
    s
}

/// `N breaking, R rename, M additive`.
pub fn summary(changes: &[Change]) -> String {
    let count = |k: Class| changes.iter().filter(|c| c.class == k).count();
    format!(
        "summary: {} breaking, {} rename, {} additive",
        count(Class::Breaking),
        count(Class::Rename),
        count(Class::Additive)
    )
}
