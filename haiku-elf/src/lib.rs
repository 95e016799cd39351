//! Haiku's kernel add-on ELF rules, in one place for the simulator's loader and for
//! `cargo xtask audit`.
//!
//! - [`elf`]: the one ELF reader (program headers, dynamic section, dynamic symbols,
//!   relocations), over `object`'s record types.
//! - [`rules`]: the rule table: each rule's id, what Haiku's kernel loader does about it
//!   (with the status and message of each refusal) and what we require; the relocation
//!   types.
//! - [`haiku`]: the loader's verdict at each step of loading, for a loader that maps and
//!   relocates (the simulator's).
//! - [`audit`]: the audit, stricter than Haiku where Haiku loads a file wrongly (a dynamic
//!   PC32, DT_RELR, initializers), and [`scan`], its code scans (red zone, frame pointers).
//! - [`build`]: the add-on's build flags.
//!
//! The code scans live here rather than in `xtask` because they are rules of the add-on
//! like the others (what Haiku's kernel needs of the code it loads), share the audit's
//! reader and report, and are tested with the same fixtures; `xtask` only handles the
//! command line.
#![forbid(unsafe_code)]

pub mod audit;
pub mod build;
pub mod elf;
pub mod haiku;
pub mod rules;
pub mod scan;
