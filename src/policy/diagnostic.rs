//! Errors and warnings about a policy file, each at `file:line:col` with the offending line.
//!
//! The compiler reports problems by key path (`rule.3.when.any.1.subject`); this module finds the
//! path's position with toml's spanned parser, so every message can point at the exact key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The policy does not load.
    Error,
    /// The policy loads, but something in it looks wrong.
    Warning,
}

/// One message about a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// The line of the file the position is on.
    pub source_line: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(
            f,
            "{}:{}:{}: {kind}{}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if !self.source_line.is_empty() {
            let caret = " ".repeat(self.column.saturating_sub(1));
            write!(f, "\n    {}\n    {caret}^", self.source_line)?;
        }
        Ok(())
    }
}

/// A problem found by key path, before its position is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Keys and array indices from the top of the file.
    pub path: Vec<String>,
    /// What is wrong.
    pub message: String,
}

impl Located {
    /// A problem at `path`.
    pub fn new(path: &[String], message: impl Into<String>) -> Self {
        Located {
            path: path.to_vec(),
            message: message.into(),
        }
    }
}

/// A diagnostic at byte `offset` of `text`.
pub fn at_offset(
    severity: Severity,
    file: &Path,
    text: &str,
    offset: usize,
    message: String,
) -> Diagnostic {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    let source_line = text[line_start..]
        .lines()
        .next()
        .unwrap_or("")
        .trim_end()
        .to_string();
    Diagnostic {
        severity,
        file: file.to_path_buf(),
        line,
        column,
        message,
        source_line,
    }
}

/// Resolves a located problem to a diagnostic (the file start when the path cannot be found).
pub fn locate(severity: Severity, file: &Path, text: &str, problem: &Located) -> Diagnostic {
    let offset = span_of(text, &problem.path).map_or(0, |s| s.start);
    at_offset(severity, file, text, offset, problem.message.clone())
}

/// The span of the deepest key of `path` that exists (a key's own span, to point at the name).
pub fn span_of(text: &str, path: &[String]) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let mut best = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for seg in path {
        if let Some(t) = table {
            let Some((k, v)) = t.get_key_value(seg.as_str()) else {
                break;
            };
            best = Some(k.span());
            value = Some(v);
        } else if let (Some(v), Ok(i)) = (value, seg.parse::<usize>()) {
            let DeValue::Array(items) = v.get_ref() else {
                break;
            };
            let Some(item) = items.get(i) else { break };
            best = Some(item.span());
            value = Some(item);
        } else {
            break;
        }
        table = match value.map(Spanned::get_ref) {
            Some(DeValue::Table(t)) => Some(t),
            _ => None,
        };
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[policy]\nname = \"x\"\n\n[[rule]]\nname = \"a\"\n\n[[rule]]\nname = \"b\"\nwhen = { any = [ { subject = { has_word = \"x\" } }, { subjet = {} } ] }\n";

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_keys_inside_arrays_of_tables_and_inline_tables() {
        let d = locate(
            Severity::Error,
            Path::new("p.toml"),
            TEXT,
            &Located::new(
                &path(&["rule", "1", "when", "any", "1", "subjet"]),
                "unknown field",
            ),
        );
        assert_eq!((d.line, d.column), (9, 54));
        assert_eq!(
            d.to_string(),
            format!(
                "p.toml:9:54: unknown field\n    {}\n    {}^",
                TEXT.lines().nth(8).unwrap(),
                " ".repeat(53)
            )
        );
    }

    #[test]
    fn missing_path_points_at_the_deepest_existing_key() {
        let d = locate(
            Severity::Warning,
            Path::new("p.toml"),
            TEXT,
            &Located::new(&path(&["rule", "0", "when"]), "m"),
        );
        assert_eq!((d.line, d.column), (4, 1));
        assert!(d.to_string().starts_with("p.toml:4:1: warning: m"));
    }
}
