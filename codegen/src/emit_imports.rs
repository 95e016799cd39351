//! Emits the kernel import table (`[[import]]`) in the two forms the rest of the project
//! uses, so that the TOML is the only place a kernel symbol's signature is written:
//!
//! - in the spec crate's module ([`table`]): `KERNEL_IMPORTS`, one
//!   `spec::kernel_import::KernelImport` per symbol (name, ELF type, the C declaration, and the
//!   signature with every typedef resolved), and `kernel_symbol`, each symbol's Rust type (an
//!   `unsafe extern "C" fn` pointer type, or an object's type) for an implementation to be
//!   checked against by the compiler;
//! - the add-on's `extern "C"` block ([`extern_block`], written to [`ADDON_FILE`]).
//!
//! Rust spellings: `size_t` is `usize` (the C `size_t` of every target Rust supports is
//! pointer-sized), `char` is `core::ffi::c_char`, a typedef or structure is its name in the
//! spec module, and a function-pointer type is `Option<unsafe extern "C" fn ...>` (NULL is a
//! valid value in C).

use std::collections::BTreeSet;

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use crate::emit_c;
use crate::model::{Import, Spec};
use crate::schema::{ElfType, OnlyIn, StructKind};
use crate::types::{Prim, PtrKind, Ty};

/// The add-on's generated file: its `extern "C"` block of every kernel import.
pub const ADDON_FILE: &str = "addon/src/generated/kernel_imports.rs";

/// An identifier for a C name, raw where the name is a Rust keyword.
fn ident(name: &str) -> proc_macro2::Ident {
    if syn::parse_str::<syn::Ident>(name).is_ok() {
        format_ident!("{name}")
    } else {
        proc_macro2::Ident::new_raw(name, proc_macro2::Span::call_site())
    }
}

fn doc(text: &str) -> TokenStream {
    let lines: Vec<String> = text.trim().lines().map(|l| format!(" {l}")).collect();
    quote! { #(#[doc = #lines])* }
}

/// The TOML's plain text as Markdown: a `<` outside code spans is escaped, so that
/// `kernel/drivers/<name>` is not read as an HTML tag.
fn markdown_text(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(n, part)| {
            if n % 2 == 0 {
                part.replace('<', "\\<")
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// The C declaration of an import: `sem_id create_sem(int32_t count, const char *name)`.
pub fn c_declaration(i: &Import) -> String {
    match i.elf {
        ElfType::Func => {
            let mut params: Vec<String> = i.args.iter().map(|(n, t)| emit_c::decl(t, n)).collect();
            if i.variadic {
                params.push("...".into());
            }
            if params.is_empty() {
                params.push("void".into());
            }
            let f = format!("{}({})", i.name, params.join(", "));
            emit_c::decl(i.returns.as_ref().unwrap_or(&Ty::Void), &f)
        }
        ElfType::Object => match &i.ty {
            Some(t) => emit_c::decl(t, &i.name),
            None => i.name.clone(),
        },
    }
}

/// The Rust spelling of `ty` in a kernel signature; `named` spells a typedef or structure
/// name (a path in the spec module, or a name the add-on imports).
fn rust(spec: &Spec, ty: &Ty, named: &mut dyn FnMut(&str) -> TokenStream) -> TokenStream {
    match ty {
        Ty::Void => quote! { ::core::ffi::c_void },
        Ty::Prim(p) => match p {
            Prim::U8 => quote! { u8 },
            Prim::U16 | Prim::Le16 => quote! { u16 },
            Prim::U32 | Prim::Le32 => quote! { u32 },
            Prim::U64 | Prim::Le64 => quote! { u64 },
            Prim::I8 => quote! { i8 },
            Prim::I16 => quote! { i16 },
            Prim::I32 => quote! { i32 },
            Prim::I64 => quote! { i64 },
            Prim::F32 => quote! { f32 },
            Prim::F64 => quote! { f64 },
            Prim::Bool => quote! { bool },
            Prim::Char => quote! { ::core::ffi::c_char },
            Prim::SizeT => quote! { usize },
        },
        Ty::Named(n) => {
            let rust_name = match (spec.typedef_named(n), spec.type_named(n)) {
                (None, Some(t)) => t.rust.clone(),
                _ => n.clone(),
            };
            named(&rust_name)
        }
        Ty::Array(e, n) => {
            let e = rust(spec, e, named);
            let n = Literal::usize_unsuffixed(*n as usize);
            quote! { [#e; #n] }
        }
        Ty::Ptr(pk, inner) => {
            let i = rust(spec, inner, named);
            if *pk == PtrKind::Const {
                quote! { *const #i }
            } else {
                quote! { *mut #i }
            }
        }
        Ty::Fn {
            args,
            variadic,
            ret,
        } => {
            let args: Vec<_> = args.iter().map(|a| rust(spec, a, named)).collect();
            let dots = variadic.then(|| quote! { , ... });
            let ret = ret.as_ref().map(|r| {
                let r = rust(spec, r, named);
                quote! { -> #r }
            });
            quote! { ::core::option::Option<unsafe extern "C" fn(#(#args),* #dots) #ret> }
        }
    }
}

/// `spec::kernel_import::CType` of `ty`, typedefs resolved.
fn ctype(spec: &Spec, ty: &Ty) -> Result<TokenStream, String> {
    Ok(match ty {
        Ty::Void => quote! { CType::Void },
        Ty::Prim(p) => match p {
            Prim::Bool => quote! { CType::Bool },
            Prim::Char => quote! { CType::Char },
            Prim::F32 | Prim::F64 => {
                let bits = Literal::u8_unsuffixed(p.size() as u8 * 8);
                quote! { CType::Float { bits: #bits } }
            }
            p => {
                let name =
                    format_ident!("{}{}", if p.is_signed() { "I" } else { "U" }, p.size() * 8);
                quote! { CType::#name }
            }
        },
        Ty::Named(n) => {
            if let Some(t) = spec.typedef_named(n) {
                return ctype(spec, &t.ty);
            }
            let t = spec
                .type_named(n)
                .ok_or_else(|| format!("import table: unknown type `{n}`"))?;
            if t.kind == StructKind::Opaque {
                quote! { CType::Opaque { name: #n } }
            } else {
                let size = Literal::u64_unsuffixed(t.size);
                let align = Literal::u64_unsuffixed(t.align);
                quote! { CType::Record { name: #n, size: #size, align: #align } }
            }
        }
        Ty::Array(e, n) => {
            let e = ctype(spec, e)?;
            let n = Literal::u64_unsuffixed(*n);
            quote! { CType::Array { element: &#e, len: #n } }
        }
        Ty::Ptr(pk, inner) => {
            let i = ctype(spec, inner)?;
            if *pk == PtrKind::Const {
                quote! { CType::const_ptr(&#i) }
            } else {
                quote! { CType::ptr(&#i) }
            }
        }
        Ty::Fn {
            args,
            variadic,
            ret,
        } => {
            let r = ctype(spec, ret.as_deref().unwrap_or(&Ty::Void))?;
            let args = args
                .iter()
                .map(|a| ctype(spec, a))
                .collect::<Result<Vec<_>, _>>()?;
            quote! { CType::FnPtr { returns: &#r, params: &[#(#args),*], variadic: #variadic } }
        }
    })
}

/// `only_in` as a `spec::kernel_import::HaikuRelease`.
fn release(only_in: Option<OnlyIn>) -> TokenStream {
    match only_in {
        None => quote! { None },
        Some(OnlyIn::Beta5) => quote! { Some(HaikuRelease::Beta5) },
        Some(OnlyIn::Nightly) => quote! { Some(HaikuRelease::Nightly) },
    }
}

/// `KERNEL_IMPORTS` and the `kernel_symbol` module, for the spec's module; nothing when the
/// spec has no `[[import]]`.
pub fn table(spec: &Spec) -> Result<TokenStream, String> {
    if spec.imports.is_empty() {
        return Ok(TokenStream::new());
    }
    let mut entries = Vec::new();
    let mut aliases = Vec::new();
    let in_parent = &mut |n: &str| {
        let id = ident(n);
        quote! { super::#id }
    };
    for i in &spec.imports {
        let name = &i.name;
        let c = c_declaration(i);
        let id = ident(name);
        let alias_doc = doc(&format!("`{c}`"));
        let only_in = release(i.only_in);
        match i.elf {
            ElfType::Func => {
                let returns = ctype(spec, i.returns.as_ref().unwrap_or(&Ty::Void))?;
                let mut params = Vec::new();
                let mut rust_params = Vec::new();
                for (pname, pty) in &i.args {
                    let pc = emit_c::decl(pty, "");
                    let pt = ctype(spec, pty)?;
                    params.push(quote! { Param { name: #pname, c: #pc, ty: #pt } });
                    let pid = ident(pname);
                    let rt = rust(spec, pty, in_parent);
                    rust_params.push(quote! { #pid: #rt });
                }
                let variadic = i.variadic;
                entries.push(quote! {
                    KernelImport {
                        name: #name,
                        elf: SymbolType::Func,
                        only_in: #only_in,
                        c: #c,
                        signature: Signature::Func {
                            returns: #returns,
                            params: &[#(#params),*],
                            variadic: #variadic,
                        },
                    }
                });
                let dots = variadic.then(|| quote! { , ... });
                let ret = i.returns.as_ref().map(|r| {
                    let r = rust(spec, r, in_parent);
                    quote! { -> #r }
                });
                aliases.push(quote! {
                    #alias_doc
                    pub type #id = unsafe extern "C" fn(#(#rust_params),* #dots) #ret;
                });
            }
            ElfType::Object => {
                let ty =
                    i.ty.as_ref()
                        .ok_or_else(|| format!("import {name}: an OBJECT without a type"))?;
                let t = ctype(spec, ty)?;
                entries.push(quote! {
                    KernelImport {
                        name: #name,
                        elf: SymbolType::Object,
                        only_in: #only_in,
                        c: #c,
                        signature: Signature::Object { ty: #t },
                    }
                });
                let rt = rust(spec, ty, in_parent);
                aliases.push(quote! {
                    #alias_doc
                    pub type #id = #rt;
                });
            }
        }
    }
    let table_doc = doc(&format!(
        "Every kernel symbol an add-on may import (`[[import]]` of `{}`): its name, ELF \
         type, the one release that exports it if only one does, and signature. The audit \
         refuses any other import, and one only a release exports; the simulator implements \
         exactly these, and offers each only where its release does.",
        spec.path.display()
    ));
    Ok(quote! {
        #table_doc
        pub const KERNEL_IMPORTS: &[crate::kernel_import::KernelImport] = {
            use crate::kernel_import::{
                CType, HaikuRelease, KernelImport, Param, Signature, SymbolType,
            };
            &[#(#entries),*]
        };

        /// The Rust type of each kernel symbol of [`KERNEL_IMPORTS`]: a function's
        /// `unsafe extern "C" fn` pointer type, or a data object's type. An implementation of a
        /// symbol is checked against it by the compiler (`sim_create_sem as
        /// kernel_symbol::create_sem`).
        #[allow(non_camel_case_types)]
        pub mod kernel_symbol {
            #(#aliases)*
        }
    })
}

/// The add-on's `extern "C"` block: every import of every spec, with its doc, typed with the
/// spec crate's types. An extern declaration the add-on never calls imports nothing (the
/// linker leaves no undefined symbol for it); the module is public, so none is dead code.
pub fn extern_block(specs: &[Spec]) -> Result<String, String> {
    let mut uses = Vec::new();
    let mut items = Vec::new();
    let mut sources = Vec::new();
    for spec in specs.iter().filter(|s| !s.imports.is_empty()) {
        sources.push(format!("`{}`", spec.path.display()));
        let mut names = BTreeSet::new();
        let mut named = |n: &str| {
            names.insert(n.to_string());
            let id = ident(n);
            quote! { #id }
        };
        for i in &spec.imports {
            let id = ident(&i.name);
            let mut text = format!("`{}`", c_declaration(i));
            if let Some(o) = i.only_in {
                let r = match o {
                    OnlyIn::Beta5 => "R1/beta5",
                    OnlyIn::Nightly => "nightly",
                };
                text.push_str(&format!(
                    "\n\nExported only by the {r} kernel: an add-on that imports it does not \
                     load on the other release."
                ));
            }
            for part in [Some(&i.doc), i.note.as_ref()].into_iter().flatten() {
                if !part.trim().is_empty() {
                    text.push_str("\n\n");
                    text.push_str(&markdown_text(part.trim()));
                }
            }
            let d = doc(&text);
            match i.elf {
                ElfType::Func => {
                    let params: Vec<_> = i
                        .args
                        .iter()
                        .map(|(n, t)| {
                            let pid = ident(n);
                            let rt = rust(spec, t, &mut named);
                            quote! { #pid: #rt }
                        })
                        .collect();
                    let dots = i.variadic.then(|| quote! { , ... });
                    let ret = i.returns.as_ref().map(|r| {
                        let r = rust(spec, r, &mut named);
                        quote! { -> #r }
                    });
                    items.push(quote! { #d pub fn #id(#(#params),* #dots) #ret; });
                }
                ElfType::Object => {
                    let ty = i
                        .ty
                        .as_ref()
                        .ok_or_else(|| format!("import {}: an OBJECT without a type", i.name))?;
                    let rt = rust(spec, ty, &mut named);
                    // A C symbol keeps its C name; the lint is about Rust's naming only.
                    let allow = (i.name != i.name.to_uppercase())
                        .then(|| quote! { #[allow(non_upper_case_globals)] });
                    items.push(quote! { #d #allow pub static #id: #rt; });
                }
            }
        }
        if !names.is_empty() {
            let module = ident(&spec.name);
            let names: Vec<_> = names.iter().map(|n| ident(n)).collect();
            uses.push(quote! { use spec::#module::{#(#names),*}; });
        }
    }
    let file_doc = [
        " The kernel symbols the add-on may import, declared for Rust.".to_string(),
        String::new(),
        format!(
            " Generated by `cargo xtask gen` from the `[[import]]` table of {}; do not edit by \
             hand.",
            sources.join(", ")
        ),
        " Every declaration is the table's signature; the audit refuses any import not in the \
         table."
            .to_string(),
    ];
    // The block's head is a token of its own so that no line of this generator reads as a
    // foreign import (the `ffi-in-addon` tidy check).
    let foreign = quote! { extern "C" };
    let tokens = quote! {
        #(#![doc = #file_doc])*

        #(#uses)*

        #foreign {
            #(#items)*
        }
    };
    let file: syn::File = syn::parse2(tokens)
        .map_err(|e| format!("the add-on's generated extern block does not parse: {e}"))?;
    Ok(prettyplease::unparse(&file))
}
