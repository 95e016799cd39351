//! The TOML schema of `spec/*.toml`, as serde types. `spec/SCHEMA.md` is its prose twin.
//!
//! Every table rejects unknown keys, and every item that later validation may complain about
//! keeps its byte span so the message can name the file, line and key.

use serde::Deserialize;
use toml::Spanned;

/// One spec file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub abi: Abi,
    #[serde(default)]
    pub typedef: Vec<Spanned<Typedef>>,
    #[serde(default, rename = "struct")]
    pub structs: Vec<Spanned<Struct>>,
    #[serde(default, rename = "union")]
    pub unions: Vec<Spanned<Struct>>,
    #[serde(default)]
    pub consts: Vec<Spanned<ConstGroup>>,
    #[serde(default)]
    pub request: Vec<Spanned<Request>>,
    #[serde(default)]
    pub event: Vec<Spanned<Event>>,
    #[serde(default)]
    pub ioctl: Vec<Spanned<Ioctl>>,
    #[serde(default)]
    pub import: Vec<Spanned<Import>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abi {
    pub name: Spanned<String>,
    pub title: String,
    pub version: String,
    pub source: String,
    pub default_kind: StructKind,
    #[serde(default)]
    pub strip_prefix: Vec<String>,
    #[serde(default)]
    pub header: Option<String>,
    /// The status constant that means success in a control response.
    #[serde(default)]
    pub status_ok: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StructKind {
    Wire,
    User,
    Kernel,
    Opaque,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Typedef {
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
    #[serde(default)]
    pub doc: String,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Struct {
    pub name: Spanned<String>,
    #[serde(default)]
    pub rust: Option<String>,
    #[serde(default)]
    pub kind: Option<StructKind>,
    #[serde(default)]
    pub doc: String,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub only_in: Option<OnlyIn>,
    #[serde(default)]
    pub driver_writes: Option<Spanned<Vec<String>>>,
    /// `false`: `[abi] header` does not declare it (the spec does, in prose or in a form the
    /// header leaves out), so the cross-check does not look for it there.
    #[serde(default = "yes")]
    pub in_header: bool,
    #[serde(default)]
    pub fields: Vec<Spanned<Field>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
    #[serde(default)]
    pub doc: String,
    #[serde(default)]
    pub padding: bool,
    #[serde(default, rename = "enum")]
    pub enum_group: Option<Spanned<String>>,
    #[serde(default)]
    pub bits: Option<Spanned<String>>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub only_in: Option<OnlyIn>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnlyIn {
    Nightly,
    Beta5,
}

/// How a linear PCM sample format encodes a sample (a value's `encoding` fact).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Two's-complement integer.
    Signed,
    /// Offset-binary integer (silence is the middle value).
    Unsigned,
    /// IEEE 754 floating point.
    Float,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConstKind {
    Enum,
    Bit,
    Flags,
    Values,
    Strings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstGroup {
    pub name: Spanned<String>,
    #[serde(default)]
    pub rust: Option<String>,
    pub kind: ConstKind,
    #[serde(default, rename = "type")]
    pub ty: Option<Spanned<String>>,
    #[serde(default)]
    pub doc: String,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    pub values: Vec<Spanned<ConstValue>>,
}

/// A constant is an integer, or a string in a `strings` group.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Str(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstValue {
    pub name: Spanned<String>,
    pub value: Spanned<Value>,
    #[serde(default)]
    pub rust: Option<String>,
    #[serde(default)]
    pub doc: String,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub composite: bool,
    #[serde(default)]
    pub hz: Option<u32>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub phys_width: Option<u32>,
    #[serde(default)]
    pub encoding: Option<Encoding>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub only_in: Option<OnlyIn>,
    /// `false`: the name is the spec's own (the spec gives the value only in prose), so
    /// `[abi] header` does not define it and the cross-check does not look for it there.
    #[serde(default = "yes")]
    pub in_header: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub code: Spanned<String>,
    pub request: Spanned<String>,
    #[serde(default)]
    pub request_payload: Option<Spanned<String>>,
    pub response: Spanned<String>,
    #[serde(default)]
    pub response_payload: Option<Spanned<String>>,
    #[serde(default)]
    pub items: Option<Spanned<String>>,
    #[serde(default)]
    pub item_count: Option<Spanned<String>>,
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub doc: String,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub code: Spanned<String>,
    #[serde(rename = "struct")]
    pub layout: Spanned<String>,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub doc: String,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
    Inout,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ioctl {
    pub code: Spanned<String>,
    #[serde(default)]
    pub arg: Option<Spanned<String>>,
    pub direction: Direction,
    #[serde(default)]
    pub doc: String,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum ElfType {
    #[serde(rename = "FUNC")]
    Func,
    #[serde(rename = "OBJECT")]
    Object,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Import {
    pub name: Spanned<String>,
    pub elf: ElfType,
    #[serde(default)]
    pub returns: Option<Spanned<String>>,
    #[serde(default)]
    pub args: Vec<Spanned<Arg>>,
    #[serde(default)]
    pub variadic: bool,
    #[serde(default, rename = "type")]
    pub ty: Option<Spanned<String>>,
    #[serde(default)]
    pub only_in: Option<OnlyIn>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub doc: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arg {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
}
