//! Configuration text as numbered lines, each with the file it came from,
//! and how each dialect splits a line into words.

use std::sync::Arc;

use super::model::{ConfigError, MAX_LINE_BYTES};

/// What a line may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LineKind {
    /// Any directive of the file's dialect.
    Config,
    /// A line of a chrony `sourcedir` file: `server`, `pool` or `peer` only.
    Sources,
}

/// One line of a file, for the chrony dialect, whose lines may come from
/// several files.
#[derive(Clone, Debug)]
pub(super) struct Line {
    /// The file, as shown in messages.
    pub source: Arc<str>,
    /// 1-based.
    pub number: usize,
    pub text: String,
    pub kind: LineKind,
}

/// The lines of `text` with their 1-based numbers, a leading byte-order mark
/// dropped; a line longer than [`MAX_LINE_BYTES`] is an error at its number.
pub(super) fn numbered<'t>(
    text: &'t str,
    source: &'t str,
) -> impl Iterator<Item = Result<(usize, &'t str), ConfigError>> + 't {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines().enumerate().map(move |(index, line)| {
        if line.len() > MAX_LINE_BYTES {
            return Err(ConfigError {
                source: source.to_string(),
                line: index + 1,
                message: format!(
                    "the line is longer than {MAX_LINE_BYTES} bytes, the limit for one line"
                ),
            });
        }
        Ok((index + 1, line))
    })
}

/// The words of an ntp.conf line: `#` starts a comment anywhere.
pub(super) fn ntp_words(line: &str) -> Vec<&str> {
    let content = match line.split_once('#') {
        Some((before, _comment)) => before,
        None => line,
    };
    content.split_whitespace().collect()
}

/// The words of a chrony.conf line: as chronyd reads it, a line whose first
/// character after white space is `!`, `;`, `#` or `%` is a comment, and
/// nothing else is (`#` later in a line is a word like any other).
pub(super) fn chrony_words(line: &str) -> Vec<&str> {
    match line.trim_start().chars().next() {
        None | Some('!' | ';' | '#' | '%') => Vec::new(),
        Some(_) => line.split_whitespace().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_in_each_dialect() {
        assert_eq!(ntp_words("server a # b"), ["server", "a"]);
        assert_eq!(ntp_words("server a#b"), ["server", "a"]);
        assert!(ntp_words("  # x").is_empty());
        assert_eq!(chrony_words("server a # b"), ["server", "a", "#", "b"]);
        for comment in ["# x", "  ! x", "\t; x", "%x", "", "   "] {
            assert!(chrony_words(comment).is_empty(), "{comment:?}");
        }
        assert_eq!(chrony_words(" driftfile /a#b"), ["driftfile", "/a#b"]);
    }

    #[test]
    fn numbering_and_limits() {
        let text = "\u{feff}a\r\nb\n\nc";
        let lines: Vec<(usize, &str)> = numbered(text, "f").map(Result::unwrap).collect();
        assert_eq!(lines, [(1, "a"), (2, "b"), (3, ""), (4, "c")]);
        let long = format!("a\n{}\n", "x".repeat(MAX_LINE_BYTES + 1));
        let e = numbered(&long, "f").find_map(Result::err).unwrap();
        assert_eq!((e.source.as_str(), e.line), ("f", 2));
    }
}
