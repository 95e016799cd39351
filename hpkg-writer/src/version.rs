//! Haiku package versions: the grammar of docs/develop/packages/BuildingPackages.rst
//! ("Version Strings") as `BPackageInfo::Parser::_ParseVersionValue`
//! (src/kits/package/PackageInfoParser.cpp) applies it, and `BPackageVersion::ToString`
//! (src/kits/package/PackageVersion.cpp).
//!
//! `major[.minor[.micro]][~pre_release][-revision]`: the revision is what follows the last
//! `-` (a number, 1 to 2^32-1; required in a package's own version, optional in a
//! resolvable's), the pre-release what follows the last `~`; major and minor are letters,
//! digits and `_`, micro and pre-release may also hold `.`. Haiku stores every part in
//! lower case.

use std::fmt;

/// A parsed version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: String,
    pub minor: String,
    pub micro: String,
    pub pre_release: String,
    /// 0: none.
    pub revision: u32,
}

/// Why a version string is refused: the 0-based column and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionError {
    pub text: String,
    pub column: usize,
    pub message: &'static str,
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "version \"{}\", column {}: {} (Haiku's version grammar: \
             major[.minor[.micro]][~pre_release]-revision)",
            self.text,
            self.column + 1,
            self.message
        )
    }
}

impl std::error::Error for VersionError {}

/// The index of the first character that is not ASCII alphanumeric, `_` or one of `extra`.
fn bad_char(s: &str, extra: &str) -> Option<usize> {
    s.char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || extra.contains(c)))
        .map(|(i, _)| i)
}

impl Version {
    /// Parses `text`; `revision_optional` is false for a package's own version.
    pub fn parse(text: &str, revision_optional: bool) -> Result<Version, VersionError> {
        let err = |column: usize, message| VersionError {
            text: text.to_string(),
            column,
            message,
        };
        let mut rest = text;
        let mut revision = 0u32;
        if let Some(dash) = rest.rfind('-') {
            let digits = &rest[dash + 1..];
            revision = parse_revision(digits).ok_or_else(|| {
                err(
                    dash + 1,
                    "the revision must be a number from 1 to 4294967295",
                )
            })?;
            rest = &rest[..dash];
        }
        if revision == 0 && !revision_optional {
            return Err(err(
                rest.len(),
                "expected a revision number (a -<number> suffix)",
            ));
        }
        let mut pre_release = "";
        if let Some(tilde) = rest.rfind('~') {
            pre_release = &rest[tilde + 1..];
            if pre_release.is_empty() {
                return Err(err(tilde + 1, "empty pre-release string"));
            }
            if let Some(i) = bad_char(pre_release, ".") {
                return Err(err(
                    tilde + 1 + i,
                    "invalid character in the pre-release string",
                ));
            }
            rest = &rest[..tilde];
        }
        let (major, minor, micro) = match rest.find('.') {
            None => (rest, "", ""),
            Some(d1) => {
                let after = &rest[d1 + 1..];
                match after.find('.') {
                    Some(0) => return Err(err(d1 + 1, "expected a minor version")),
                    None => (&rest[..d1], after, ""),
                    Some(d2) => {
                        let micro = &after[d2 + 1..];
                        if let Some(i) = bad_char(micro, ".") {
                            return Err(err(
                                d1 + 1 + d2 + 1 + i,
                                "invalid character in the micro version",
                            ));
                        }
                        (&rest[..d1], &after[..d2], micro)
                    }
                }
            }
        };
        if let Some(i) = bad_char(minor, "") {
            return Err(err(
                major.len() + 1 + i,
                "invalid character in the minor version",
            ));
        }
        if let Some(i) = bad_char(major, "") {
            return Err(err(i, "invalid character in the major version"));
        }
        // BPackageVersion::InitCheck: a version without a major part is no version.
        if major.is_empty() {
            return Err(err(0, "empty major version"));
        }
        if !micro.is_empty() && minor.is_empty() {
            return Err(err(major.len() + 1, "expected a minor version"));
        }
        Ok(Version {
            major: major.to_ascii_lowercase(),
            minor: minor.to_ascii_lowercase(),
            micro: micro.to_ascii_lowercase(),
            pre_release: pre_release.to_ascii_lowercase(),
            revision,
        })
    }
}

/// `strtoll(.., 0)` accepting only a whole decimal number in 0..=u32::MAX, as the parser
/// does for decimal input (it also takes 0x.. and 0.. octal; a version has no use for them).
fn parse_revision(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok()
}

impl fmt::Display for Version {
    /// `BPackageVersion::ToString`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.major)?;
        if !self.minor.is_empty() {
            write!(f, ".{}", self.minor)?;
            if !self.micro.is_empty() {
                write!(f, ".{}", self.micro)?;
            }
        }
        if !self.pre_release.is_empty() {
            write!(f, "~{}", self.pre_release)?;
        }
        if self.revision > 0 {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}
