//! The code generator behind `cargo xtask gen`: the spec TOML schema, a C layout engine for
//! x86_64, validation, and the emitters (Rust, C header, layout dump, kernel stub, kernel import
//! tables, Markdown reference, ABI diff).
//!
//! It is a library so xtask, tests and the simulator read the spec the same way.
#![forbid(unsafe_code)]

pub mod diag;
pub mod diff;
pub mod emit_c;
pub mod emit_imports;
pub mod emit_json;
pub mod emit_md;
pub mod emit_rust;
pub mod marker;
pub mod model;
pub mod schema;
pub mod types;

pub use diag::{Diag, Diags};
pub use model::Spec;
