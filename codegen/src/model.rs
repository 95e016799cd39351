//! The resolved model of one spec file: names checked, types parsed, every structure laid out
//! with the x86_64 C rules, and every cross-reference validated. Emitters only ever see this.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::diag::{Diag, Diags, Source};
use crate::schema::{self, ConstKind, Direction, ElfType, Encoding, OnlyIn, StructKind};
use crate::types::{self, Prim, PtrKind, Ty};

/// One spec file, resolved.
#[derive(Debug, Clone)]
pub struct Spec {
    pub path: PathBuf,
    pub name: String,
    pub title: String,
    pub version: String,
    pub source: String,
    pub header: Option<String>,
    /// The success status of control responses: (constant name, group, value).
    pub status_ok: Option<(String, String, i128)>,
    pub typedefs: Vec<Typedef>,
    /// Structures and unions in the order the file declares them.
    pub types: Vec<TypeDef>,
    pub groups: Vec<Group>,
    pub requests: Vec<Request>,
    pub events: Vec<Event>,
    pub ioctls: Vec<Ioctl>,
    pub imports: Vec<Import>,
}

#[derive(Debug, Clone)]
pub struct Typedef {
    pub name: String,
    pub ty: Ty,
    pub doc: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TypeDef {
    pub name: String,
    pub rust: String,
    pub kind: StructKind,
    pub is_union: bool,
    pub doc: String,
    pub since: Option<String>,
    pub feature: Option<String>,
    pub anonymous: bool,
    pub note: Option<String>,
    pub only_in: Option<OnlyIn>,
    pub driver_writes: Vec<String>,
    /// Whether `[abi] header` declares it (`in_header = false`: only the spec does).
    pub in_header: bool,
    pub fields: Vec<Field>,
    pub size: u64,
    pub align: u64,
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
    pub doc: String,
    pub padding: bool,
    pub enum_group: Option<String>,
    pub bits: Option<String>,
    pub since: Option<String>,
    pub feature: Option<String>,
    pub note: Option<String>,
    pub only_in: Option<OnlyIn>,
    pub offset: u64,
    pub size: u64,
    pub align: u64,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub rust: String,
    pub kind: ConstKind,
    /// The C spelling of the value type (`u32`, `status_t`), if any.
    pub c_type: Option<String>,
    /// The primitive the value type resolves to.
    pub prim: Option<Prim>,
    pub doc: String,
    pub since: Option<String>,
    pub feature: Option<String>,
    pub note: Option<String>,
    pub values: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i128),
    Str(String),
}

#[derive(Debug, Clone)]
pub struct Value {
    pub name: String,
    pub value: Val,
    pub rust: String,
    pub doc: String,
    pub since: Option<String>,
    pub feature: Option<String>,
    pub composite: bool,
    pub hz: Option<u32>,
    pub width: Option<u32>,
    pub phys_width: Option<u32>,
    pub encoding: Option<Encoding>,
    pub note: Option<String>,
    pub only_in: Option<OnlyIn>,
    /// Whether `[abi] header` defines it (`in_header = false`: a name of the spec's own).
    pub in_header: bool,
}

impl Value {
    pub fn int(&self) -> Option<i128> {
        match self.value {
            Val::Int(v) => Some(v),
            Val::Str(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Struct(String),
    /// A `virtio_snd_ctl_tlv` header followed by a variable number of value bytes.
    Tlv,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemCount {
    /// The count is a field of the request structure.
    Field(String),
    /// The caller says how many items it expects.
    Argument,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub code: String,
    pub group: String,
    pub value: i128,
    pub rust: String,
    pub request: String,
    pub request_payload: Option<Payload>,
    pub response: String,
    pub response_payload: Option<Payload>,
    pub items: Option<String>,
    pub item_count: Option<ItemCount>,
    pub feature: Option<String>,
    pub since: Option<String>,
    pub doc: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub code: String,
    pub group: String,
    pub value: i128,
    pub rust: String,
    pub layout: String,
    pub data: Option<String>,
    pub feature: Option<String>,
    pub since: Option<String>,
    pub doc: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Ioctl {
    pub code: String,
    pub group: String,
    pub value: i128,
    pub rust: String,
    pub arg: Option<Ty>,
    pub direction: Direction,
    pub doc: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Import {
    pub name: String,
    pub elf: ElfType,
    pub returns: Option<Ty>,
    pub args: Vec<(String, Ty)>,
    pub variadic: bool,
    pub ty: Option<Ty>,
    pub only_in: Option<OnlyIn>,
    pub note: Option<String>,
    pub doc: String,
}

/// `virtio_snd_pcm_info` with `virtio_snd_` stripped becomes `PcmInfo`.
pub fn camel(c_name: &str, strip: &[String]) -> String {
    let mut s = c_name;
    for p in strip {
        if let Some(rest) = s.strip_prefix(p.as_str()) {
            if !rest.is_empty() {
                s = rest;
                break;
            }
        }
    }
    let mut out = String::new();
    for part in s.split('_').filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_uppercase());
            out.push_str(&chars.as_str().to_ascii_lowercase());
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'V');
    }
    out
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn parse_int_text(s: &str) -> Option<i128> {
    let t = s.trim().replace('_', "");
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r.to_string()),
        None => (false, t),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i128::from_str_radix(h, 16).ok()?
    } else {
        t.parse::<i128>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Layouts are computed on demand, memoised, with cycle detection.
struct Layouts<'a> {
    typedefs: &'a HashMap<String, Ty>,
    decls: &'a HashMap<String, (&'a schema::Struct, bool, StructKind)>,
    done: HashMap<String, (u64, u64)>,
    visiting: HashSet<String>,
}

impl Layouts<'_> {
    fn of(&mut self, ty: &Ty) -> Result<(u64, u64), String> {
        match ty {
            Ty::Void => Err("`void` has no size (use it behind a pointer)".into()),
            Ty::Prim(p) => Ok((p.size(), p.size())),
            Ty::Ptr(..) | Ty::Fn { .. } => Ok((8, 8)),
            Ty::Array(e, n) => {
                let (s, a) = self.of(e)?;
                Ok((s * n, a))
            }
            Ty::Named(n) => {
                if let Some(t) = self.typedefs.get(n) {
                    let t = t.clone();
                    return self.of(&t);
                }
                self.named(n)
            }
        }
    }

    fn named(&mut self, n: &str) -> Result<(u64, u64), String> {
        if let Some(l) = self.done.get(n) {
            return Ok(*l);
        }
        let Some(&(decl, is_union, kind)) = self.decls.get(n) else {
            return Err(format!("unknown type `{n}`"));
        };
        if kind == StructKind::Opaque {
            return Err(format!(
                "`{n}` is opaque and can only be used behind a pointer"
            ));
        }
        if !self.visiting.insert(n.to_string()) {
            return Err(format!("`{n}` contains itself"));
        }
        let mut size = 0u64;
        let mut align = 1u64;
        for f in &decl.fields {
            let ty =
                types::parse(f.get_ref().ty.get_ref()).map_err(|e| format!("in `{n}`: {e}"))?;
            let (s, a) = self.of(&ty)?;
            align = align.max(a);
            if is_union {
                size = size.max(s);
            } else {
                size = size.div_ceil(a) * a + s;
            }
        }
        size = size.div_ceil(align) * align;
        self.visiting.remove(n);
        self.done.insert(n.to_string(), (size, align));
        Ok((size, align))
    }
}

struct Builder<'a> {
    src: &'a Source,
    diags: Vec<Diag>,
}

impl Builder<'_> {
    fn err(&mut self, span: Range<usize>, key: impl Into<String>, msg: impl Into<String>) {
        self.diags.push(self.src.diag(span, key, msg));
    }
}

/// Parses and resolves one spec file. `display_path` is the path used in messages.
pub fn load(path: &Path, display_path: &Path) -> Result<Spec, Diags> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diags(vec![Diag {
            file: display_path.to_path_buf(),
            line: 0,
            column: 0,
            key: "file".into(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(&text, display_path)
}

/// Parses and resolves spec text.
pub fn parse(text: &str, display_path: &Path) -> Result<Spec, Diags> {
    // A `todo` marker left by `gen --import` stops everything else: each names what is
    // missing, and what it stands in for is not meant to be read yet.
    let markers = crate::marker::find(text, display_path);
    if !markers.is_empty() {
        return Err(Diags(markers));
    }
    let src = Source::new(display_path, text);
    let file: schema::File = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| src.position(s.start)).unwrap_or((0, 0));
        Diags(vec![Diag {
            file: display_path.to_path_buf(),
            line,
            column,
            key: "toml".into(),
            message: e.message().trim().to_string(),
        }])
    })?;
    let mut b = Builder {
        src: &src,
        diags: Vec::new(),
    };
    let spec = build(&mut b, &file, display_path);
    if b.diags.is_empty() {
        Ok(spec)
    } else {
        b.diags.sort_by_key(|d| (d.line, d.column));
        Err(Diags(b.diags))
    }
}

fn build(b: &mut Builder<'_>, file: &schema::File, path: &Path) -> Spec {
    let abi = &file.abi;
    if !is_ident(abi.name.get_ref()) {
        b.err(abi.name.span(), "abi.name", "must be a Rust identifier");
    }
    let strip = &abi.strip_prefix;

    // --- typedefs
    let mut typedef_map: HashMap<String, Ty> = HashMap::new();
    let mut typedefs = Vec::new();
    let mut type_names: HashMap<String, Range<usize>> = HashMap::new();
    for td in &file.typedef {
        let t = td.get_ref();
        let name = t.name.get_ref().clone();
        let key = format!("typedef {name}");
        if Prim::from_name(&name).is_some() || !is_ident(&name) {
            b.err(t.name.span(), &key, "not a valid typedef name");
        }
        if type_names.insert(name.clone(), t.name.span()).is_some() {
            b.err(t.name.span(), &key, "name declared twice");
        }
        match types::parse(t.ty.get_ref()) {
            Ok(ty) => {
                typedef_map.insert(name.clone(), ty.clone());
                typedefs.push(Typedef {
                    name,
                    ty,
                    doc: t.doc.clone(),
                    note: t.note.clone(),
                });
            }
            Err(e) => b.err(t.ty.span(), format!("{key}, key type"), e),
        }
    }

    // --- struct and union declarations, in file order
    let mut decl_list: Vec<(&toml::Spanned<schema::Struct>, bool)> = file
        .structs
        .iter()
        .map(|s| (s, false))
        .chain(file.unions.iter().map(|u| (u, true)))
        .collect();
    decl_list.sort_by_key(|(s, _)| s.span().start);
    let mut decls: HashMap<String, (&schema::Struct, bool, StructKind)> = HashMap::new();
    for (s, is_union) in &decl_list {
        let d = s.get_ref();
        let name = d.name.get_ref().clone();
        let what = if *is_union { "union" } else { "struct" };
        if !is_ident(&name) {
            b.err(
                d.name.span(),
                format!("{what} {name}"),
                "not a valid C name",
            );
        }
        if !d.in_header && abi.header.is_none() {
            b.err(
                d.name.span(),
                format!("{what} {name}, key in_header"),
                "in_header = false has no effect: this spec records no [abi] header",
            );
        }
        if type_names.insert(name.clone(), d.name.span()).is_some() {
            b.err(
                d.name.span(),
                format!("{what} {name}"),
                "name declared twice",
            );
        }
        decls.insert(name, (d, *is_union, d.kind.unwrap_or(abi.default_kind)));
    }

    // --- constant groups (needed before fields, which refer to them)
    let mut groups = Vec::new();
    let mut const_names: HashMap<String, (String, i128)> = HashMap::new();
    let mut seen_const: HashSet<String> = HashSet::new();
    let mut group_names: HashSet<String> = HashSet::new();
    for g in &file.consts {
        if abi.header.is_none() {
            let gname = g.get_ref().name.get_ref();
            for v in g.get_ref().values.iter().filter(|v| !v.get_ref().in_header) {
                let vname = v.get_ref().name.get_ref();
                b.err(
                    v.get_ref().name.span(),
                    format!("consts {gname}, {vname}, key in_header"),
                    "in_header = false has no effect: this spec records no [abi] header",
                );
            }
        }
        groups.push(build_group(
            b,
            g,
            &typedef_map,
            &mut const_names,
            &mut seen_const,
            &mut group_names,
        ));
    }
    let group_by_name: HashMap<&str, &Group> =
        groups.iter().map(|g| (g.name.as_str(), g)).collect();

    // --- layouts and fields
    let mut layouts = Layouts {
        typedefs: &typedef_map,
        decls: &decls,
        done: HashMap::new(),
        visiting: HashSet::new(),
    };
    let mut types_out = Vec::new();
    let mut rust_type_names: HashMap<String, String> = HashMap::new();
    for (s, is_union) in &decl_list {
        let d = s.get_ref();
        let name = d.name.get_ref().clone();
        let what = if *is_union { "union" } else { "struct" };
        let kind = d.kind.unwrap_or(abi.default_kind);
        let rust = d.rust.clone().unwrap_or_else(|| camel(&name, strip));
        if !is_ident(&rust) {
            b.err(
                d.name.span(),
                format!("{what} {name}, key rust"),
                format!("`{rust}` is not a Rust identifier"),
            );
        }
        if let Some(other) = rust_type_names.insert(rust.clone(), name.clone()) {
            b.err(
                d.name.span(),
                format!("{what} {name}"),
                format!("Rust name `{rust}` is also used by `{other}`"),
            );
        }
        check_feature(
            b,
            &d.feature,
            &const_names,
            d.name.span(),
            &format!("{what} {name}"),
        );
        if kind == StructKind::Opaque && !d.fields.is_empty() {
            b.err(
                d.name.span(),
                format!("{what} {name}"),
                "an opaque type has no fields",
            );
        }
        if kind != StructKind::Opaque && d.fields.is_empty() {
            b.err(
                d.name.span(),
                format!("{what} {name}"),
                "has no fields (C has no empty structs; use kind = \"opaque\")",
            );
        }
        let mut fields = Vec::new();
        let mut field_names = HashSet::new();
        let mut offset = 0u64;
        let mut align = 1u64;
        let mut size_acc = 0u64;
        let mut ok = true;
        for f in &d.fields {
            let fr = f.get_ref();
            let fname = fr.name.get_ref().clone();
            let key = format!("{what} {name}, field {fname}");
            if !is_ident(&fname) {
                b.err(fr.name.span(), &key, "not a valid field name");
            }
            if !field_names.insert(fname.clone()) {
                b.err(fr.name.span(), &key, "field declared twice");
            }
            check_feature(b, &fr.feature, &const_names, fr.name.span(), &key);
            let ty = match types::parse(fr.ty.get_ref()) {
                Ok(t) => t,
                Err(e) => {
                    b.err(fr.ty.span(), format!("{key}, key type"), e);
                    ok = false;
                    continue;
                }
            };
            if let Err(e) = check_type_use(&ty, kind, &typedef_map, &decls) {
                b.err(fr.ty.span(), format!("{key}, key type"), e);
                ok = false;
                continue;
            }
            let (fsize, falign) = match layouts.of(&ty) {
                Ok(l) => l,
                Err(e) => {
                    b.err(fr.ty.span(), format!("{key}, key type"), e);
                    ok = false;
                    continue;
                }
            };
            for (grp, keyname) in [(&fr.enum_group, "enum"), (&fr.bits, "bits")] {
                if let Some(gname) = grp {
                    if !group_by_name.contains_key(gname.get_ref().as_str()) {
                        b.err(
                            gname.span(),
                            format!("{key}, key {keyname}"),
                            format!("no constant group named `{}`", gname.get_ref()),
                        );
                    }
                }
            }
            if fr.padding
                && !matches!(&ty, Ty::Array(e, _) if **e == Ty::Prim(Prim::U8))
                && ty != Ty::Prim(Prim::U8)
            {
                b.err(
                    fr.ty.span(),
                    format!("{key}, key type"),
                    "a padding field must be `u8` or `[u8; N]`",
                );
            }
            let foff = if *is_union {
                0
            } else {
                let aligned = offset.div_ceil(falign) * falign;
                if aligned != offset && kind == StructKind::Wire {
                    b.err(
                        fr.name.span(),
                        &key,
                        format!(
                            "the C compiler would insert {} byte(s) of padding before this field at offset {offset}; declare them as a `padding = true` field",
                            aligned - offset
                        ),
                    );
                }
                aligned
            };
            align = align.max(falign);
            if *is_union {
                size_acc = size_acc.max(fsize);
            } else {
                offset = foff + fsize;
                size_acc = offset;
            }
            fields.push(Field {
                name: fname,
                ty,
                doc: fr.doc.clone(),
                padding: fr.padding,
                enum_group: fr.enum_group.as_ref().map(|g| g.get_ref().clone()),
                bits: fr.bits.as_ref().map(|g| g.get_ref().clone()),
                since: fr.since.clone(),
                feature: fr.feature.clone(),
                note: fr.note.clone(),
                only_in: fr.only_in,
                offset: foff,
                size: fsize,
                align: falign,
            });
        }
        let size = size_acc.div_ceil(align) * align;
        if ok && kind == StructKind::Wire && !*is_union && size != size_acc {
            b.err(
                d.name.span(),
                format!("{what} {name}"),
                format!("the C compiler would add {} byte(s) of tail padding after offset {size_acc}; declare them as a `padding = true` field", size - size_acc),
            );
        }
        let mut driver_writes = Vec::new();
        if let Some(dw) = &d.driver_writes {
            if kind != StructKind::User {
                b.err(
                    dw.span(),
                    format!("{what} {name}, key driver_writes"),
                    "only `user` structures are written back to a caller",
                );
            }
            for w in dw.get_ref() {
                if !field_names.contains(w) {
                    b.err(
                        dw.span(),
                        format!("{what} {name}, key driver_writes"),
                        format!("no field named `{w}`"),
                    );
                }
                driver_writes.push(w.clone());
            }
        }
        types_out.push(TypeDef {
            name,
            rust,
            kind,
            is_union: *is_union,
            doc: d.doc.clone(),
            since: d.since.clone(),
            feature: d.feature.clone(),
            anonymous: d.anonymous,
            note: d.note.clone(),
            only_in: d.only_in,
            driver_writes,
            in_header: d.in_header,
            fields,
            size,
            align,
        });
    }
    let type_by_name: HashMap<&str, &TypeDef> =
        types_out.iter().map(|t| (t.name.as_str(), t)).collect();

    // --- requests
    let mut requests = Vec::new();
    let mut rust_variants = HashSet::new();
    for r in &file.request {
        let rr = r.get_ref();
        let code = rr.code.get_ref().clone();
        let key = format!("request {code}");
        let Some((group, value, rust)) = lookup_code(b, &rr.code, &groups, &key) else {
            continue;
        };
        if !rust_variants.insert(rust.clone()) {
            b.err(rr.code.span(), &key, "request described twice");
        }
        check_feature(b, &rr.feature, &const_names, rr.code.span(), &key);
        let mut wire = |s: &toml::Spanned<String>, k: &str| -> bool {
            match type_by_name.get(s.get_ref().as_str()) {
                Some(t) if t.kind == StructKind::Wire => true,
                Some(_) => {
                    b.err(
                        s.span(),
                        format!("{key}, key {k}"),
                        "must be a wire structure",
                    );
                    false
                }
                None => {
                    b.err(
                        s.span(),
                        format!("{key}, key {k}"),
                        format!("no structure named `{}`", s.get_ref()),
                    );
                    false
                }
            }
        };
        wire(&rr.request, "request");
        wire(&rr.response, "response");
        let mut payload = |p: &Option<toml::Spanned<String>>, k: &str| -> Option<Payload> {
            let p = p.as_ref()?;
            if p.get_ref() == "tlv" {
                return Some(Payload::Tlv);
            }
            wire(p, k);
            Some(Payload::Struct(p.get_ref().clone()))
        };
        let request_payload = payload(&rr.request_payload, "request_payload");
        let response_payload = payload(&rr.response_payload, "response_payload");
        let items = rr.items.as_ref().map(|i| {
            wire(i, "items");
            i.get_ref().clone()
        });
        let item_count = match (&rr.items, &rr.item_count) {
            (Some(_), None) => {
                b.err(rr.code.span(), &key, "`items` needs `item_count`");
                None
            }
            (None, Some(c)) => {
                b.err(
                    c.span(),
                    format!("{key}, key item_count"),
                    "`item_count` without `items`",
                );
                None
            }
            (None, None) => None,
            (Some(_), Some(c)) if c.get_ref() == "argument" => Some(ItemCount::Argument),
            (Some(_), Some(c)) => {
                let has = type_by_name
                    .get(rr.request.get_ref().as_str())
                    .is_some_and(|t| t.fields.iter().any(|f| &f.name == c.get_ref()));
                if !has {
                    b.err(
                        c.span(),
                        format!("{key}, key item_count"),
                        format!(
                            "`{}` is neither \"argument\" nor a field of `{}`",
                            c.get_ref(),
                            rr.request.get_ref()
                        ),
                    );
                }
                Some(ItemCount::Field(c.get_ref().clone()))
            }
        };
        if items.is_some() && response_payload.is_some() {
            b.err(
                rr.code.span(),
                &key,
                "a response has either items or a payload, not both",
            );
        }
        requests.push(Request {
            code,
            group,
            value,
            rust,
            request: rr.request.get_ref().clone(),
            request_payload,
            response: rr.response.get_ref().clone(),
            response_payload,
            items,
            item_count,
            feature: rr.feature.clone(),
            since: rr.since.clone(),
            doc: rr.doc.clone(),
            note: rr.note.clone(),
        });
    }

    // --- events
    let mut events = Vec::new();
    let mut event_variants = HashSet::new();
    for e in &file.event {
        let er = e.get_ref();
        let code = er.code.get_ref().clone();
        let key = format!("event {code}");
        let Some((group, value, rust)) = lookup_code(b, &er.code, &groups, &key) else {
            continue;
        };
        if !event_variants.insert(rust.clone()) {
            b.err(er.code.span(), &key, "event described twice");
        }
        check_feature(b, &er.feature, &const_names, er.code.span(), &key);
        match type_by_name.get(er.layout.get_ref().as_str()) {
            Some(t) if t.kind == StructKind::Wire => {
                if er.data.is_some() && !t.fields.iter().any(|f| f.name == "data") {
                    b.err(
                        er.layout.span(),
                        format!("{key}, key data"),
                        format!("`{}` has no `data` field to name", t.name),
                    );
                }
                if t.fields.first().map(|f| f.size) != Some(4) {
                    b.err(
                        er.layout.span(),
                        format!("{key}, key struct"),
                        "an event structure starts with its 4-byte code",
                    );
                }
            }
            _ => b.err(
                er.layout.span(),
                format!("{key}, key struct"),
                format!("no wire structure named `{}`", er.layout.get_ref()),
            ),
        }
        if let Some(d) = &er.data {
            if !is_ident(d) {
                b.err(
                    er.code.span(),
                    format!("{key}, key data"),
                    "not a valid name",
                );
            }
        }
        events.push(Event {
            code,
            group,
            value,
            rust,
            layout: er.layout.get_ref().clone(),
            data: er.data.clone(),
            feature: er.feature.clone(),
            since: er.since.clone(),
            doc: er.doc.clone(),
            note: er.note.clone(),
        });
    }

    // --- ioctls
    let mut ioctls = Vec::new();
    let mut ioctl_variants = HashSet::new();
    for i in &file.ioctl {
        let ir = i.get_ref();
        let code = ir.code.get_ref().clone();
        let key = format!("ioctl {code}");
        let Some((group, value, rust)) = lookup_code(b, &ir.code, &groups, &key) else {
            continue;
        };
        if !ioctl_variants.insert(rust.clone()) {
            b.err(ir.code.span(), &key, "opcode described twice");
        }
        let arg = match &ir.arg {
            None => None,
            Some(a) => match types::parse(a.get_ref()) {
                Ok(t) => {
                    if let Err(e) = check_type_use(&t, StructKind::User, &typedef_map, &decls)
                        .and_then(|_| layouts.of(&t).map(|_| ()))
                    {
                        b.err(a.span(), format!("{key}, key arg"), e);
                    }
                    Some(t)
                }
                Err(e) => {
                    b.err(a.span(), format!("{key}, key arg"), e);
                    None
                }
            },
        };
        if (ir.direction == Direction::None) != ir.arg.is_none() {
            b.err(
                ir.code.span(),
                &key,
                "`direction = \"none\"` exactly when there is no `arg`",
            );
        }
        ioctls.push(Ioctl {
            code,
            group,
            value,
            rust,
            arg,
            direction: ir.direction,
            doc: ir.doc.clone(),
            note: ir.note.clone(),
        });
    }

    // --- imports
    let mut imports = Vec::new();
    let mut import_names = HashSet::new();
    for i in &file.import {
        let ir = i.get_ref();
        let name = ir.name.get_ref().clone();
        let key = format!("import {name}");
        if !is_ident(&name) {
            b.err(ir.name.span(), &key, "not a valid symbol name");
        }
        if !import_names.insert(name.clone()) {
            b.err(ir.name.span(), &key, "symbol listed twice");
        }
        let mut ty_of = |s: &toml::Spanned<String>, k: &str, allow_void: bool| -> Option<Ty> {
            match types::parse(s.get_ref()) {
                Ok(t) => {
                    let res = check_type_use(&t, StructKind::Kernel, &typedef_map, &decls)
                        .and_then(|_| {
                            if allow_void && t == Ty::Void {
                                Ok(())
                            } else {
                                layouts.of(&t).map(|_| ())
                            }
                        });
                    if let Err(e) = res {
                        b.err(s.span(), format!("{key}, key {k}"), e);
                    }
                    Some(t)
                }
                Err(e) => {
                    b.err(s.span(), format!("{key}, key {k}"), e);
                    None
                }
            }
        };
        let returns = ir
            .returns
            .as_ref()
            .and_then(|r| ty_of(r, "returns", true))
            .filter(|t| *t != Ty::Void);
        let args: Vec<(String, Ty)> = ir
            .args
            .iter()
            .filter_map(|a| {
                ty_of(&a.get_ref().ty, "args", false).map(|t| (a.get_ref().name.clone(), t))
            })
            .collect();
        let ty = ir.ty.as_ref().and_then(|t| ty_of(t, "type", false));
        // C passes an array parameter as a pointer and cannot return one: the declaration
        // would not say what the call does.
        let array_at = ir
            .returns
            .iter()
            .filter(|r| matches!(types::parse(r.get_ref()), Ok(Ty::Array(..))))
            .map(|r| (r.span(), "returns"))
            .chain(
                ir.args
                    .iter()
                    .filter(|a| matches!(types::parse(a.get_ref().ty.get_ref()), Ok(Ty::Array(..))))
                    .map(|a| (a.get_ref().ty.span(), "args")),
            )
            .next();
        if let Some((span, k)) = array_at {
            b.err(
                span,
                format!("{key}, key {k}"),
                "an array is passed as a pointer in C: write `ptr<T>` or `const_ptr<T>`",
            );
        }
        match ir.elf {
            ElfType::Func => {
                if ir.ty.is_some() {
                    b.err(
                        ir.name.span(),
                        &key,
                        "a FUNC import has `returns` and `args`, not `type`",
                    );
                }
            }
            ElfType::Object => {
                if ir.ty.is_none() || ir.returns.is_some() || !ir.args.is_empty() || ir.variadic {
                    b.err(
                        ir.name.span(),
                        &key,
                        "an OBJECT import has a `type` and no `returns`, `args` or `variadic`",
                    );
                }
            }
        }
        imports.push(Import {
            name,
            elf: ir.elf,
            returns,
            args,
            variadic: ir.variadic,
            ty,
            only_in: ir.only_in,
            note: ir.note.clone(),
            doc: ir.doc.clone(),
        });
    }

    let status_ok = match &abi.status_ok {
        Some(s) => {
            lookup_code(b, s, &groups, "abi.status_ok").map(|(g, v, _)| (s.get_ref().clone(), g, v))
        }
        None => {
            if let Some(r) = file.request.first() {
                b.err(
                    r.span(),
                    "request",
                    "control requests need `abi.status_ok` to know which status means success",
                );
            }
            None
        }
    };
    Spec {
        path: path.to_path_buf(),
        status_ok,
        name: abi.name.get_ref().clone(),
        title: abi.title.clone(),
        version: abi.version.clone(),
        source: abi.source.clone(),
        header: abi.header.clone(),
        typedefs,
        types: types_out,
        groups,
        requests,
        events,
        ioctls,
        imports,
    }
}

fn check_feature(
    b: &mut Builder<'_>,
    feature: &Option<String>,
    consts: &HashMap<String, (String, i128)>,
    span: Range<usize>,
    key: &str,
) {
    if let Some(f) = feature {
        if !consts.contains_key(f) {
            b.err(
                span,
                format!("{key}, key feature"),
                format!("no constant named `{f}`"),
            );
        }
    }
}

fn lookup_code(
    b: &mut Builder<'_>,
    code: &toml::Spanned<String>,
    groups: &[Group],
    key: &str,
) -> Option<(String, i128, String)> {
    for g in groups {
        if let Some(v) = g.values.iter().find(|v| &v.name == code.get_ref()) {
            if g.kind != ConstKind::Enum {
                b.err(
                    code.span(),
                    format!("{key}, key code"),
                    format!(
                        "`{}` is in group `{}`, which is not an enum",
                        v.name, g.name
                    ),
                );
                return None;
            }
            return Some((g.name.clone(), v.int().unwrap_or_default(), v.rust.clone()));
        }
    }
    b.err(
        code.span(),
        format!("{key}, key code"),
        format!("no constant named `{}`", code.get_ref()),
    );
    None
}

/// Which type forms each structure kind may contain.
fn check_type_use(
    ty: &Ty,
    kind: StructKind,
    typedefs: &HashMap<String, Ty>,
    decls: &HashMap<String, (&schema::Struct, bool, StructKind)>,
) -> Result<(), String> {
    match ty {
        Ty::Void => Ok(()),
        Ty::Prim(p) => {
            if kind == StructKind::Wire && !p.is_wire() {
                Err(format!(
                    "a wire structure uses only u8 and le16/le32/le64, not `{}`",
                    p.name()
                ))
            } else {
                Ok(())
            }
        }
        Ty::Array(e, _) => check_type_use(e, kind, typedefs, decls),
        Ty::Ptr(pk, inner) => {
            match (kind, pk) {
                (StructKind::Wire, _) => {
                    return Err("a wire structure cannot hold a pointer".into())
                }
                (StructKind::User, PtrKind::Mut | PtrKind::Const) => {
                    return Err("a user structure holds user pointers: write `user_ptr<T>`".into())
                }
                (StructKind::Kernel, PtrKind::User) => {
                    return Err("`user_ptr` belongs in user structures".into())
                }
                _ => {}
            }
            // Behind a pointer anything goes, as long as the name exists.
            check_names(inner, typedefs, decls)
        }
        Ty::Fn { args, ret, .. } => {
            if kind != StructKind::Kernel {
                return Err("function pointers belong in kernel structures".into());
            }
            for a in args.iter().chain(ret.iter().map(|r| &**r)) {
                check_names(a, typedefs, decls)?;
            }
            Ok(())
        }
        Ty::Named(n) => {
            if let Some(t) = typedefs.get(n) {
                return check_type_use(t, kind, typedefs, decls);
            }
            match decls.get(n) {
                None => Err(format!("unknown type `{n}`")),
                Some((_, _, k)) if kind == StructKind::Wire && *k != StructKind::Wire => {
                    Err(format!("`{n}` is not a wire structure"))
                }
                Some(_) => Ok(()),
            }
        }
    }
}

fn check_names(
    ty: &Ty,
    typedefs: &HashMap<String, Ty>,
    decls: &HashMap<String, (&schema::Struct, bool, StructKind)>,
) -> Result<(), String> {
    match ty {
        Ty::Void | Ty::Prim(_) => Ok(()),
        Ty::Array(e, _) | Ty::Ptr(_, e) => check_names(e, typedefs, decls),
        Ty::Fn { args, ret, .. } => {
            for a in args.iter().chain(ret.iter().map(|r| &**r)) {
                check_names(a, typedefs, decls)?;
            }
            Ok(())
        }
        Ty::Named(n) => {
            if typedefs.contains_key(n) || decls.contains_key(n) {
                Ok(())
            } else {
                Err(format!("unknown type `{n}`"))
            }
        }
    }
}

fn resolve_prim(ty: &Ty, typedefs: &HashMap<String, Ty>) -> Option<Prim> {
    match ty {
        Ty::Prim(p) => Some(*p),
        Ty::Named(n) => resolve_prim(typedefs.get(n)?, typedefs),
        _ => None,
    }
}

fn build_group(
    b: &mut Builder<'_>,
    g: &toml::Spanned<schema::ConstGroup>,
    typedefs: &HashMap<String, Ty>,
    const_names: &mut HashMap<String, (String, i128)>,
    seen_const: &mut HashSet<String>,
    group_names: &mut HashSet<String>,
) -> Group {
    let gr = g.get_ref();
    let gname = gr.name.get_ref().clone();
    let gkey = format!("consts {gname}");
    if !is_ident(&gname) {
        b.err(gr.name.span(), &gkey, "not a valid group name");
    }
    if !group_names.insert(gname.clone()) {
        b.err(gr.name.span(), &gkey, "group declared twice");
    }
    let rust = gr.rust.clone().unwrap_or_else(|| camel(&gname, &[]));
    if !is_ident(&rust) {
        b.err(
            gr.name.span(),
            format!("{gkey}, key rust"),
            format!("`{rust}` is not a Rust identifier"),
        );
    }
    let (c_type, prim) = match (&gr.ty, gr.kind) {
        (Some(t), ConstKind::Strings) => {
            b.err(
                t.span(),
                format!("{gkey}, key type"),
                "a strings group has no value type",
            );
            (None, None)
        }
        (None, ConstKind::Strings) => (None, None),
        (None, _) => {
            b.err(gr.name.span(), &gkey, "a numeric group needs `type`");
            (None, None)
        }
        (Some(t), _) => match types::parse(t.get_ref())
            .ok()
            .and_then(|ty| resolve_prim(&ty, typedefs))
        {
            Some(p) if p.is_integer() => (Some(t.get_ref().clone()), Some(p)),
            _ => {
                b.err(
                    t.span(),
                    format!("{gkey}, key type"),
                    format!("`{}` is not an integer type", t.get_ref()),
                );
                (None, None)
            }
        },
    };
    // Default Rust names drop the words every value name in the group shares.
    let names: Vec<&str> = gr
        .values
        .iter()
        .map(|v| v.get_ref().name.get_ref().as_str())
        .collect();
    let common = common_word_prefix(&names);
    let mut values: Vec<Value> = Vec::new();
    let mut by_value: BTreeMap<i128, String> = BTreeMap::new();
    let mut rust_names = HashSet::new();
    for v in &gr.values {
        let vr = v.get_ref();
        let name = vr.name.get_ref().clone();
        let key = format!("consts {gname}, value {name}");
        if !is_ident(&name) {
            b.err(vr.name.span(), &key, "not a valid C name");
        }
        if !seen_const.insert(name.clone()) {
            b.err(vr.name.span(), &key, "constant declared twice in this file");
        }
        let val = match (vr.value.get_ref(), gr.kind) {
            (schema::Value::Str(s), ConstKind::Strings) => Val::Str(s.clone()),
            (schema::Value::Int(_), ConstKind::Strings) => {
                b.err(
                    vr.value.span(),
                    format!("{key}, key value"),
                    "a strings group holds strings",
                );
                continue;
            }
            (schema::Value::Int(i), _) => Val::Int(*i as i128),
            (schema::Value::Str(s), _) => match parse_int_text(s) {
                Some(i) => Val::Int(i),
                None => {
                    b.err(
                        vr.value.span(),
                        format!("{key}, key value"),
                        format!("`{s}` is not an integer"),
                    );
                    continue;
                }
            },
        };
        if let (Val::Int(i), Some(p)) = (&val, prim) {
            let (lo, hi) = p.range().unwrap_or((i128::MIN, i128::MAX));
            if *i < lo || *i > hi {
                b.err(
                    vr.value.span(),
                    format!("{key}, key value"),
                    format!("{i} does not fit `{}`", p.name()),
                );
            }
            match gr.kind {
                ConstKind::Enum | ConstKind::Bit => {
                    if let Some(other) = by_value.insert(*i, name.clone()) {
                        b.err(
                            vr.value.span(),
                            format!("{key}, key value"),
                            format!("duplicate code {i:#x}: `{other}` has it too"),
                        );
                    }
                    if gr.kind == ConstKind::Bit && !(0..64).contains(i) {
                        b.err(
                            vr.value.span(),
                            format!("{key}, key value"),
                            "a bit number is 0..=63",
                        );
                    }
                }
                ConstKind::Flags => {
                    if *i < 0 {
                        b.err(
                            vr.value.span(),
                            format!("{key}, key value"),
                            "a flag mask cannot be negative",
                        );
                    } else if !vr.composite {
                        for other in values.iter().filter(|o| !o.composite) {
                            if let Some(o) = other.int() {
                                if o & i != 0 {
                                    b.err(vr.value.span(), format!("{key}, key value"), format!("mask {i:#x} overlaps `{}` ({o:#x}); mark a combined mask `composite = true`", other.name));
                                }
                            }
                        }
                    }
                }
                ConstKind::Values | ConstKind::Strings => {}
            }
            if let Val::Int(i) = val {
                const_names.insert(name.clone(), (gname.clone(), i));
            }
        } else if let Val::Str(_) = val {
            const_names.insert(name.clone(), (gname.clone(), 0));
        }
        let vrust = vr
            .rust
            .clone()
            .unwrap_or_else(|| camel(name.get(common..).unwrap_or(&name), &[]));
        if !is_ident(&vrust) {
            b.err(
                vr.name.span(),
                format!("{key}, key rust"),
                format!("`{vrust}` is not a Rust identifier"),
            );
        }
        if !rust_names.insert(vrust.clone()) {
            b.err(
                vr.name.span(),
                format!("{key}, key rust"),
                format!("Rust name `{vrust}` used twice in the group"),
            );
        }
        if vr.hz.is_some()
            && !matches!(gr.kind, ConstKind::Bit | ConstKind::Flags | ConstKind::Enum)
        {
            b.err(
                vr.name.span(),
                format!("{key}, key hz"),
                "`hz` belongs to a rate group",
            );
        }
        if vr.phys_width.is_some() != vr.width.is_some() {
            b.err(
                vr.name.span(),
                &key,
                "`width` and `phys_width` come together",
            );
        }
        if vr.encoding.is_some() && vr.width.is_none() {
            b.err(
                vr.name.span(),
                format!("{key}, key encoding"),
                "`encoding` belongs to a sample format with a `width`",
            );
        }
        if let (Some(w), Some(p)) = (vr.width, vr.phys_width) {
            if w > p {
                b.err(
                    vr.name.span(),
                    &key,
                    "a sample cannot be wider than its container",
                );
            }
        }
        values.push(Value {
            name,
            value: val,
            rust: vrust,
            doc: vr.doc.clone(),
            since: vr.since.clone(),
            feature: vr.feature.clone(),
            composite: vr.composite,
            hz: vr.hz,
            width: vr.width,
            phys_width: vr.phys_width,
            encoding: vr.encoding,
            note: vr.note.clone(),
            only_in: vr.only_in,
            in_header: vr.in_header,
        });
    }
    if values.is_empty() && gr.values.is_empty() {
        b.err(gr.name.span(), &gkey, "a group needs at least one value");
    }
    Group {
        name: gname,
        rust,
        kind: gr.kind,
        c_type,
        prim,
        doc: gr.doc.clone(),
        since: gr.since.clone(),
        feature: gr.feature.clone(),
        note: gr.note.clone(),
        values,
    }
}

/// Length in bytes of the `_`-separated words all names share (never the whole of a name).
fn common_word_prefix(names: &[&str]) -> usize {
    if names.len() < 2 {
        return names
            .first()
            .map(|n| n.rfind('_').map_or(0, |i| i + 1))
            .unwrap_or(0);
    }
    let first = names[0];
    let mut best = 0;
    for (i, _) in first.match_indices('_') {
        let p = &first[..=i];
        if names.iter().all(|n| n.starts_with(p) && n.len() > p.len()) {
            best = i + 1;
        } else {
            break;
        }
    }
    best
}

impl Spec {
    pub fn type_named(&self, name: &str) -> Option<&TypeDef> {
        self.types.iter().find(|t| t.name == name)
    }

    pub fn group_named(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn typedef_named(&self, name: &str) -> Option<&Typedef> {
        self.typedefs.iter().find(|t| t.name == name)
    }

    /// Size and alignment of any resolvable type (after `load` succeeded).
    pub fn layout_of(&self, ty: &Ty) -> Option<(u64, u64)> {
        match ty {
            Ty::Void => None,
            Ty::Prim(p) => Some((p.size(), p.size())),
            Ty::Ptr(..) | Ty::Fn { .. } => Some((8, 8)),
            Ty::Array(e, n) => self.layout_of(e).map(|(s, a)| (s * n, a)),
            Ty::Named(n) => {
                if let Some(t) = self.typedef_named(n) {
                    return self.layout_of(&t.ty);
                }
                self.type_named(n)
                    .filter(|t| t.kind != StructKind::Opaque)
                    .map(|t| (t.size, t.align))
            }
        }
    }

    /// Every integer constant, by C name.
    pub fn constants(&self) -> impl Iterator<Item = (&Group, &Value)> {
        self.groups
            .iter()
            .flat_map(|g| g.values.iter().map(move |v| (g, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_names() {
        assert_eq!(
            camel("virtio_snd_pcm_info", &["virtio_snd_".into()]),
            "PcmInfo"
        );
        assert_eq!(camel("_multi_format", &[]), "MultiFormat");
        assert_eq!(camel("B_SR_44100", &[]), "BSr44100");
        assert_eq!(camel("44100", &[]), "V44100");
    }

    #[test]
    fn common_prefix_is_whole_words() {
        assert_eq!(
            common_word_prefix(&["VIRTIO_SND_S_OK", "VIRTIO_SND_S_BAD_MSG"]),
            "VIRTIO_SND_S_".len()
        );
        assert_eq!(common_word_prefix(&["B_SR_8000", "B_SR_CVSR"]), 5);
        assert_eq!(common_word_prefix(&["A_B", "A_C", "X"]), 0);
    }

    #[test]
    fn parses_hex_strings() {
        assert_eq!(
            parse_int_text("0xffffff0000000000"),
            Some(0xffffff0000000000)
        );
        assert_eq!(parse_int_text("-5"), Some(-5));
        assert_eq!(parse_int_text("x"), None);
    }
}
