//! Driver settings: the text a test provides for `load_driver_settings(name)`, parsed the way
//! Haiku's `driver_settings.cpp` parses a settings file.
//!
//! The format: parameters separated by newlines or `;`, each a name followed by values on
//! the same line; `#` starts a comment; words may be quoted with `"` or `'` and may escape
//! any character with `\`; the first value may be separated by `=` (`key = value`); `{ }`
//! after a parameter holds sub-parameters (at most 8 levels). A malformed file (a missing
//! end quote, a trailing backslash, unbalanced braces) makes `load_driver_settings` return
//! NULL, as on Haiku. A lookup finds the *last* top-level parameter of that name, like
//! Haiku's `get_parameter`.

use std::ffi::CString;

/// Haiku refuses larger settings files.
pub(crate) const MAX_SETTINGS_SIZE: usize = 32768;
const MAX_SETTINGS_LEVEL: usize = 8;

/// One parameter with its values and sub-parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parameter {
    pub name: CString,
    pub values: Vec<CString>,
    pub children: Vec<Parameter>,
}

/// A parse failure (Haiku just returns a NULL handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError(pub &'static str);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Assignment {
    No,
    Allow,
    Ignore,
}

/// What `get_word` found after the word.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// The parameter ends here (newline, `;`, `{`, `}`, `#` or the end).
    End,
    /// Another value follows on the same line.
    Continue,
    /// There was no word at all.
    Nothing,
}

fn is_separator(c: u8) -> bool {
    c == b'\n' || c == b';'
}

/// C's `isspace` in the C locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_word_break(c: u8) -> bool {
    is_space(c) || is_separator(c)
}

struct Parser {
    /// The text with a terminating NUL, as Haiku's parser sees it.
    text: Vec<u8>,
    pos: usize,
}

impl Parser {
    fn at(&self, i: usize) -> u8 {
        self.text.get(i).copied().unwrap_or(0)
    }

    fn cur(&self) -> u8 {
        self.at(self.pos)
    }

    /// Haiku's `get_word`: skips blanks (and, with `allow_newline`, newlines and comments),
    /// reads one possibly quoted, possibly escaped word, and looks ahead to tell whether
    /// the parameter continues on this line.
    fn get_word(
        &mut self,
        mode: Assignment,
        allow_newline: bool,
    ) -> Result<(After, Vec<u8>), ParseError> {
        let mut pos = self.pos;
        loop {
            let c = self.at(pos);
            let skip = c != 0
                && ((allow_newline && (is_space(c) || is_separator(c) || c == b'#'))
                    || (!allow_newline && (c == b'\t' || c == b' '))
                    || (mode == Assignment::Allow && c == b'='));
            if !skip {
                break;
            }
            if c == b'#' {
                while self.at(pos) != 0 && self.at(pos) != b'\n' {
                    pos += 1;
                }
            }
            pos += 1;
        }
        if self.at(pos) == b'}' || self.at(pos) == 0 {
            self.pos = pos;
            return Ok((After::Nothing, Vec::new()));
        }
        let mut quoted = 0u8;
        if self.at(pos) == b'"' || self.at(pos) == b'\'' {
            quoted = self.at(pos);
            pos += 1;
        }
        let mut word = Vec::new();
        let mut escaped = false;
        while self.at(pos) != 0 {
            let c = self.at(pos);
            if escaped {
                escaped = false;
                word.push(c);
            } else if c == b'\\' {
                escaped = true;
            } else if (quoted == 0
                && (is_word_break(c) || (mode != Assignment::Ignore && c == b'=')))
                || (quoted != 0 && c == quoted)
            {
                break;
            } else {
                word.push(c);
            }
            pos += 1;
        }
        if quoted != 0 && self.at(pos) != quoted {
            return Err(ParseError("a quoted string has no end quote"));
        }
        if escaped {
            return Err(ParseError("the text ends with a backslash"));
        }
        let end = self.at(pos) == 0;
        let mut new_line = is_separator(self.at(pos)) || end;
        if end {
            self.pos = pos;
            return Ok((After::End, word));
        }
        // Haiku overwrites the terminator with a NUL; the scan below starts after it, so
        // only its effect on `end`/`new_line` (taken above) matters.
        pos += 1;
        loop {
            self.pos = pos;
            let c = self.at(pos);
            if c == 0 {
                return Ok((After::End, word));
            }
            if is_separator(c) {
                // An opening brace may follow after the first newline, but not later.
                if new_line {
                    return Ok((After::End, word));
                }
                new_line = true;
            } else if c == b'{' || c == b'}' || c == b'#' {
                return Ok((After::End, word));
            } else if !is_space(c) {
                return Ok((
                    if new_line {
                        After::End
                    } else {
                        After::Continue
                    },
                    word,
                ));
            }
            pos += 1;
        }
    }

    fn parse_parameter(&mut self) -> Result<Option<Parameter>, ParseError> {
        let (mut after, name) = self.get_word(Assignment::No, true)?;
        if after == After::Nothing {
            return Ok(None);
        }
        let mut values = Vec::new();
        while after == After::Continue {
            let mode = if values.is_empty() {
                Assignment::Allow
            } else {
                Assignment::Ignore
            };
            let (a, value) = self.get_word(mode, false)?;
            after = a;
            // Haiku stores an unset pointer when no word follows (`key =` at the end of
            // the text); the simulator stores no value there.
            if a != After::Nothing {
                values.push(cstring(value));
            }
        }
        Ok(Some(Parameter {
            name: cstring(name),
            values,
            children: Vec::new(),
        }))
    }

    fn parse_parameters(&mut self, level: usize) -> Result<Vec<Parameter>, ParseError> {
        if level > MAX_SETTINGS_LEVEL {
            return Err(ParseError("sub-parameters nest too deep"));
        }
        let mut list = Vec::new();
        loop {
            if let Some(mut p) = self.parse_parameter()? {
                if self.cur() == b'{' {
                    self.pos += 1;
                    p.children = self.parse_parameters(level + 1)?;
                }
                list.push(p);
            }
            let c = self.cur();
            if (c == b'}' && level > 0) || (c == 0 && level == 0) {
                self.pos += 1;
                return Ok(list);
            }
            if c == b'}' || c == 0 {
                return Err(ParseError("unbalanced braces"));
            }
        }
    }
}

fn cstring(bytes: Vec<u8>) -> CString {
    // Words never contain a NUL: the parser stops at the first one.
    CString::new(bytes).unwrap_or_default()
}

/// Parses settings text into its top-level parameters.
pub(crate) fn parse(text: &str) -> Result<Vec<Parameter>, ParseError> {
    let mut bytes: Vec<u8> = text.as_bytes().to_vec();
    // The file is read into a NUL-terminated buffer; an embedded NUL ends it there.
    if let Some(n) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(n);
    }
    bytes.push(0);
    Parser {
        text: bytes,
        pos: 0,
    }
    .parse_parameters(0)
}

/// A loaded settings file: what a `load_driver_settings` handle points to.
#[derive(Debug)]
pub(crate) struct Handle {
    pub name: String,
    pub parameters: Vec<Parameter>,
}

impl Handle {
    /// Haiku's `get_parameter`: the last top-level parameter called `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Parameter> {
        self.parameters
            .iter()
            .rev()
            .find(|p| p.name.as_bytes() == key)
    }
}

/// Haiku's boolean words (`get_driver_boolean_parameter`).
pub(crate) fn boolean(value: &[u8]) -> Option<bool> {
    let v = value.to_ascii_lowercase();
    match v.as_slice() {
        b"1" | b"true" | b"yes" | b"on" | b"enable" | b"enabled" => Some(true),
        b"0" | b"false" | b"no" | b"off" | b"disable" | b"disabled" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &[Parameter]) -> Vec<String> {
        p.iter()
            .map(|p| p.name.to_string_lossy().into_owned())
            .collect()
    }

    fn values(p: &Parameter) -> Vec<String> {
        p.values
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn lines_comments_quotes_and_assignments() {
        let p = parse(
            "# a comment\nframes_per_buffer 480\nname \"two words\" 'x y'\n\
             key = value\nescaped a\\ b\nflag\nlevel 1; other 2 # trailing\n",
        )
        .unwrap();
        assert_eq!(
            names(&p),
            [
                "frames_per_buffer",
                "name",
                "key",
                "escaped",
                "flag",
                "level",
                "other"
            ]
        );
        assert_eq!(values(&p[0]), ["480"]);
        assert_eq!(values(&p[1]), ["two words", "x y"]);
        assert_eq!(values(&p[2]), ["value"]);
        assert_eq!(values(&p[3]), ["a b"]);
        assert!(p[4].values.is_empty());
        assert_eq!(values(&p[6]), ["2"]);
    }

    #[test]
    fn blocks_and_errors() {
        let p = parse("device {\n\tmode fast\n\trate 48000\n}\nafter 1\n").unwrap();
        assert_eq!(names(&p), ["device", "after"]);
        assert_eq!(names(&p[0].children), ["mode", "rate"]);
        assert!(parse("name \"open").is_err());
        assert!(parse("trailing \\").is_err());
        assert!(parse("a {\n b 1\n").is_err());
        assert!(parse("}\n").is_err());
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn the_last_parameter_wins_and_booleans() {
        let h = Handle {
            name: "x".into(),
            parameters: parse("k 1\nk 2\n").unwrap(),
        };
        assert_eq!(values(h.get(b"k").unwrap()), ["2"]);
        assert_eq!(boolean(b"Enabled"), Some(true));
        assert_eq!(boolean(b"off"), Some(false));
        assert_eq!(boolean(b"maybe"), None);
    }
}
