//! The differences between a header and the spec that records it, applied to the spec's
//! TOML document in place (comments, order, formatting and every annotation the header
//! cannot give are kept).

use std::collections::{HashMap, HashSet};

use codegen::model::{self, Spec};
use codegen::schema::StructKind;
use codegen::types::{Prim, Ty};
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use super::header::{CType, Const, Field as HField, Header, Type as HType};

/// What the import did, for the user.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per addition or change.
    pub changes: Vec<String>,
    /// Items the spec has and the header no longer declares.
    pub removed: Vec<String>,
    /// Names of removed items that were kept (no `--allow-removal`).
    pub kept: HashSet<String>,
}

/// The placeholder of a required key whose value the header cannot give.
pub const UNKNOWN: &str = "?";

pub struct Import<'a> {
    pub doc: DocumentMut,
    pub spec: &'a Spec,
    pub header: &'a Header,
    pub allow_removal: bool,
    pub report: Report,
    /// Constant name -> group, for the spec's constants and those added so far.
    group_of: HashMap<String, String>,
    header_name: String,
}

impl<'a> Import<'a> {
    pub fn new(doc: DocumentMut, spec: &'a Spec, header: &'a Header, allow_removal: bool) -> Self {
        let group_of = spec
            .constants()
            .map(|(g, v)| (v.name.clone(), g.name.clone()))
            .collect();
        let header_name = header
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        Import {
            doc,
            spec,
            header,
            allow_removal,
            report: Report::default(),
            group_of,
            header_name,
        }
    }

    pub fn run(&mut self) -> Result<(), String> {
        self.constants()?;
        self.types()?;
        Ok(())
    }

    fn at(&self, pos: usize) -> String {
        format!("{}:{}", self.header_name, self.header.line_of(pos))
    }

    // ----------------------------------------------------------------------------------
    // Constants

    fn constants(&mut self) -> Result<(), String> {
        let header = self.header;
        let ours: HashMap<&str, (&model::Group, &model::Value)> = self
            .spec
            .constants()
            .map(|(g, v)| (v.name.as_str(), (g, v)))
            .collect();
        // Groups made for brand-new C enums, by enum.
        let mut new_groups: HashMap<String, String> = HashMap::new();
        for c in &header.consts {
            match ours.get(c.name.as_str()) {
                Some((g, v)) => {
                    let Some(old) = v.int() else { continue };
                    if !same_value(old, c.value) {
                        self.set_value(&g.name, &c.name, c.value)?;
                        self.report.changes.push(format!(
                            "{}: {} changed: {} -> {} (group {})",
                            self.at(c.pos),
                            c.name,
                            hex(old),
                            hex(c.value),
                            g.name
                        ));
                    }
                }
                None => {
                    let group = match self.place_constant(c) {
                        Some(g) => g,
                        None => {
                            let key = c.c_enum.clone().unwrap_or_else(|| c.name.clone());
                            match new_groups.get(&key) {
                                Some(g) => g.clone(),
                                None => {
                                    let g = self.new_group(c)?;
                                    new_groups.insert(key, g.clone());
                                    g
                                }
                            }
                        }
                    };
                    self.add_value(&group, c)?;
                    self.group_of.insert(c.name.clone(), group.clone());
                    self.report.changes.push(format!(
                        "{}: new constant {} = {} in group {}",
                        self.at(c.pos),
                        c.name,
                        hex(c.value),
                        group
                    ));
                    self.code_entry(&group, &c.name)?;
                }
            }
        }
        // Constants the header no longer declares.
        let in_header: HashSet<&str> = header.consts.iter().map(|c| c.name.as_str()).collect();
        let mut removed = Vec::new();
        for g in &self.spec.groups {
            if g.kind == codegen::schema::ConstKind::Strings
                || !g.values.iter().any(|v| in_header.contains(v.name.as_str()))
            {
                // Not this header's group (a constant from another header or from prose).
                continue;
            }
            for v in &g.values {
                let gated = v.since.is_some()
                    || v.feature.is_some()
                    || g.since.is_some()
                    || g.feature.is_some();
                if in_header.contains(v.name.as_str())
                    || gated
                    || header.defined_anywhere.contains(&v.name)
                {
                    continue;
                }
                removed.push((g.name.clone(), v.name.clone()));
            }
        }
        for (g, name) in removed {
            if self.allow_removal {
                self.remove_value(&g, &name)?;
                self.report
                    .removed
                    .push(format!("{name} (group {g}): removed"));
            } else {
                self.report.removed.push(format!(
                    "{name} (group {g}): not in {}; kept (pass --allow-removal to remove it)",
                    self.header_name
                ));
                self.report.kept.insert(name);
            }
        }
        Ok(())
    }

    /// The group a new constant joins: one that already holds members of its C enum, or
    /// of its neighbours in the header, and whose names it shares; `None` when no group
    /// fits (a new C enum, or a `#define` unlike its neighbours).
    fn place_constant(&self, c: &Const) -> Option<String> {
        let header = self.header;
        let known: Vec<(&Const, &String)> = header
            .consts
            .iter()
            .filter_map(|k| self.group_of.get(&k.name).map(|g| (k, g)))
            .collect();
        let mut candidates: Vec<(bool, usize, i64, String)> = Vec::new();
        let before = known.iter().rev().find(|(k, _)| k.pos < c.pos);
        let after = known.iter().find(|(k, _)| k.pos > c.pos);
        for (k, g) in known
            .iter()
            .copied()
            .chain(before.copied())
            .chain(after.copied())
        {
            let same_enum = c.c_enum.is_some() && k.c_enum == c.c_enum;
            let neighbour = before.is_some_and(|b| b.0.name == k.name)
                || after.is_some_and(|a| a.0.name == k.name);
            if !same_enum && !neighbour {
                continue;
            }
            let Some(group) = self.spec_or_doc_group_names(g) else {
                continue;
            };
            let prefix = common_prefix(&group.iter().map(String::as_str).collect::<Vec<_>>());
            if !c.name.starts_with(&prefix) {
                continue;
            }
            let shared = shared_words(&c.name, &k.name);
            let distance = -((c.pos as i64 - k.pos as i64).abs());
            candidates.push((same_enum, shared, distance, g.clone()));
        }
        candidates.sort();
        candidates.pop().map(|(_, _, _, g)| g)
    }

    /// Every value name of a group, as the document holds it now.
    fn spec_or_doc_group_names(&self, group: &str) -> Option<Vec<String>> {
        let t = find_table(&self.doc, "consts", group)?;
        let values = t.get("values")?.as_array()?;
        Some(
            values
                .iter()
                .filter_map(|v| {
                    v.as_inline_table()?
                        .get("name")?
                        .as_str()
                        .map(str::to_string)
                })
                .collect(),
        )
    }

    fn new_group(&mut self, c: &Const) -> Result<String, String> {
        let members: Vec<&str> = match &c.c_enum {
            Some(e) => self
                .header
                .consts
                .iter()
                .filter(|k| k.c_enum.as_ref() == Some(e))
                .map(|k| k.name.as_str())
                .collect(),
            None => vec![c.name.as_str()],
        };
        let prefix = common_prefix(&members);
        let mut stem = prefix.trim_end_matches('_').to_ascii_lowercase();
        for p in self.strip_prefixes() {
            if let Some(rest) = stem.strip_prefix(p.as_str()) {
                if !rest.is_empty() {
                    stem = rest.to_string();
                    break;
                }
            }
        }
        if stem.is_empty() {
            stem = "new_group".into();
        }
        let mut name = stem.clone();
        let mut n = 2;
        while find_table(&self.doc, "consts", &name).is_some() {
            name = format!("{stem}_{n}");
            n += 1;
        }
        let mut t = Table::new();
        t.decor_mut().set_prefix("\n");
        t.insert("name", toml_edit::value(name.clone()));
        t.insert(
            "kind",
            toml_edit::value(if c.c_enum.is_some() { "enum" } else { "values" }),
        );
        t.insert("type", toml_edit::value(c.ty.clone()));
        put_todo(
            &mut t,
            format!(
                "a new group for {} from {}: choose its kind (enum, bit, flags or values) and its name; the header cannot say how the values are used",
                members.join(", "),
                self.header_name
            ),
        );
        let mut values = Array::new();
        values.set_trailing_comma(true);
        values.set_trailing("\n");
        t.insert("values", toml_edit::value(values));
        let consts = array_of_tables(&mut self.doc, "consts")?;
        consts.push(t);
        self.report.changes.push(format!(
            "{}: new group {name} (marked: its kind is for a person to choose)",
            self.at(c.pos)
        ));
        Ok(name)
    }

    fn strip_prefixes(&self) -> Vec<String> {
        self.doc
            .get("abi")
            .and_then(|a| a.get("strip_prefix"))
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn add_value(&mut self, group: &str, c: &Const) -> Result<(), String> {
        let header = self.header;
        let names_after: Vec<String> = {
            let mut names = self.spec_or_doc_group_names(group).unwrap_or_default();
            names.push(c.name.clone());
            names
        };
        let t = find_table_mut(&mut self.doc, "consts", group)
            .ok_or_else(|| format!("group {group} vanished"))?;
        let values = t
            .get_mut("values")
            .and_then(Item::as_array_mut)
            .ok_or_else(|| format!("group {group} has no values array"))?;
        // Where: after the last value declared before it in the header, else first.
        let pos_of = |name: &str| header.consts.iter().find(|k| k.name == name).map(|k| k.pos);
        let mut index = 0;
        let mut all_rust = !values.is_empty();
        let mut hex_digits: Option<usize> = None;
        let mut siblings: Vec<(String, String)> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let Some(it) = v.as_inline_table() else {
                continue;
            };
            let name = it.get("name").and_then(Value::as_str).unwrap_or_default();
            if let Some(r) = it.get("rust").and_then(Value::as_str) {
                siblings.push((name.to_string(), r.to_string()));
            }
            if pos_of(name).is_some_and(|p| p < c.pos) {
                index = i + 1;
            }
            all_rust &= it.contains_key("rust");
            if let Some(Value::Integer(f)) = it.get("value") {
                let repr = f.display_repr();
                if let Some(h) = repr.strip_prefix("0x") {
                    // The narrowest neighbour's width: 0x0100 keeps four digits, while
                    // flags from 0x80 to 0x80000000 are written as short as they can be.
                    hex_digits = Some(hex_digits.map_or(h.len(), |d: usize| d.min(h.len())));
                }
            }
        }
        let mut it = InlineTable::new();
        it.insert("name", c.name.clone().into());
        it.insert("value", int_value(c.value, hex_digits));
        if all_rust {
            let names: Vec<&str> = names_after.iter().map(String::as_str).collect();
            let rust = rust_like_siblings(&c.name, &siblings).unwrap_or_else(|| {
                let common = common_prefix(&names).len();
                model::camel(c.name.get(common..).unwrap_or(&c.name), &[])
            });
            it.insert("rust", rust.into());
        }
        it.fmt();
        let mut v = Value::InlineTable(it);
        v.decor_mut().set_prefix(element_prefix(values));
        values.insert_formatted(index, v);
        Ok(())
    }

    fn set_value(&mut self, group: &str, name: &str, value: i128) -> Result<(), String> {
        let t = find_table_mut(&mut self.doc, "consts", group)
            .ok_or_else(|| format!("group {group} vanished"))?;
        let values = t
            .get_mut("values")
            .and_then(Item::as_array_mut)
            .ok_or_else(|| format!("group {group} has no values array"))?;
        for v in values.iter_mut() {
            let Some(it) = v.as_inline_table_mut() else {
                continue;
            };
            if it.get("name").and_then(Value::as_str) != Some(name) {
                continue;
            }
            let Some(old) = it.get_mut("value") else {
                continue;
            };
            let decor = old.decor().clone();
            let mut new = match &*old {
                Value::Integer(f) => {
                    let repr = f.display_repr();
                    int_value(value, repr.strip_prefix("0x").map(str::len))
                }
                // An integer written as a string (one beyond i64).
                _ => Value::from(format!("{value:#x}")),
            };
            *new.decor_mut() = decor;
            *old = new;
        }
        Ok(())
    }

    fn remove_value(&mut self, group: &str, name: &str) -> Result<(), String> {
        let t = find_table_mut(&mut self.doc, "consts", group)
            .ok_or_else(|| format!("group {group} vanished"))?;
        if let Some(values) = t.get_mut("values").and_then(Item::as_array_mut) {
            values.retain(|v| {
                v.as_inline_table()
                    .and_then(|t| t.get("name"))
                    .and_then(Value::as_str)
                    != Some(name)
            });
        }
        for section in ["request", "event", "ioctl"] {
            if let Some(arr) = self
                .doc
                .get_mut(section)
                .and_then(Item::as_array_of_tables_mut)
            {
                let before = arr.len();
                arr.retain(|t| t.get("code").and_then(Item::as_str) != Some(name));
                if arr.len() != before {
                    self.report
                        .removed
                        .push(format!("[[{section}]] {name}: removed with its code"));
                }
            }
        }
        Ok(())
    }

    /// A new code in a group whose codes are requests, events or ioctls gets its own entry,
    /// marked: the header cannot say what it carries.
    fn code_entry(&mut self, group: &str, code: &str) -> Result<(), String> {
        let spec = self.spec;
        let (section, keys, what): (&str, &[&str], &str) = if spec
            .requests
            .iter()
            .any(|r| r.group == group)
        {
            (
                "request",
                &["request", "response"],
                "which structure this request sends (`request`, and `request_payload` if any) and which the device answers with (`response`, and `response_payload` or `items` with `item_count`)",
            )
        } else if spec.events.iter().any(|e| e.group == group) {
            (
                "event",
                &["struct"],
                "the structure of this event (`struct`) and, for virtio_snd_event, what `data` holds",
            )
        } else if spec.ioctls.iter().any(|i| i.group == group) {
            (
                "ioctl",
                &["arg", "direction"],
                "what the argument points to (`arg`; none for an opcode without one, with direction none) and who reads and writes it (`direction`: in, out, inout or none)",
            )
        } else {
            return Ok(());
        };
        let mut t = Table::new();
        t.decor_mut().set_prefix("\n");
        t.insert("code", toml_edit::value(code));
        for k in keys {
            t.insert(k, toml_edit::value(UNKNOWN));
        }
        put_todo(
            &mut t,
            format!(
                "{code} is new in {}; the header cannot say {what}",
                self.header_name
            ),
        );
        array_of_tables(&mut self.doc, section)?.push(t);
        self.report.changes.push(format!(
            "new [[{section}]] {code} (marked: {} for a person to fill in)",
            keys.join(", ")
        ));
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Structures and unions

    fn types(&mut self) -> Result<(), String> {
        let header = self.header;
        let spec = self.spec;
        let mut anchor: Option<String> = None;
        for ht in &header.types {
            if ht.name.contains("__bindgen_ty_") {
                // An unnamed nested type: the spec declares it (anonymous = true) under a
                // name of its own, and its outer type's field checks it.
                continue;
            }
            match spec.type_named(&ht.name) {
                Some(t) => {
                    self.update_fields(t, ht)?;
                }
                None => {
                    self.new_type(ht, anchor.as_deref())?;
                }
            }
            anchor = Some(ht.name.clone());
        }
        let in_header: HashSet<&str> = header.types.iter().map(|t| t.name.as_str()).collect();
        for t in &spec.types {
            if in_header.contains(t.name.as_str())
                || t.anonymous
                || t.kind == StructKind::Opaque
                || t.since.is_some()
                || t.feature.is_some()
            {
                continue;
            }
            let section = if t.is_union { "union" } else { "struct" };
            if self.allow_removal {
                if let Some(arr) = self
                    .doc
                    .get_mut(section)
                    .and_then(Item::as_array_of_tables_mut)
                {
                    arr.retain(|x| x.get("name").and_then(Item::as_str) != Some(t.name.as_str()));
                }
                self.report
                    .removed
                    .push(format!("{section} {}: removed", t.name));
            } else {
                self.report.removed.push(format!(
                    "{section} {}: not in {}; kept (pass --allow-removal to remove it)",
                    t.name, self.header_name
                ));
                self.report.kept.insert(t.name.clone());
            }
        }
        Ok(())
    }

    fn kind(&self) -> StructKind {
        match self
            .doc
            .get("abi")
            .and_then(|a| a.get("default_kind"))
            .and_then(Item::as_str)
        {
            Some("user") => StructKind::User,
            Some("kernel") => StructKind::Kernel,
            _ => StructKind::Wire,
        }
    }

    /// The spec spelling of a header type inside a structure of `kind`; `None` when the
    /// spec has none (it is then left to a marker).
    fn spell(&self, t: &CType, kind: StructKind) -> Option<String> {
        Some(match t {
            CType::Prim(p) | CType::Enum(p) => p.clone(),
            CType::Typedef { name, prim } => {
                if self.spec.typedef_named(name).is_some() {
                    name.clone()
                } else {
                    prim.clone()
                }
            }
            CType::Named(n) => n.clone(),
            CType::Array(e, n) => format!("[{}; {n}]", self.spell(e, kind)?),
            CType::Ptr { inner, is_const } => {
                let inner = match &**inner {
                    CType::Void => "void".to_string(),
                    other => self.spell(other, kind)?,
                };
                match (kind, is_const) {
                    (StructKind::User, _) => format!("user_ptr<{inner}>"),
                    (_, true) => format!("const_ptr<{inner}>"),
                    (_, false) => format!("ptr<{inner}>"),
                }
            }
            CType::Void | CType::Anonymous(_) | CType::Other(_) => return None,
        })
    }

    fn size_of(&self, t: &CType) -> u64 {
        match t {
            CType::Prim(p) | CType::Enum(p) | CType::Typedef { prim: p, .. } => {
                Prim::from_name(p).map_or(0, |p| p.size())
            }
            CType::Named(n) | CType::Anonymous(n) => self
                .header
                .types
                .iter()
                .find(|h| &h.name == n)
                .map(|h| h.size)
                .or_else(|| self.spec.type_named(n).map(|s| s.size))
                .unwrap_or(0),
            CType::Ptr { .. } => 8,
            CType::Array(e, n) => self.size_of(e) * n,
            CType::Void | CType::Other(_) => 0,
        }
    }

    /// Whether the spec's field type still says what the header's does: same size, and the
    /// same sort of thing (signedness of plain integers, pointer, array length, structure).
    fn same_type(&self, ours: &Ty, theirs: &CType) -> bool {
        let resolved = self.resolve_ty(ours);
        match (&resolved, theirs) {
            // `u8 x[1]` and `u8 x` are the same bytes.
            (Ty::Array(e, 1), t) if !matches!(t, CType::Array(..)) => self.same_type(e, t),
            (t, CType::Array(e, 1)) if !matches!(t, Ty::Array(..)) => self.same_type(t, e),
            (Ty::Array(e, n), CType::Array(he, hn)) => n == hn && self.same_type(e, he),
            (Ty::Array(..), _) | (_, CType::Array(..)) => false,
            (Ty::Ptr(..), CType::Ptr { .. }) => true,
            (Ty::Ptr(..), _) | (_, CType::Ptr { .. }) => false,
            (Ty::Named(n), CType::Named(hn)) => n == hn,
            (Ty::Named(n), CType::Anonymous(hn)) => {
                self.spec.type_named(n).map(|t| t.size)
                    == Some(self.size_of(&CType::Anonymous(hn.clone())))
            }
            (Ty::Named(_), _) | (_, CType::Named(_) | CType::Anonymous(_)) => false,
            // A C enum stored in a field: any integer of its size (the spec may say i32).
            (Ty::Prim(p), CType::Enum(e)) => {
                Prim::from_name(e).is_some_and(|x| x.size() == p.size())
            }
            (Ty::Prim(p), CType::Prim(h) | CType::Typedef { prim: h, .. }) => {
                match Prim::from_name(h) {
                    Some(hp) => p.size() == hp.size() && same_sign(*p, hp),
                    None => false,
                }
            }
            _ => false,
        }
    }

    fn resolve_ty(&self, t: &Ty) -> Ty {
        match t {
            Ty::Named(n) => match self.spec.typedef_named(n) {
                Some(td) => self.resolve_ty(&td.ty),
                None => t.clone(),
            },
            Ty::Array(e, n) => Ty::Array(Box::new(self.resolve_ty(e)), *n),
            other => other.clone(),
        }
    }

    fn new_field(&self, f: &HField, kind: StructKind, todo: &mut Vec<String>) -> InlineTable {
        let mut it = InlineTable::new();
        it.insert("name", f.name.clone().into());
        match self.spell(&f.ty, kind) {
            Some(ty) => {
                it.insert("type", ty.clone().into());
                if is_padding_name(&f.name) && (ty == "u8" || ty.starts_with("[u8;")) {
                    it.insert("padding", true.into());
                }
            }
            None => {
                it.insert("type", UNKNOWN.into());
                let why = match &f.ty {
                    CType::Anonymous(_) => "an unnamed nested struct or union: declare it as a [[struct]] or [[union]] with anonymous = true and name it here".to_string(),
                    CType::Other(what) => format!("{what}, which the spec cannot spell"),
                    _ => "a type the spec cannot spell".to_string(),
                };
                it.insert(
                    "todo",
                    format!("the type of {} in {}: {why}", f.name, self.header_name).into(),
                );
                todo.push(f.name.clone());
            }
        }
        it.fmt();
        it
    }

    fn update_fields(&mut self, t: &model::TypeDef, ht: &HType) -> Result<(), String> {
        let section = if t.is_union { "union" } else { "struct" };
        let header_name = self.header_name.clone();
        let at = self.at(ht.pos);
        // Header fields matched to ours: bindgen names an unnamed member __bindgen_anon_N;
        // the spec names it and marks its type anonymous, so match those by offset.
        let mut matched: HashMap<String, usize> = HashMap::new();
        for (hi, hf) in ht.fields.iter().enumerate() {
            let ours = t.fields.iter().find(|f| f.name == hf.name).or_else(|| {
                hf.name.starts_with("__bindgen_anon").then(|| {
                    t.fields.iter().find(|f| {
                        f.offset == hf.offset
                            && matches!(&f.ty, Ty::Named(n) if self.spec.type_named(n).is_some_and(|x| x.anonymous))
                    })
                })?
            });
            if let Some(f) = ours {
                matched.insert(f.name.clone(), hi);
            }
        }
        let mut changes = Vec::new();
        let mut removed = Vec::new();
        // Our fields the header lacks: padding, fields of a newer version, or removed.
        let mut keep_unmatched: HashSet<String> = HashSet::new();
        for f in &t.fields {
            if matched.contains_key(&f.name) {
                continue;
            }
            if f.padding || f.since.is_some() || f.feature.is_some() {
                keep_unmatched.insert(f.name.clone());
            } else if self.allow_removal {
                removed.push(format!("{section} {}: field {} removed", t.name, f.name));
            } else {
                removed.push(format!(
                    "{section} {}: field {} is not in {header_name}; kept (pass --allow-removal to remove it)",
                    t.name, f.name
                ));
                keep_unmatched.insert(f.name.clone());
                self.report.kept.insert(format!("{}.{}", t.name, f.name));
            }
        }
        let kind = t.kind;
        let doc_table = find_table(&self.doc, section, &t.name)
            .ok_or_else(|| format!("{section} {} vanished", t.name))?;
        let old_values: Vec<Value> = doc_table
            .get("fields")
            .and_then(Item::as_array)
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default();
        let by_name: HashMap<String, Value> = old_values
            .iter()
            .filter_map(|v| {
                let n = v.as_inline_table()?.get("name")?.as_str()?.to_string();
                Some((n, v.clone()))
            })
            .collect();
        // Our fields in our order, each with the unmatched ones that follow it.
        let mut followers: HashMap<Option<String>, Vec<String>> = HashMap::new();
        let mut last_matched: Option<String> = None;
        for f in &t.fields {
            if matched.contains_key(&f.name) {
                last_matched = Some(f.name.clone());
            } else if keep_unmatched.contains(&f.name) {
                followers
                    .entry(last_matched.clone())
                    .or_default()
                    .push(f.name.clone());
            }
        }
        let mut new_list: Vec<Value> = Vec::new();
        let mut new_names: Vec<String> = Vec::new();
        let mut todo_fields = Vec::new();
        let push_followers = |key: Option<String>, list: &mut Vec<Value>| {
            for n in followers.get(&key).into_iter().flatten() {
                if let Some(v) = by_name.get(n) {
                    list.push(v.clone());
                }
            }
        };
        push_followers(None, &mut new_list);
        let mut order_changed = false;
        let mut last_our_index: Option<usize> = None;
        for hf in &ht.fields {
            let ours = t.fields.iter().enumerate().find(|(_, f)| {
                matched
                    .get(&f.name)
                    .is_some_and(|&hi| ht.fields[hi].name == hf.name)
            });
            match ours {
                Some((i, f)) => {
                    if last_our_index.is_some_and(|l| l > i) {
                        order_changed = true;
                    }
                    last_our_index = Some(i);
                    let mut v = by_name.get(&f.name).cloned().ok_or_else(|| {
                        format!("{section} {}: field {} vanished", t.name, f.name)
                    })?;
                    if f.offset != hf.offset {
                        changes.push(format!(
                            "{at}: {section} {}: field {} moved: offset {} -> {}",
                            t.name, f.name, f.offset, hf.offset
                        ));
                    }
                    if !self.same_type(&f.ty, &hf.ty) {
                        match self.spell(&hf.ty, kind) {
                            Some(ty) => {
                                changes.push(format!(
                                    "{at}: {section} {}: field {} retyped: {} -> {ty}",
                                    t.name,
                                    f.name,
                                    f.ty
                                ));
                                if let Some(it) = v.as_inline_table_mut() {
                                    if let Some(old) = it.get_mut("type") {
                                        let decor = old.decor().clone();
                                        *old = Value::from(ty);
                                        *old.decor_mut() = decor;
                                    }
                                }
                            }
                            None => {
                                return Err(format!(
                                    "{at}: {section} {}: field {} changed to a type the spec cannot spell",
                                    t.name, f.name
                                ))
                            }
                        }
                    }
                    new_list.push(v);
                    new_names.push(f.name.clone());
                    push_followers(Some(f.name.clone()), &mut new_list);
                }
                None => {
                    let it = self.new_field(hf, kind, &mut todo_fields);
                    changes.push(format!(
                        "{at}: {section} {}: new field {} at offset {}",
                        t.name, hf.name, hf.offset
                    ));
                    new_names.push(hf.name.clone());
                    new_list.push(Value::InlineTable(it));
                }
            }
        }
        if order_changed {
            changes.push(format!(
                "{at}: {section} {}: fields reordered as in {header_name}",
                t.name
            ));
        }
        let added: Vec<&String> = new_names
            .iter()
            .filter(|n| !t.fields.iter().any(|f| &f.name == *n))
            .collect();
        let unchanged = changes.is_empty() && removed.iter().all(|r| r.contains("kept"));
        self.report.changes.extend(changes);
        self.report.removed.extend(removed);
        if unchanged {
            return Ok(());
        }
        let table = find_table_mut(&mut self.doc, section, &t.name)
            .ok_or_else(|| format!("{section} {} vanished", t.name))?;
        let arr = table
            .get_mut("fields")
            .and_then(Item::as_array_mut)
            .ok_or_else(|| format!("{section} {} has no fields array", t.name))?;
        let prefix = element_prefix(arr);
        arr.clear();
        for mut v in new_list {
            if v.decor().prefix().is_none() {
                v.decor_mut().set_prefix(prefix.clone());
            }
            arr.push_formatted(v);
        }
        if kind == StructKind::User && !added.is_empty() {
            let names: Vec<&str> = added.iter().map(|s| s.as_str()).collect();
            put_todo(
                table,
                format!(
                    "new field(s) {} from {header_name}: add to driver_writes those an ioctl handler writes back to the caller",
                    names.join(", ")
                ),
            );
            self.report.changes.push(format!(
                "{section} {}: marked: driver_writes for the new field(s)",
                t.name
            ));
        }
        Ok(())
    }

    fn new_type(&mut self, ht: &HType, anchor: Option<&str>) -> Result<(), String> {
        let section = if ht.is_union { "union" } else { "struct" };
        let kind = self.kind();
        let mut t = Table::new();
        t.decor_mut().set_prefix("\n");
        t.insert("name", toml_edit::value(ht.name.clone()));
        let mut fields = Array::new();
        let mut todo_fields = Vec::new();
        let mut end = 0u64;
        let mut pad = 0;
        for f in &ht.fields {
            if kind == StructKind::Wire && !ht.is_union && f.offset > end {
                fields.push_formatted(padding_field(&mut pad, f.offset - end));
            }
            let mut v = Value::InlineTable(self.new_field(f, kind, &mut todo_fields));
            v.decor_mut().set_prefix("\n  ");
            fields.push_formatted(v);
            end = f.offset + self.size_of(&f.ty);
        }
        if kind == StructKind::Wire && !ht.is_union && ht.size > end {
            fields.push_formatted(padding_field(&mut pad, ht.size - end));
        }
        fields.set_trailing_comma(true);
        fields.set_trailing("\n");
        if kind == StructKind::User {
            put_todo(
                &mut t,
                format!(
                    "{} is new in {}: list in driver_writes the fields an ioctl handler writes back to the caller (driver_writes = [] if none)",
                    ht.name, self.header_name
                ),
            );
        }
        t.insert("fields", toml_edit::value(fields));
        let arr = array_of_tables(&mut self.doc, section)?;
        // Right after the header's previous structure, when that one is in this array.
        let index = anchor
            .and_then(|a| {
                arr.iter()
                    .position(|x| x.get("name").and_then(Item::as_str) == Some(a))
            })
            .map_or(arr.len(), |i| i + 1);
        insert_table(arr, index, t);
        self.report.changes.push(format!(
            "{}: new {section} {} ({} bytes, {} field(s)){}",
            self.at(ht.pos),
            ht.name,
            ht.size,
            ht.fields.len(),
            if kind == StructKind::User {
                " (marked: driver_writes for a person to fill in)"
            } else {
                ""
            }
        ));
        Ok(())
    }
}

/// Sets the marker of a table, right after its name (or code), where a reader sees it.
fn put_todo(t: &mut Table, text: String) {
    t.insert(codegen::marker::KEY, toml_edit::value(text));
    let rank = |k: &str| match k {
        "name" | "code" => 0,
        codegen::marker::KEY => 1,
        _ => 2,
    };
    t.sort_values_by(|a, _, b, _| rank(a.get()).cmp(&rank(b.get())));
}

fn padding_field(n: &mut usize, bytes: u64) -> Value {
    let mut it = InlineTable::new();
    let name = if *n == 0 {
        "padding".to_string()
    } else {
        format!("padding{n}")
    };
    *n += 1;
    it.insert("name", name.into());
    it.insert(
        "type",
        if bytes == 1 {
            "u8".to_string()
        } else {
            format!("[u8; {bytes}]")
        }
        .into(),
    );
    it.insert("padding", true.into());
    it.fmt();
    let mut v = Value::InlineTable(it);
    v.decor_mut().set_prefix("\n  ");
    v
}

/// C fields the spec marks `padding = true` by name: `padding`, `pad`, `padding2`...
fn is_padding_name(n: &str) -> bool {
    let stem = n.trim_end_matches(|c: char| c.is_ascii_digit());
    matches!(stem, "pad" | "padding" | "_pad" | "_padding")
}

fn same_sign(a: Prim, b: Prim) -> bool {
    // `char` and `bool` are bytes of no particular sign; little-endian integers are
    // unsigned like the UAPI's __leN.
    let class = |p: Prim| match p {
        Prim::Char | Prim::Bool => None,
        Prim::F32 | Prim::F64 => Some(2),
        p if p.is_signed() => Some(1),
        _ => Some(0),
    };
    match (class(a), class(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// Header and spec agree on a value; a negative spec value matches the header's unsigned
/// spelling of the same bits (as the bindgen cross-check allows).
fn same_value(ours: i128, theirs: i128) -> bool {
    ours == theirs
        || (ours < 0 && theirs == ours + (1i128 << 32))
        || (ours < 0 && theirs == ours + (1i128 << 64))
}

fn hex(v: i128) -> String {
    if v < 0 {
        v.to_string()
    } else {
        format!("{v:#x}")
    }
}

/// An integer value, in hex with at least `hex_digits` digits when the neighbours are hex.
fn int_value(v: i128, hex_digits: Option<usize>) -> Value {
    let text = match hex_digits {
        Some(d) if v >= 0 => format!("0x{v:0d$x}"),
        _ => v.to_string(),
    };
    if i64::try_from(v).is_err() {
        return Value::from(format!("{v:#x}"));
    }
    text.parse::<Value>()
        .unwrap_or_else(|_| Value::from(v as i64))
}

/// The Rust name of a new value, made the way its siblings' were: most of them drop the
/// same number of leading words and CamelCase the rest (`VIRTIO_SND_R_PCM_INFO` ->
/// `PcmInfo` drops three). `None` when no such rule explains them.
fn rust_like_siblings(name: &str, siblings: &[(String, String)]) -> Option<String> {
    let mut votes: HashMap<usize, usize> = HashMap::new();
    for (c, r) in siblings {
        let words: Vec<&str> = c.split('_').collect();
        if let Some(n) = (0..words.len()).find(|&n| model::camel(&words[n..].join("_"), &[]) == *r)
        {
            *votes.entry(n).or_default() += 1;
        }
    }
    let (&drop, &count) = votes.iter().max_by_key(|(n, c)| (**c, usize::MAX - **n))?;
    if count * 2 <= siblings.len() {
        return None;
    }
    let words: Vec<&str> = name.split('_').collect();
    (drop < words.len()).then(|| model::camel(&words[drop..].join("_"), &[]))
}

/// The `_`-separated words all names share, never the whole of a name (the rule codegen
/// uses for default Rust names).
pub fn common_prefix(names: &[&str]) -> String {
    let Some(first) = names.first() else {
        return String::new();
    };
    if names.len() < 2 {
        return first
            .rfind('_')
            .map_or(String::new(), |i| first[..=i].to_string());
    }
    let mut best = 0;
    for (i, _) in first.match_indices('_') {
        let p = &first[..=i];
        if names.iter().all(|n| n.starts_with(p) && n.len() > p.len()) {
            best = i + 1;
        } else {
            break;
        }
    }
    first[..best].to_string()
}

fn shared_words(a: &str, b: &str) -> usize {
    a.split('_')
        .zip(b.split('_'))
        .take_while(|(x, y)| x == y)
        .count()
}

/// The decor every element of a multi-line array starts with (a newline and indentation).
fn element_prefix(arr: &Array) -> String {
    arr.iter()
        .next()
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .map_or_else(|| "\n  ".to_string(), str::to_string)
}

pub fn find_table<'d>(doc: &'d DocumentMut, section: &str, name: &str) -> Option<&'d Table> {
    doc.get(section)?
        .as_array_of_tables()?
        .iter()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(name))
}

fn find_table_mut<'d>(
    doc: &'d mut DocumentMut,
    section: &str,
    name: &str,
) -> Option<&'d mut Table> {
    doc.get_mut(section)?
        .as_array_of_tables_mut()?
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(name))
}

fn array_of_tables<'d>(
    doc: &'d mut DocumentMut,
    section: &str,
) -> Result<&'d mut ArrayOfTables, String> {
    if doc.get(section).is_none() {
        doc.insert(section, Item::ArrayOfTables(ArrayOfTables::new()));
    }
    doc.get_mut(section)
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| format!("`{section}` is not an array of tables"))
}

/// Inserts `t` at `index` of an array of tables; a table without a position is printed
/// right after the one before it.
fn insert_table(arr: &mut ArrayOfTables, index: usize, t: Table) {
    let mut all: Vec<Table> = arr.iter().cloned().collect();
    all.insert(index.min(all.len()), t);
    arr.clear();
    for t in all {
        arr.push(t);
    }
}
