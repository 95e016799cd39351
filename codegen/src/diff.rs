//! The ABI review behind `cargo xtask spec-diff`: what changed between two versions of a
//! spec, field by field and code by code, each change marked breaking or additive.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::model::{Spec, TypeDef, Val};

/// Whether a change can break a binary built against the old ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Breaking,
    Additive,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Breaking => "breaking",
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

fn diff_type(out: &mut Out, old: &TypeDef, new: &TypeDef) {
    let what = if new.is_union { "union" } else { "struct" };
    let sec = format!("{what} {}", new.name);
    let mut renamed_to: HashSet<&str> = HashSet::new();
    let mut grows_at_end = true;
    for of in &old.fields {
        match new.fields.iter().find(|f| f.name == of.name) {
            Some(nf) => {
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
                if nf.ty != of.ty {
                    grows_at_end = false;
                    let class = Class::Breaking;
                    out.push(
                        &sec,
                        class,
                        format!(
                            "field {} retyped: {} -> {} ({} -> {} bytes)",
                            of.name, of.ty, nf.ty, of.size, nf.size
                        ),
                    );
                }
            }
            None => {
                let twin = new.fields.iter().find(|nf| {
                    nf.offset == of.offset
                        && nf.size == of.size
                        && nf.ty == of.ty
                        && !old.fields.iter().any(|o| o.name == nf.name)
                });
                match twin {
                    Some(nf) => {
                        renamed_to.insert(nf.name.as_str());
                        out.push(
                            &sec,
                            Class::Additive,
                            format!(
                                "field {} renamed to {} (same offset {} and type {})",
                                of.name, nf.name, of.offset, of.ty
                            ),
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
        }
    }
    for nf in &new.fields {
        if old.fields.iter().any(|f| f.name == nf.name) || renamed_to.contains(nf.name.as_str()) {
            continue;
        }
        let appended = if new.is_union {
            nf.size <= old.size
        } else {
            nf.offset >= old.size
        };
        if !appended {
            grows_at_end = false;
        }
        let class = if appended {
            Class::Additive
        } else {
            Class::Breaking
        };
        let gate = match (&nf.since, &nf.feature) {
            (Some(s), Some(f)) => format!(", since {s}, only with {f}"),
            (Some(s), None) => format!(", since {s}"),
            (None, Some(f)) => format!(", only with {f}"),
            (None, None) => String::new(),
        };
        let place = if appended {
            ""
        } else {
            " inside the old layout"
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
        let class = if new.size > old.size && grows_at_end {
            Class::Additive
        } else {
            Class::Breaking
        };
        let how = if class == Class::Additive {
            " (grows at the end)"
        } else {
            ""
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
}

/// Every ABI difference from `old` to `new`, in a stable order.
pub fn diff(old: &Spec, new: &Spec) -> Vec<Change> {
    let mut out = Out(Vec::new());
    for ot in &old.types {
        match new.type_named(&ot.name) {
            Some(nt) => diff_type(&mut out, ot, nt),
            None => out.push(
                &format!("struct {}", ot.name),
                Class::Breaking,
                format!("removed ({} bytes)", ot.size),
            ),
        }
    }
    for nt in &new.types {
        if old.type_named(&nt.name).is_none() {
            let since = nt
                .since
                .as_ref()
                .map(|s| format!(", since {s}"))
                .unwrap_or_default();
            out.push(
                &format!("struct {}", nt.name),
                Class::Additive,
                format!("added ({} bytes{since})", nt.size),
            );
        }
    }
    // Constants are matched by C name; they are reviewed under their new group.
    let old_consts: BTreeMap<&str, (&str, &Val)> = old
        .constants()
        .map(|(g, v)| (v.name.as_str(), (g.name.as_str(), &v.value)))
        .collect();
    let new_consts: BTreeMap<&str, (&str, &Val)> = new
        .constants()
        .map(|(g, v)| (v.name.as_str(), (g.name.as_str(), &v.value)))
        .collect();
    for (name, (og, ov)) in &old_consts {
        match new_consts.get(name) {
            Some((ng, nv)) => {
                if ov != nv {
                    out.push(
                        &format!("consts {ng}"),
                        Class::Breaking,
                        format!("{name} changed: {} -> {}", show(ov), show(nv)),
                    );
                }
                if og != ng {
                    out.push(
                        &format!("consts {ng}"),
                        Class::Additive,
                        format!("{name} moved from group {og}"),
                    );
                }
            }
            None => out.push(
                &format!("consts {og}"),
                Class::Breaking,
                format!("{name} removed (was {})", show(ov)),
            ),
        }
    }
    for (name, (ng, nv)) in &new_consts {
        if !old_consts.contains_key(name) {
            out.push(
                &format!("consts {ng}"),
                Class::Additive,
                format!("{name} = {} added", show(nv)),
            );
        }
    }
    for t in &old.typedefs {
        match new.typedef_named(&t.name) {
            Some(n) if n.ty != t.ty => out.push(
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
    // Message shapes.
    let shape = |r: &crate::model::Request| {
        format!(
            "{} -> {}{}{}",
            r.request,
            r.response,
            r.items
                .as_ref()
                .map(|i| format!(" + N x {i}"))
                .unwrap_or_default(),
            r.response_payload
                .as_ref()
                .map(|p| format!(" + {p:?}"))
                .unwrap_or_default()
        )
    };
    for r in &old.requests {
        let sec = format!("request {}", r.code);
        match new.requests.iter().find(|n| n.code == r.code) {
            Some(n) if shape(n) != shape(r) || n.request_payload != r.request_payload => out.push(
                &sec,
                Class::Breaking,
                format!("message changed: {} -> {}", shape(r), shape(n)),
            ),
            Some(_) => {}
            None => out.push(&sec, Class::Breaking, "removed".into()),
        }
    }
    for n in &new.requests {
        if !old.requests.iter().any(|r| r.code == n.code) {
            out.push(
                &format!("request {}", n.code),
                Class::Additive,
                format!("added: {}", shape(n)),
            );
        }
    }
    for e in &old.events {
        match new.events.iter().find(|n| n.code == e.code) {
            Some(n) if n.layout != e.layout => out.push(
                &format!("event {}", e.code),
                Class::Breaking,
                format!("layout {} -> {}", e.layout, n.layout),
            ),
            Some(_) => {}
            None => out.push(
                &format!("event {}", e.code),
                Class::Breaking,
                "removed".into(),
            ),
        }
    }
    for n in &new.events {
        if !old.events.iter().any(|e| e.code == n.code) {
            out.push(
                &format!("event {}", n.code),
                Class::Additive,
                format!("added ({})", n.layout),
            );
        }
    }
    for i in &old.ioctls {
        let argname = |a: &Option<crate::types::Ty>| {
            a.as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "none".into())
        };
        match new.ioctls.iter().find(|n| n.code == i.code) {
            Some(n) if n.arg != i.arg => out.push(
                &format!("ioctl {}", i.code),
                Class::Breaking,
                format!("argument {} -> {}", argname(&i.arg), argname(&n.arg)),
            ),
            Some(_) => {}
            None => out.push(
                &format!("ioctl {}", i.code),
                Class::Breaking,
                "removed".into(),
            ),
        }
    }
    for n in &new.ioctls {
        if !old.ioctls.iter().any(|i| i.code == n.code) {
            out.push(
                &format!("ioctl {}", n.code),
                Class::Additive,
                "added".into(),
            );
        }
    }
    for i in &old.imports {
        match new.imports.iter().find(|n| n.name == i.name) {
            Some(n)
                if n.elf != i.elf
                    || n.args.iter().map(|a| &a.1).ne(i.args.iter().map(|a| &a.1))
                    || n.returns != i.returns
                    || n.variadic != i.variadic =>
            {
                out.push(
                    &format!("import {}", i.name),
                    Class::Breaking,
                    "signature or ELF type changed".into(),
                )
            }
            Some(_) => {}
            None => out.push(
                &format!("import {}", i.name),
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

/// `N breaking, M additive`.
pub fn summary(changes: &[Change]) -> String {
    let b = changes
        .iter()
        .filter(|c| c.class == Class::Breaking)
        .count();
    let a = changes.len() - b;
    format!("summary: {b} breaking, {a} additive")
}
