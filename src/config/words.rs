//! Words of a configuration line: argument helpers and how tokens are shown
//! in messages. Shared by both dialects' directive parsers; imports nothing
//! from its sibling modules.

/// A byte count: digits, optionally followed by K or M (powers of 1024, either
/// case). `None` for anything else or an overflow.
pub(super) fn parse_size(token: &str) -> Option<usize> {
    let (digits, unit) = match token.char_indices().last()? {
        (i, 'k' | 'K') => (&token[..i], 1usize << 10),
        (i, 'm' | 'M') => (&token[..i], 1 << 20),
        _ => (token, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

/// The single argument of a directive.
pub(super) fn exactly_one<'t>(
    directive: &str,
    args: &[&'t str],
    expected: &str,
) -> Result<&'t str, String> {
    match args {
        [one] => Ok(one),
        [] => Err(format!("{directive}: expected {expected}, got nothing")),
        [_, extra @ ..] => Err(format!(
            "{directive}: expected only {expected}, got extra {}",
            quoted_all(extra)
        )),
    }
}

/// A decimal number in `lo..=hi`, for messages prefixed with `what`.
pub(super) fn number_in(
    what: &str,
    token: Option<&str>,
    (lo, hi): (i64, i64),
) -> Result<i64, String> {
    let Some(token) = token else {
        return Err(format!(
            "{what}: expected a number {lo}..={hi}, got nothing"
        ));
    };
    match token.parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!(
            "{what}: expected a number {lo}..={hi}, got {}",
            quoted(token)
        )),
    }
}

/// At most this many characters of a token are echoed in a message, so a
/// huge token (a 10 MB host name) does not become a huge log line.
const ECHO_CHARS: usize = 64;

/// At most this many tokens of a list are echoed in a message.
const ECHO_TOKENS: usize = 8;

/// `token`, or its first [`ECHO_CHARS`] characters, `…` and its length.
pub(super) fn clip(token: &str) -> std::borrow::Cow<'_, str> {
    match token.char_indices().nth(ECHO_CHARS) {
        None => token.into(),
        Some((cut, _)) => format!("{}… ({} bytes)", &token[..cut], token.len()).into(),
    }
}

/// A token in double quotes, control characters escaped, clipped like
/// [`clip`].
pub(super) fn quoted(token: &str) -> String {
    match token.char_indices().nth(ECHO_CHARS) {
        None => format!("{token:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &token[..cut], token.len()),
    }
}

/// Tokens quoted and separated by spaces, at most [`ECHO_TOKENS`] of them.
pub(super) fn quoted_all(tokens: &[&str]) -> String {
    if tokens.is_empty() {
        return "nothing".to_string();
    }
    let mut shown: Vec<String> = tokens.iter().take(ECHO_TOKENS).map(|t| quoted(t)).collect();
    if tokens.len() > ECHO_TOKENS {
        shown.push(format!("and {} more", tokens.len() - ECHO_TOKENS));
    }
    shown.join(" ")
}

/// ` (did you mean "X"?)` when a candidate is a near miss, else nothing.
pub(super) fn suggestion(word: &str, candidates: &[&str]) -> String {
    let best = candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d > 0 && d <= 2 && d < c.len() => format!(" (did you mean \"{c}\"?)"),
        _ => String::new(),
    }
}

/// Levenshtein distance over characters (ASCII case counts as a change).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ibrust", "iburst"), 2);
        assert_eq!(edit_distance("Server", "server"), 1);
    }

    #[test]
    fn suggestions() {
        const NAMES: &[&str] = &["server", "pool", "restrict", "io"];
        assert_eq!(suggestion("sever", NAMES), " (did you mean \"server\"?)");
        assert_eq!(suggestion("xyzzy", NAMES), "");
        // Exact matches and two-letter words that share nothing suggest nothing.
        assert_eq!(suggestion("server", NAMES), "");
        assert_eq!(suggestion("zz", NAMES), "");
    }

    #[test]
    fn argument_helpers() {
        assert_eq!(exactly_one("x", &["a"], "A"), Ok("a"));
        assert_eq!(
            exactly_one("x", &[], "A").unwrap_err(),
            "x: expected A, got nothing"
        );
        assert_eq!(
            exactly_one("x", &["a", "b", "c"], "A").unwrap_err(),
            "x: expected only A, got extra \"b\" \"c\""
        );
        assert_eq!(number_in("n", Some("5"), (1, 9)), Ok(5));
        assert!(number_in("n", Some("0"), (1, 9)).is_err());
        assert!(number_in("n", Some("x"), (1, 9)).is_err());
        assert!(number_in("n", None, (1, 9)).is_err());
        assert_eq!(quoted("a\tb"), "\"a\\tb\"");
    }

    #[test]
    fn echoed_tokens_are_clipped() {
        let huge = "x".repeat(10 << 20);
        let shown = quoted(&huge);
        assert_eq!(shown, format!("\"{}\"… (10485760 bytes)", "x".repeat(64)));
        assert_eq!(clip(&huge), format!("{}… (10485760 bytes)", "x".repeat(64)));
        // Cut at a character boundary, counted in characters.
        let wide = "é".repeat(100);
        assert_eq!(clip(&wide), format!("{}… (200 bytes)", "é".repeat(64)));
        let exact = "y".repeat(64);
        assert_eq!(clip(&exact), exact.as_str());
        let many: Vec<&str> = vec!["t"; 20];
        assert_eq!(
            quoted_all(&many),
            format!("{} and 12 more", ["\"t\""; 8].join(" "))
        );
    }
}
