//! How the simulator's implementation of a kernel symbol is passed in the C ABI, compared
//! with the import table's signature ([`spec::haiku_driver::KERNEL_IMPORTS`]).
//!
//! Every implementation is first coerced to the table's Rust type of its symbol
//! (`spec::haiku_driver::kernel_symbol`), so the compiler holds it to that type; this module
//! then checks that the Rust type says what the table's C signature says: the same number of
//! parameters, each of the same class and width (an `int32_t` is an `i32`, a `size_t` a
//! 64-bit unsigned integer, a pointer a pointer to `const` or not), the same result, and the
//! same `...`.

use std::fmt;

use spec::kernel_import::{CType, Signature};

/// How a value is passed in the C ABI, and what a program can compare of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// No value (a `void` result).
    Void,
    Int {
        bits: u8,
        signed: bool,
    },
    Bool,
    Float {
        bits: u8,
    },
    /// A data pointer, to `const` or not.
    Ptr {
        constant: bool,
    },
    /// A function pointer.
    FnPtr,
    /// A structure, union or array by value, by its C name and size.
    Record {
        name: &'static str,
        size: u64,
    },
}

impl Class {
    /// The class of a type of the table.
    pub fn of(t: &CType) -> Class {
        match *t {
            CType::Void => Class::Void,
            CType::Int { bits, signed } => Class::Int { bits, signed },
            // C `char` is signed on x86_64, and Rust's `c_char` is `i8` there.
            CType::Char => Class::Int {
                bits: 8,
                signed: true,
            },
            CType::Bool => Class::Bool,
            CType::Float { bits } => Class::Float { bits },
            CType::Ptr { constant, .. } => Class::Ptr { constant },
            CType::FnPtr { .. } => Class::FnPtr,
            CType::Record { name, size, .. } => Class::Record { name, size },
            CType::Array { len, element } => Class::Record {
                name: "array",
                size: len * Class::of(element).size(),
            },
            CType::Opaque { name } => Class::Record { name, size: 0 },
        }
    }

    fn size(self) -> u64 {
        match self {
            Class::Void => 0,
            Class::Int { bits, .. } | Class::Float { bits } => u64::from(bits / 8),
            Class::Bool => 1,
            Class::Ptr { .. } | Class::FnPtr => 8,
            Class::Record { size, .. } => size,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::Void => write!(f, "void"),
            Class::Int { bits, signed } => write!(f, "{}{bits}", if *signed { "i" } else { "u" }),
            Class::Bool => write!(f, "bool"),
            Class::Float { bits } => write!(f, "f{bits}"),
            Class::Ptr { constant: true } => write!(f, "const pointer"),
            Class::Ptr { constant: false } => write!(f, "pointer"),
            Class::FnPtr => write!(f, "function pointer"),
            Class::Record { name, size } => write!(f, "{name} ({size} bytes)"),
        }
    }
}

/// A Rust type that crosses the C ABI as a value of one [`Class`].
pub trait CAbi {
    const CLASS: Class;
}

macro_rules! int {
    ($($t:ty),*) => {
        $(impl CAbi for $t {
            const CLASS: Class = Class::Int {
                bits: <$t>::BITS as u8,
                signed: <$t>::MIN != 0,
            };
        })*
    };
}
int!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

impl CAbi for () {
    const CLASS: Class = Class::Void;
}
impl CAbi for bool {
    const CLASS: Class = Class::Bool;
}
impl CAbi for f32 {
    const CLASS: Class = Class::Float { bits: 32 };
}
impl CAbi for f64 {
    const CLASS: Class = Class::Float { bits: 64 };
}
impl<T: ?Sized> CAbi for *const T {
    const CLASS: Class = Class::Ptr { constant: true };
}
impl<T: ?Sized> CAbi for *mut T {
    const CLASS: Class = Class::Ptr { constant: false };
}

/// A function's signature as the C ABI sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FnSig {
    pub returns: Class,
    pub params: Vec<Class>,
    pub variadic: bool,
}

impl FnSig {
    /// The signature the table gives a kernel symbol; `None` for a data object.
    pub fn of(s: &Signature) -> Option<FnSig> {
        match s {
            Signature::Func {
                returns,
                params,
                variadic,
            } => Some(FnSig {
                returns: Class::of(returns),
                params: params.iter().map(|p| Class::of(&p.ty)).collect(),
                variadic: *variadic,
            }),
            Signature::Object { .. } => None,
        }
    }

    /// Where `self` (an implementation) differs from `want` (the table), in words.
    pub fn differences(&self, want: &FnSig) -> Vec<String> {
        let mut out = Vec::new();
        if self.params.len() != want.params.len() {
            out.push(format!(
                "{} parameters, the table has {}",
                self.params.len(),
                want.params.len()
            ));
        }
        for (i, (have, want)) in self.params.iter().zip(&want.params).enumerate() {
            if have != want {
                out.push(format!(
                    "parameter {} is {have}, the table's is {want}",
                    i + 1
                ));
            }
        }
        if self.returns != want.returns {
            out.push(format!(
                "returns {}, the table's returns {}",
                self.returns, want.returns
            ));
        }
        if self.variadic != want.variadic {
            out.push(format!(
                "{}variadic, the table's is {}",
                if self.variadic { "" } else { "not " },
                if want.variadic { "variadic" } else { "not" }
            ));
        }
        out
    }
}

impl fmt::Display for FnSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut params: Vec<String> = self.params.iter().map(|p| p.to_string()).collect();
        if self.variadic {
            params.push("...".into());
        }
        write!(f, "fn({}) -> {}", params.join(", "), self.returns)
    }
}

/// A function-pointer type whose C signature can be read back.
pub trait Signed {
    fn signature() -> FnSig;
}

macro_rules! fn_ptr {
    ($($a:ident),*) => {
        impl<R: CAbi, $($a: CAbi),*> Signed for unsafe extern "C" fn($($a),*) -> R {
            fn signature() -> FnSig {
                FnSig { returns: R::CLASS, params: vec![$($a::CLASS),*], variadic: false }
            }
        }
        impl<R: CAbi, $($a: CAbi),*> CAbi for Option<unsafe extern "C" fn($($a),*) -> R> {
            const CLASS: Class = Class::FnPtr;
        }
    };
}
macro_rules! variadic_fn_ptr {
    ($($a:ident),*) => {
        impl<R: CAbi, $($a: CAbi),*> Signed for unsafe extern "C" fn($($a),* , ...) -> R {
            fn signature() -> FnSig {
                FnSig { returns: R::CLASS, params: vec![$($a::CLASS),*], variadic: true }
            }
        }
    };
}
fn_ptr!();
fn_ptr!(A1);
fn_ptr!(A1, A2);
fn_ptr!(A1, A2, A3);
fn_ptr!(A1, A2, A3, A4);
fn_ptr!(A1, A2, A3, A4, A5);
fn_ptr!(A1, A2, A3, A4, A5, A6);
variadic_fn_ptr!(A1);
variadic_fn_ptr!(A1, A2);
variadic_fn_ptr!(A1, A2, A3);

#[cfg(test)]
mod tests {
    use super::*;
    use spec::kernel_import::Param;
    use std::ffi::c_void;

    type VoidPtr = *mut c_void;

    #[test]
    fn classes_of_rust_types_are_their_c_types() {
        assert_eq!(
            i32::CLASS,
            Class::Int {
                bits: 32,
                signed: true
            }
        );
        assert_eq!(
            usize::CLASS,
            Class::Int {
                bits: 64,
                signed: false
            }
        );
        assert_eq!(<*const i8>::CLASS, Class::Ptr { constant: true });
        assert_eq!(VoidPtr::CLASS, Class::Ptr { constant: false });
        assert_eq!(
            <Option<unsafe extern "C" fn(VoidPtr) -> i32>>::CLASS,
            Class::FnPtr
        );
    }

    /// A signature written out here (C's `int snprintf(char *, size_t, const char *, ...)`)
    /// against the Rust types that match it and some that do not.
    #[test]
    fn a_wrong_arity_width_pointer_or_variadic_flag_is_reported() {
        static PARAMS: [Param; 3] = [
            Param {
                name: "buffer",
                c: "char *",
                ty: CType::ptr(&CType::Char),
            },
            Param {
                name: "size",
                c: "size_t",
                ty: CType::U64,
            },
            Param {
                name: "format",
                c: "const char *",
                ty: CType::const_ptr(&CType::Char),
            },
        ];
        let want = FnSig::of(&Signature::Func {
            returns: CType::I32,
            params: &PARAMS,
            variadic: true,
        })
        .unwrap();
        type Good = unsafe extern "C" fn(*mut i8, usize, *const i8, ...) -> i32;
        assert_eq!(Good::signature().differences(&want), Vec::<String>::new());

        type Narrow = unsafe extern "C" fn(*mut i8, u32, *const i8, ...) -> i32;
        assert_eq!(
            Narrow::signature().differences(&want),
            ["parameter 2 is u32, the table's is u64"]
        );
        type Short = unsafe extern "C" fn(*mut i8, usize, ...) -> i32;
        assert_eq!(
            Short::signature().differences(&want),
            ["2 parameters, the table has 3"]
        );
        type Mutable = unsafe extern "C" fn(*mut i8, usize, *mut i8, ...) -> i32;
        assert_eq!(
            Mutable::signature().differences(&want),
            ["parameter 3 is pointer, the table's is const pointer"]
        );
        type Fixed = unsafe extern "C" fn(*mut i8, usize, *const i8) -> u32;
        assert_eq!(
            Fixed::signature().differences(&want),
            [
                "returns u32, the table's returns i32",
                "not variadic, the table's is variadic"
            ]
        );
    }
}
