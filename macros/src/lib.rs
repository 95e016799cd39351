//! `#[ioctl_table]`: turns an `impl` block of hmulti handlers into the driver's ioctl table.
//!
//! Each handler is marked `#[ioctl(Variant)]`, where `Variant` names a
//! `spec::hmulti_audio::MultiIoctl` variant, and takes its argument by type:
//!
//! - `fn h(&self, arg: &mut T) -> KResult`: the argument is copied in with `user_memcpy`,
//!   the handler fills it, and only `T::DRIVER_WRITES` (the fields the spec says the driver
//!   writes) are copied back, and only if the handler succeeded. For a scalar `T` (`i32`,
//!   `bigtime_t`...) the whole value is copied back.
//! - `fn h(&self, arg: &T) -> KResult`: copied in, nothing copied back.
//! - `fn h(&self, arg: UserPtr<T>) -> KResult`: the handler does its own copies (it needs
//!   the address, e.g. to write a field while it waits).
//! - `fn h(&self) -> KResult`: no argument.
//!
//! The macro adds `fn dispatch(&self, op: u32, buffer: u64, length: usize) -> KResult` that
//! decodes the opcode and pointer (`MultiIoctl::decode`), refuses null, non-user and short
//! arguments with a status, calls the handler, and answers every opcode without a handler
//! with `B_DEV_INVALID_IOCTL`; and `HANDLED`, the opcodes that have one. The impl block must
//! provide `fn kernel(&self) -> &K` for the copies. Control flow stays visible: the generated
//! code is one `match`.
#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{parse_macro_input, FnArg, ImplItem, ItemImpl, Type};

/// Argument passing of one handler.
enum Arg {
    None,
    Ref(Type),
    Mut(Type),
    Ptr,
}

fn is_scalar(ty: &Type) -> bool {
    let Type::Path(p) = ty else { return false };
    let Some(last) = p.path.segments.last() else {
        return false;
    };
    matches!(
        last.ident.to_string().as_str(),
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "bigtime_t"
    )
}

#[proc_macro_attribute]
pub fn ioctl_table(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "ioctl_table takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let mut imp = parse_macro_input!(item as ItemImpl);
    let mut arms = Vec::new();
    let mut handled = Vec::new();
    let mut errors = Vec::new();
    for item in &mut imp.items {
        let ImplItem::Fn(f) = item else { continue };
        let Some(pos) = f.attrs.iter().position(|a| a.path().is_ident("ioctl")) else {
            continue;
        };
        let attr = f.attrs.remove(pos);
        let variant: syn::Ident = match attr.parse_args() {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if handled.iter().any(|v: &syn::Ident| v == &variant) {
            errors.push(syn::Error::new(
                variant.span(),
                format!("two handlers for {variant}"),
            ));
            continue;
        }
        let inputs: Vec<&FnArg> = f.sig.inputs.iter().collect();
        let arg = match inputs.as_slice() {
            [FnArg::Receiver(_)] => Arg::None,
            [FnArg::Receiver(_), FnArg::Typed(t)] => match &*t.ty {
                Type::Reference(r) if r.mutability.is_some() => Arg::Mut((*r.elem).clone()),
                Type::Reference(r) => Arg::Ref((*r.elem).clone()),
                Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "UserPtr") => {
                    Arg::Ptr
                }
                other => {
                    errors.push(syn::Error::new(
                        other.span(),
                        "a handler takes &T, &mut T or UserPtr<T>",
                    ));
                    continue;
                }
            },
            _ => {
                errors.push(syn::Error::new(
                    f.sig.span(),
                    "a handler is fn(&self) or fn(&self, arg)",
                ));
                continue;
            }
        };
        let name = &f.sig.ident;
        let arm = match arg {
            Arg::None => quote! {
                spec::hmulti_audio::MultiIoctl::#variant => self.#name(),
            },
            Arg::Ptr => quote! {
                spec::hmulti_audio::MultiIoctl::#variant(ptr) => self.#name(ptr),
            },
            Arg::Ref(ty) => quote! {
                spec::hmulti_audio::MultiIoctl::#variant(ptr) => {
                    let arg: #ty = ::platform::user::read(self.kernel(), ptr)?;
                    self.#name(&arg)
                }
            },
            Arg::Mut(ty) => {
                let back = if is_scalar(&ty) {
                    quote! { ::platform::user::write(self.kernel(), ptr, &arg) }
                } else {
                    quote! { ::platform::user::write_fields(self.kernel(), ptr, &arg, <#ty>::DRIVER_WRITES) }
                };
                quote! {
                    spec::hmulti_audio::MultiIoctl::#variant(ptr) => {
                        let mut arg: #ty = ::platform::user::read(self.kernel(), ptr)?;
                        self.#name(&mut arg)?;
                        #back
                    }
                }
            }
        };
        arms.push(arm);
        handled.push(variant);
    }
    if let Some(first) = errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        return first.to_compile_error().into();
    }
    let handled_list: Vec<_> = handled
        .iter()
        .map(|v| quote! { spec::hmulti_audio::Opcode::#v })
        .collect();
    let dispatch_doc = format!(
        "Decodes and runs one hmulti ioctl; {} opcodes have handlers.",
        handled.len()
    );
    let extra: ImplItem = syn::parse_quote! {
        #[doc = #dispatch_doc]
        pub fn dispatch(&self, op: u32, buffer: u64, length: usize) -> ::platform::KResult {
            use spec::IoctlError;
            let ioctl = match spec::hmulti_audio::MultiIoctl::decode(op, buffer, length) {
                Ok(i) => i,
                Err(IoctlError::UnknownOpcode(_)) => return Err(::platform::Status::DEV_INVALID_IOCTL),
                Err(IoctlError::NullPointer) | Err(IoctlError::NotUserAddress(_)) => {
                    return Err(::platform::Status::BAD_ADDRESS)
                }
                Err(IoctlError::TooShort { .. }) => return Err(::platform::Status::BAD_VALUE),
            };
            #[allow(unreachable_patterns)]
            match ioctl {
                #(#arms)*
                _ => Err(::platform::Status::DEV_INVALID_IOCTL),
            }
        }
    };
    let extra_const: ImplItem = syn::parse_quote! {
        /// The opcodes with a handler; every other opcode answers `B_DEV_INVALID_IOCTL`.
        pub const HANDLED: &'static [spec::hmulti_audio::Opcode] = &[#(#handled_list),*];
    };
    imp.items.push(extra);
    imp.items.push(extra_const);
    quote! { #imp }.into()
}
