//! The field-type grammar of the spec TOML (`le32`, `[u8; 5]`, `user_ptr<buffer_desc>`,
//! `fn(ptr<void>, u64) -> status_t`) and the C layout of the primitive types on x86_64.

use std::fmt;

/// A primitive C type with a fixed x86_64 layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prim {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    Le16,
    Le32,
    Le64,
    F32,
    F64,
    Bool,
    Char,
    SizeT,
}

impl Prim {
    pub const ALL: [(&'static str, Prim); 16] = [
        ("u8", Prim::U8),
        ("u16", Prim::U16),
        ("u32", Prim::U32),
        ("u64", Prim::U64),
        ("i8", Prim::I8),
        ("i16", Prim::I16),
        ("i32", Prim::I32),
        ("i64", Prim::I64),
        ("le16", Prim::Le16),
        ("le32", Prim::Le32),
        ("le64", Prim::Le64),
        ("f32", Prim::F32),
        ("f64", Prim::F64),
        ("bool", Prim::Bool),
        ("char", Prim::Char),
        ("size_t", Prim::SizeT),
    ];

    pub fn from_name(name: &str) -> Option<Prim> {
        Prim::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    pub fn name(self) -> &'static str {
        Prim::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Size in bytes; natural alignment equals the size for every primitive on x86_64.
    pub fn size(self) -> u64 {
        match self {
            Prim::U8 | Prim::I8 | Prim::Bool | Prim::Char => 1,
            Prim::U16 | Prim::I16 | Prim::Le16 => 2,
            Prim::U32 | Prim::I32 | Prim::Le32 | Prim::F32 => 4,
            Prim::U64 | Prim::I64 | Prim::Le64 | Prim::F64 | Prim::SizeT => 8,
        }
    }

    /// Allowed in a virtio wire structure (fixed byte order).
    pub fn is_wire(self) -> bool {
        matches!(self, Prim::U8 | Prim::Le16 | Prim::Le32 | Prim::Le64)
    }

    pub fn is_integer(self) -> bool {
        !matches!(self, Prim::F32 | Prim::F64 | Prim::Bool)
    }

    pub fn is_signed(self) -> bool {
        matches!(
            self,
            Prim::I8 | Prim::I16 | Prim::I32 | Prim::I64 | Prim::Char
        )
    }

    /// Value range of an integer primitive, for checking constants.
    pub fn range(self) -> Option<(i128, i128)> {
        if !self.is_integer() {
            return None;
        }
        let bits = self.size() as u32 * 8;
        Some(if self.is_signed() {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PtrKind {
    /// `ptr<T>`: a kernel pointer the driver may write through.
    Mut,
    /// `const_ptr<T>`.
    Const,
    /// `user_ptr<T>`: the ioctl caller's memory, reachable only through `user_memcpy`.
    User,
}

/// A parsed field type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ty {
    Void,
    Prim(Prim),
    /// A typedef, struct or union name, resolved later.
    Named(String),
    Array(Box<Ty>, u64),
    Ptr(PtrKind, Box<Ty>),
    Fn {
        args: Vec<Ty>,
        variadic: bool,
        ret: Option<Box<Ty>>,
    },
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Void => f.write_str("void"),
            Ty::Prim(p) => f.write_str(p.name()),
            Ty::Named(n) => f.write_str(n),
            Ty::Array(t, n) => write!(f, "[{t}; {n}]"),
            Ty::Ptr(PtrKind::Mut, t) => write!(f, "ptr<{t}>"),
            Ty::Ptr(PtrKind::Const, t) => write!(f, "const_ptr<{t}>"),
            Ty::Ptr(PtrKind::User, t) => write!(f, "user_ptr<{t}>"),
            Ty::Fn {
                args,
                variadic,
                ret,
            } => {
                f.write_str("fn(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                if *variadic {
                    f.write_str(if args.is_empty() { "..." } else { ", ..." })?;
                }
                f.write_str(")")?;
                if let Some(r) = ret {
                    write!(f, " -> {r}")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Num(u64),
    Punct(&'static str),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(s[start..i].to_string()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let text = s[start..i].replace('_', "");
            let n = if let Some(hex) = text.strip_prefix("0x") {
                u64::from_str_radix(hex, 16)
            } else {
                text.parse()
            }
            .map_err(|_| format!("bad number `{}`", &s[start..i]))?;
            out.push(Tok::Num(n));
        } else if s[i..].starts_with("->") {
            out.push(Tok::Punct("->"));
            i += 2;
        } else if s[i..].starts_with("...") {
            out.push(Tok::Punct("..."));
            i += 3;
        } else {
            let p = match c {
                b'<' => "<",
                b'>' => ">",
                b'[' => "[",
                b']' => "]",
                b';' => ";",
                b'(' => "(",
                b')' => ")",
                b',' => ",",
                _ => return Err(format!("unexpected character `{}`", c as char)),
            };
            out.push(Tok::Punct(p));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat(&mut self, p: &'static str) -> bool {
        if self.peek() == Some(&Tok::Punct(p)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &'static str) -> Result<(), String> {
        if self.eat(p) {
            Ok(())
        } else {
            Err(format!("expected `{p}`"))
        }
    }

    fn ty(&mut self) -> Result<Ty, String> {
        match self.next() {
            Some(Tok::Punct("[")) => {
                let elem = self.ty()?;
                self.expect(";")?;
                let n = match self.next() {
                    Some(Tok::Num(n)) => n,
                    _ => return Err("expected an array length".into()),
                };
                self.expect("]")?;
                if n == 0 {
                    return Err("zero-length arrays are not C".into());
                }
                Ok(Ty::Array(Box::new(elem), n))
            }
            Some(Tok::Ident(id)) => match id.as_str() {
                "void" => Ok(Ty::Void),
                "ptr" | "const_ptr" | "user_ptr" => {
                    self.expect("<")?;
                    let inner = self.ty()?;
                    self.expect(">")?;
                    let kind = match id.as_str() {
                        "ptr" => PtrKind::Mut,
                        "const_ptr" => PtrKind::Const,
                        _ => PtrKind::User,
                    };
                    Ok(Ty::Ptr(kind, Box::new(inner)))
                }
                "fn" => {
                    self.expect("(")?;
                    let mut args = Vec::new();
                    let mut variadic = false;
                    if !self.eat(")") {
                        loop {
                            if self.eat("...") {
                                variadic = true;
                                self.expect(")")?;
                                break;
                            }
                            args.push(self.ty()?);
                            if self.eat(")") {
                                break;
                            }
                            self.expect(",")?;
                        }
                    }
                    let ret = if self.eat("->") {
                        Some(Box::new(self.ty()?))
                    } else {
                        None
                    };
                    Ok(Ty::Fn {
                        args,
                        variadic,
                        ret,
                    })
                }
                _ => Ok(Prim::from_name(&id).map(Ty::Prim).unwrap_or(Ty::Named(id))),
            },
            Some(t) => Err(format!("unexpected `{}`", tok_text(&t))),
            None => Err("unexpected end of type".into()),
        }
    }
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => s.clone(),
        Tok::Num(n) => n.to_string(),
        Tok::Punct(p) => (*p).to_string(),
    }
}

/// Parses one type spelling.
pub fn parse(s: &str) -> Result<Ty, String> {
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
    };
    let t = p.ty()?;
    if let Some(extra) = p.peek() {
        return Err(format!("unexpected `{}` after the type", tok_text(extra)));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        for s in [
            "u8",
            "le32",
            "[u8; 5]",
            "[[char; 4]; 2]",
            "user_ptr<user_ptr<buffer_desc>>",
            "const_ptr<char>",
            "fn(ptr<device_node>) -> f32",
            "fn(i32, ...) -> status_t",
            "fn()",
            "fn(...)",
            "ptr<fn(u64) -> const_ptr<char>>",
            "virtio_snd_hdr",
        ] {
            let t = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(t.to_string(), s, "display round trip");
        }
        assert_eq!(
            parse("[u8;0x10]").unwrap(),
            Ty::Array(Box::new(Ty::Prim(Prim::U8)), 16)
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "[u8]",
            "[u8; 0]",
            "ptr<u8",
            "u8 u8",
            "fn(u8",
            "fn(..., u8)",
            "u8$",
            "[u8; x]",
        ] {
            assert!(parse(s).is_err(), "{s} should not parse");
        }
    }

    #[test]
    fn integer_ranges() {
        assert_eq!(Prim::U8.range(), Some((0, 255)));
        assert_eq!(Prim::I32.range(), Some((-(1 << 31), (1 << 31) - 1)));
        assert_eq!(Prim::F32.range(), None);
    }
}
