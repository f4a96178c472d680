//! The file system side: reading a file with a size limit, and gathering
//! the lines of a chrony.conf and of the files it includes, as chronyd
//! does: `confdir DIR...` reads the `*.conf` files of the directories,
//! `sourcedir DIR...` the `*.sources` files (each name once, the first
//! directory that has it winning, in order of the file names), `include
//! PATTERN` the files the pattern matches, in sorted order. Missing
//! directories are skipped, as chronyd skips them. Nesting is limited to
//! [`MAX_DEPTH`] levels and all files together to [`MAX_FILE_BYTES`], so an
//! include loop or a runaway directory ends in an error. The parsers never
//! touch the file system.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chrony::{self, MAX_DIRS};
use super::lines::{self, Line, LineKind};
use super::model::{ConfigError, MAX_FILE_BYTES};

/// The deepest nesting of included files, as in chronyd.
pub(super) const MAX_DEPTH: usize = 10;

/// The most files one configuration may gather.
pub(super) const MAX_FILES: usize = 1000;

/// The whole of a file as text, read with a size limit of `limit` bytes.
pub(super) fn read_text(path: &Path, source: &str, limit: u64) -> Result<String, ConfigError> {
    let located = |line: usize, message: String| ConfigError {
        source: source.to_string(),
        line,
        message,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| located(0, format!("cannot read the configuration file: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(located(
            0,
            format!(
                "the file is larger than {} MiB, the limit for a configuration file \
                 (with the files it includes); is this the right path?",
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        located(line, "the line is not valid UTF-8".to_string())
    })
}

/// What has been read so far.
struct Budget {
    bytes: u64,
    files: usize,
}

/// The lines of the chrony.conf `text` (read from `source`) and of every
/// file it includes, in the order chronyd reads them.
pub(super) fn chrony_lines(source: &str, text: &str) -> Result<Vec<Line>, ConfigError> {
    let mut out = Vec::new();
    let mut budget = Budget {
        bytes: text.len() as u64,
        files: 1,
    };
    gather(
        &mut out,
        &mut budget,
        source.into(),
        text,
        LineKind::Config,
        0,
    )?;
    Ok(out)
}

fn gather(
    out: &mut Vec<Line>,
    budget: &mut Budget,
    source: Arc<str>,
    text: &str,
    kind: LineKind,
    depth: usize,
) -> Result<(), ConfigError> {
    for numbered in lines::numbered(text, &source) {
        let (number, raw) = numbered?;
        out.push(Line {
            source: source.clone(),
            number,
            text: raw.to_string(),
            kind,
        });
        if kind != LineKind::Config {
            continue;
        }
        let words = lines::chrony_words(raw);
        let Some((name, args)) = words.split_first() else {
            continue;
        };
        let located = |message: String| ConfigError {
            source: source.to_string(),
            line: number,
            message,
        };
        let files = match name.to_ascii_lowercase().as_str() {
            "confdir" => match chrony::directories("confdir", args) {
                Ok(dirs) => directory_files(&dirs, ".conf", LineKind::Config),
                // The parser reports the line.
                Err(_) => continue,
            },
            "sourcedir" => match chrony::directories("sourcedir", args) {
                Ok(dirs) => directory_files(&dirs, ".sources", LineKind::Sources),
                Err(_) => continue,
            },
            "include" if args.len() == 1 => pattern_files(args[0]).map_err(located)?,
            _ => continue,
        };
        if !files.is_empty() && depth + 1 > MAX_DEPTH {
            return Err(located(format!(
                "{name}: files included more than {MAX_DEPTH} levels deep; does a file \
                 include itself?"
            )));
        }
        for (path, kind) in files {
            read_included(out, budget, &path, kind, depth + 1).map_err(|e| match e.line {
                // A file that cannot be read is named with the line that includes it.
                0 => located(format!("{name}: {}: {}", path.display(), e.message)),
                _ => e,
            })?;
        }
    }
    Ok(())
}

fn read_included(
    out: &mut Vec<Line>,
    budget: &mut Budget,
    path: &Path,
    kind: LineKind,
    depth: usize,
) -> Result<(), ConfigError> {
    let source: Arc<str> = path.display().to_string().into();
    budget.files += 1;
    if budget.files > MAX_FILES {
        return Err(ConfigError {
            source: source.to_string(),
            line: 0,
            message: format!("more than {MAX_FILES} files are included in all"),
        });
    }
    let text = read_text(path, &source, MAX_FILE_BYTES.saturating_sub(budget.bytes))?;
    budget.bytes += text.len() as u64;
    let text = match kind {
        // chronyd reads a sources file's lines only up to one that lacks its
        // newline (a file being written).
        LineKind::Sources => match text.rfind('\n') {
            Some(end) => text[..=end].to_string(),
            None => String::new(),
        },
        LineKind::Config => text,
    };
    gather(out, budget, source, &text, kind, depth)
}

/// The files named `*SUFFIX` (not hidden) in `dirs`, sorted by file name;
/// of files with the same name in several directories, the one in the
/// directory listed first. Directories that cannot be read are skipped.
fn directory_files(dirs: &[&str], suffix: &str, kind: LineKind) -> Vec<(PathBuf, LineKind)> {
    debug_assert!(dirs.len() <= MAX_DIRS);
    let mut found: Vec<(String, usize, PathBuf)> = Vec::new();
    for (order, dir) in dirs.iter().enumerate() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            if name.starts_with('.') || !name.ends_with(suffix) || !path.is_file() {
                continue;
            }
            found.push((name, order, path));
        }
    }
    found.sort();
    found.dedup_by(|later, first| later.0 == first.0);
    found.into_iter().map(|(_, _, path)| (path, kind)).collect()
}

/// The files `pattern` matches, sorted. A pattern without `*`, `?` or `[`
/// names one file, which must exist; one with them may match nothing.
fn pattern_files(pattern: &str) -> Result<Vec<(PathBuf, LineKind)>, String> {
    if !pattern.contains(['*', '?', '[']) {
        return Ok(vec![(PathBuf::from(pattern), LineKind::Config)]);
    }
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let paths = glob::glob_with(pattern, options)
        .map_err(|e| format!("include: {} is not a valid pattern: {e}", pattern))?;
    let mut files = Vec::new();
    for path in paths {
        let path = path.map_err(|e| format!("include {pattern}: {e}"))?;
        if path.is_file() {
            files.push((path, LineKind::Config));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}
