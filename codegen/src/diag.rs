//! Diagnostics that name the file, line, column and key of the offending TOML.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One error found in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Where in the document: `struct virtio_snd_pcm_info, field direction, key type`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )
    }
}

/// Every diagnostic found in one pass; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diags(pub Vec<Diag>);

impl fmt::Display for Diags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diags {}

/// Turns byte spans of one source text into line and column numbers.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(path: &Path, text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            path: path.to_path_buf(),
            line_starts,
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line.saturating_sub(1)];
        (line.max(1), offset - start + 1)
    }

    pub fn diag(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Diag {
        let (line, column) = self.position(span.start);
        Diag {
            file: self.path.clone(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let s = Source::new(Path::new("x.toml"), "ab\ncd\n\nef");
        assert_eq!(s.position(0), (1, 1));
        assert_eq!(s.position(1), (1, 2));
        assert_eq!(s.position(3), (2, 1));
        assert_eq!(s.position(6), (3, 1));
        assert_eq!(s.position(7), (4, 1));
    }
}
