//! What a C header declares, read with bindgen (libclang): every integer constant (enum
//! member or `#define`) with the C enum it belongs to, every struct and union with its
//! fields' types and offsets, and where in the header text each is declared.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::bindgen_check::{self, HeaderFacts};
use crate::Result;

/// One integer constant of the header.
#[derive(Debug, Clone)]
pub struct Const {
    pub name: String,
    pub value: i128,
    /// The C enum it is a member of (bindgen's name for it, `_bindgen_ty_N` when unnamed);
    /// `None` for a `#define`.
    pub c_enum: Option<String>,
    /// The spec type of a value (`u32`, `i32`, ...), from the enum's or the macro's C type.
    pub ty: String,
    /// Byte offset of its declaration in the header text (for order and neighbours).
    pub pos: usize,
}

/// A field type as the header spells it, resolved through typedefs to what the spec can say.
#[derive(Debug, Clone, PartialEq)]
pub enum CType {
    /// A spec primitive (`le32`, `u8`, `i32`, `char`, `f32`, `size_t`, `bool`, ...).
    Prim(String),
    /// A C typedef of an integer or float (`bigtime_t`, `uint32`): the spec keeps the name
    /// when it declares that typedef, else writes the primitive.
    Typedef {
        name: String,
        prim: String,
    },
    /// A struct or union by its C name.
    Named(String),
    /// An unnamed nested struct or union (bindgen's `outer__bindgen_ty_N`).
    Anonymous(String),
    Ptr {
        inner: Box<CType>,
        is_const: bool,
    },
    Array(Box<CType>, u64),
    /// A C enum type stored in a field: an integer of this spec primitive.
    Enum(String),
    Void,
    /// Something the spec has no spelling for (a function pointer, a bit-field...).
    Other(String),
}

/// One field of a struct or union.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: CType,
    pub offset: u64,
}

/// One struct or union of the header.
#[derive(Debug, Clone)]
pub struct Type {
    pub name: String,
    pub is_union: bool,
    pub size: u64,
    pub fields: Vec<Field>,
    pub pos: usize,
}

/// Everything read from one header.
#[derive(Debug)]
pub struct Header {
    pub path: PathBuf,
    pub text: String,
    /// The header's own constants, in header order.
    pub consts: Vec<Const>,
    /// The header's own structs and unions, in header order.
    pub types: Vec<Type>,
    /// Every constant name defined anywhere in the translation unit (the header and what it
    /// includes): a spec constant found here is not one the header dropped.
    pub defined_anywhere: HashSet<String>,
    /// The layout facts of the bindgen cross-check, for the final comparison.
    pub facts: HeaderFacts,
}

impl Header {
    /// 1-based line of a byte offset in the header text.
    pub fn line_of(&self, pos: usize) -> usize {
        self.text[..pos.min(self.text.len())].matches('\n').count() + 1
    }
}

fn builder(path: &Path, clang_args: &[String]) -> bindgen::Builder {
    bindgen::Builder::default()
        .header(path.to_string_lossy())
        .clang_args(clang_args)
        .layout_tests(true)
        .generate_comments(false)
        .derive_debug(false)
        // Copy, so that bindgen writes a C union as a Rust union (without it, as a struct of
        // `__BindgenUnionField`s, a helper type the header does not declare).
        .derive_copy(true)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
}

/// Reads `path` with libclang. A header libclang cannot compile is refused with its
/// diagnostics, which name the header's file, line and column.
pub fn read(path: &Path, clang_args: &[String]) -> Result<Header> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let own = builder(path, clang_args)
        .allowlist_file(format!(".*{}", regex_escape(&name)))
        .generate()
        .map_err(|e| match e {
            bindgen::BindgenError::ClangDiagnostic(d) => format!(
                "{} does not compile; nothing was written:\n{}",
                path.display(),
                d.trim_end()
            ),
            other => format!("{}: bindgen could not read it: {other}", path.display()),
        })?
        .to_string();
    let everything = builder(path, clang_args)
        .generate()
        .map_err(|e| format!("{}: bindgen could not read it: {e}", path.display()))?
        .to_string();
    let facts = bindgen_check::facts_from_bindings(&own)?;
    let defined_anywhere = bindgen_check::facts_from_bindings(&everything)?
        .constants
        .into_keys()
        .collect();
    let file = syn::parse_file(&own)?;
    let mut aliases: HashMap<String, syn::Type> = HashMap::new();
    let mut enum_types: HashSet<String> = HashSet::new();
    for item in &file.items {
        match item {
            syn::Item::Type(t) => {
                aliases.insert(t.ident.to_string(), (*t.ty).clone());
            }
            syn::Item::Const(c) => {
                if let Some(t) = path_name(&c.ty) {
                    enum_types.insert(t);
                }
            }
            _ => {}
        }
    }
    let resolver = Resolver {
        aliases: &aliases,
        enum_types: &enum_types,
    };
    let mut consts = Vec::new();
    let mut types = Vec::new();
    for item in &file.items {
        match item {
            syn::Item::Const(c) => {
                let name = c.ident.to_string();
                let Some(&value) = facts.constants.get(&name) else {
                    continue;
                };
                let tname = path_name(&c.ty).unwrap_or_default();
                let is_enum = aliases.contains_key(&tname) && !is_prim_name(&tname);
                let ty = match resolver.resolve(&c.ty) {
                    CType::Prim(p) | CType::Enum(p) => p,
                    _ => "i32".to_string(),
                };
                consts.push(Const {
                    pos: find_decl(&text, &name, false),
                    name,
                    value,
                    c_enum: is_enum.then_some(tname),
                    ty,
                });
            }
            syn::Item::Struct(s) => {
                let fields = named_fields(&s.fields);
                types.push(resolver.make_type(&s.ident.to_string(), false, fields, &facts, &text));
            }
            syn::Item::Union(u) => {
                let fields: Vec<&syn::Field> = u.fields.named.iter().collect();
                types.push(resolver.make_type(&u.ident.to_string(), true, fields, &facts, &text));
            }
            _ => {}
        }
    }
    // bindgen lists #defines before everything else; the header's own order is the text's.
    consts.sort_by_key(|c| c.pos);
    types.sort_by_key(|t| t.pos);
    Ok(Header {
        path: path.to_path_buf(),
        text,
        consts,
        types,
        defined_anywhere,
        facts,
    })
}

fn named_fields(f: &syn::Fields) -> Vec<&syn::Field> {
    match f {
        syn::Fields::Named(n) => n.named.iter().collect(),
        _ => Vec::new(),
    }
}

fn is_prim_name(n: &str) -> bool {
    matches!(
        n,
        "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" | "usize" | "isize"
    )
}

fn path_name(t: &syn::Type) -> Option<String> {
    match t {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

struct Resolver<'a> {
    aliases: &'a HashMap<String, syn::Type>,
    enum_types: &'a HashSet<String>,
}

impl Resolver<'_> {
    fn make_type(
        &self,
        name: &str,
        is_union: bool,
        fields: Vec<&syn::Field>,
        facts: &HeaderFacts,
        text: &str,
    ) -> Type {
        let offsets = facts.offsets.get(name).cloned().unwrap_or_default();
        let fields = fields
            .into_iter()
            .filter_map(|f| {
                let rust_name = f.ident.as_ref()?.to_string();
                let c_name = c_field_name(&rust_name);
                let offset = offsets
                    .iter()
                    .find(|(n, _)| *n == c_name)
                    .map(|(_, o)| *o)
                    .unwrap_or(0);
                Some(Field {
                    name: c_name,
                    ty: self.resolve(&f.ty),
                    offset,
                })
            })
            .collect();
        Type {
            name: name.to_string(),
            is_union,
            size: facts.sizes.get(name).copied().unwrap_or(0),
            fields,
            pos: find_decl(text, name, true),
        }
    }

    /// The spec's view of a bindgen type.
    fn resolve(&self, t: &syn::Type) -> CType {
        match t {
            syn::Type::Array(a) => {
                let n = match &a.len {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Int(i),
                        ..
                    }) => i.base10_parse::<u64>().unwrap_or(0),
                    _ => 0,
                };
                CType::Array(Box::new(self.resolve(&a.elem)), n)
            }
            syn::Type::Ptr(p) => CType::Ptr {
                inner: Box::new(self.resolve(&p.elem)),
                is_const: p.const_token.is_some(),
            },
            syn::Type::Path(_) => {
                let Some(name) = path_name(t) else {
                    return CType::Other("a type the spec cannot spell".into());
                };
                self.resolve_name(&name)
            }
            _ => CType::Other("a type the spec cannot spell".into()),
        }
    }

    fn resolve_name(&self, name: &str) -> CType {
        if let Some(p) = prim_of(name) {
            return CType::Prim(p.to_string());
        }
        if name == "c_void" {
            return CType::Void;
        }
        if name.contains("__bindgen_ty_") {
            return CType::Anonymous(name.to_string());
        }
        if name == "Option" {
            return CType::Other("a function pointer".into());
        }
        match self.aliases.get(name) {
            Some(target) => match self.resolve(target) {
                CType::Prim(p) if self.enum_types.contains(name) => CType::Enum(p),
                CType::Prim(p) | CType::Typedef { prim: p, .. } => CType::Typedef {
                    name: name.to_string(),
                    prim: p,
                },
                other => other,
            },
            None => CType::Named(name.to_string()),
        }
    }
}

/// bindgen's spelling of a C integer or float type, as a spec primitive. The Linux UAPI
/// `__leN` types are little-endian wire integers.
fn prim_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "__le16" => "le16",
        "__le32" => "le32",
        "__le64" => "le64",
        "c_char" => "char",
        "c_schar" | "i8" => "i8",
        "c_uchar" | "u8" => "u8",
        "c_short" | "i16" => "i16",
        "c_ushort" | "u16" => "u16",
        "c_int" | "i32" => "i32",
        "c_uint" | "u32" => "u32",
        "c_long" | "c_longlong" | "i64" => "i64",
        "c_ulong" | "c_ulonglong" | "u64" => "u64",
        "usize" => "size_t",
        "f32" | "c_float" => "f32",
        "f64" | "c_double" => "f64",
        "bool" => "bool",
        _ => return None,
    })
}

/// bindgen appends `_` to C names that are Rust keywords (`type` becomes `type_`).
fn c_field_name(f: &str) -> String {
    match f.strip_suffix('_') {
        Some(stem) if syn::parse_str::<syn::Ident>(stem).is_err() => stem.to_string(),
        _ => f.to_string(),
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where `name` is declared in the header text: for a type its `struct NAME {` / `union
/// NAME {` (else `} NAME;` of a typedef), for a constant its first appearance as a whole
/// word outside comments.
fn find_decl(text: &str, name: &str, is_type: bool) -> usize {
    let code = blank_comments(text);
    let words: Vec<usize> = code
        .match_indices(name)
        .map(|(i, _)| i)
        .filter(|&i| {
            let before = i.checked_sub(1).map(|j| code.as_bytes()[j]);
            let after = code.as_bytes().get(i + name.len()).copied();
            !before.is_some_and(is_word_byte) && !after.is_some_and(is_word_byte)
        })
        .collect();
    if is_type {
        for &i in &words {
            let rest = code[i + name.len()..].trim_start();
            let head = code[..i].trim_end();
            if rest.starts_with('{') && (head.ends_with("struct") || head.ends_with("union")) {
                return i;
            }
        }
        for &i in &words {
            if code[..i].trim_end().ends_with('}') {
                return i;
            }
        }
    }
    words.first().copied().unwrap_or(usize::MAX)
}

/// The text with every comment replaced by spaces (offsets unchanged).
fn blank_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            for c in out.iter_mut().take(end).skip(i) {
                if *c != b'\n' {
                    *c = b' ';
                }
            }
            i = end;
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            let end = text[i..].find('\n').map_or(b.len(), |e| i + e);
            for c in out.iter_mut().take(end).skip(i) {
                *c = b' ';
            }
            i = end;
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_default()
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
