//! Reading a `.env` file the way the Node gateways read theirs: npm `dotenv`'s rules, which
//! Node's own `--env-file` follows too.
//!
//! Why not the `dotenvy` crate: it reads values with shell rules, so quotes inside an unquoted
//! value are taken as quoting. The seeds' own `.env.example` has
//! `UPSTREAMS={"example":["http://localhost:3001"]}`, which dotenv reads as the JSON it is and
//! dotenvy as `{example:[http://localhost:3001]}`: the file a team brings would fail.
//!
//! The rules, as dotenv has them:
//! - `NAME=value`, `export NAME=value` or `NAME: value` (the colon right after the name); a name
//!   is letters, digits, `_`, `.` and `-`. Blank lines and lines starting with `#` are skipped,
//!   and so is a byte-order mark at the start of the file.
//! - A value that starts with `'`, `"` or `` ` `` runs to the same quote, across lines if it
//!   must, and only blanks or a comment may follow that quote on its line. A quote right after
//!   a backslash may close the value or be part of it; the last one that fits closes it.
//! - Otherwise the value runs to the end of the line or to a `#` (a comment), trimmed; quotes
//!   in it are kept, except that a value that then starts and ends with the same quote loses
//!   those two.
//! - In a value that starts with `"`, `\n` and `\r` are a newline and a carriage return.
//!   Nothing else is escaped.
//!
//! One difference, for an operator's sake: a line that is none of these (a name without `=`)
//! is an error naming the line, where dotenv skips it in silence.

/// The variables `text` sets, in file order (a later line for the same name wins).
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    // A byte-order mark, as some Windows editors write it, is no part of the first name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut vars = Vec::new();
    let mut pos = 0;
    let mut line_no = 1;
    while pos < text.len() {
        let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = &text[pos..line_end];
        let entry = line.trim_start();
        if entry.is_empty() || entry.starts_with('#') {
            (pos, line_no) = (line_end + 1, line_no + 1);
            continue;
        }
        let entry = entry
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(entry, |rest| rest.trim_start_matches([' ', '\t']));
        let name_len = entry
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .unwrap_or(entry.len());
        let (name, after_name) = entry.split_at(name_len);
        // `NAME = value`, or `NAME: value` with the colon right after the name.
        let spaced = after_name.trim_start_matches([' ', '\t']);
        let value = match (after_name.as_bytes(), spaced.as_bytes()) {
            (_, [b'=', ..]) if !name.is_empty() => &spaced[1..],
            ([b':', b' ' | b'\t', ..], _) if !name.is_empty() => &after_name[1..],
            _ => return Err(format!("line {line_no}: expected NAME=value")),
        };
        let value = value.trim_start_matches([' ', '\t']);
        let value_at = line_end - value.len();
        let (value, next) = match quoted(&text, value_at) {
            Some((value, end_of_entry)) => (value, end_of_entry),
            None => {
                let end = value.find('#').unwrap_or(value.len());
                (unquote(value[..end].trim()), line_end)
            }
        };
        line_no += text[pos..next].matches('\n').count() + 1;
        vars.push((name.to_owned(), value));
        pos = next + 1;
    }
    Ok(vars)
}

/// A quoted value starting at `at` in `text`: its content, and where the line holding its
/// closing quote ends. `None` when it is not one: no quote, never closed, or more than a
/// comment after the closing quote on its line.
///
/// dotenv's pattern is `"(?:\\"|[^"])*"` followed by blanks and an optional comment, and it
/// is greedy: a quote right after a backslash may be passed over or may close, so the closing
/// quote is the last of those (up to the first quote with no backslash before it) that is
/// followed by nothing but blanks or a comment on its line.
fn quoted(text: &str, at: usize) -> Option<(String, usize)> {
    let quote = text[at..]
        .chars()
        .next()
        .filter(|c| matches!(c, '"' | '\'' | '`'))?;
    let body = &text[at + 1..];
    let mut candidates = Vec::new();
    let mut after_backslash = false;
    for (i, c) in body.char_indices() {
        if c == quote {
            candidates.push(i);
            if !after_backslash {
                break;
            }
        }
        after_backslash = c == '\\';
    }
    let (close, line_end) = candidates.into_iter().rev().find_map(|close| {
        let after = &body[close + 1..];
        let line = &after[..after.find('\n').unwrap_or(after.len())];
        let rest = line.trim_start();
        (rest.is_empty() || rest.starts_with('#')).then_some((close, close + 1 + line.len()))
    })?;
    Some((unquote(&text[at..at + 1 + close + 1]), at + 1 + line_end))
}

/// What dotenv makes of a value once taken from the line: a value that starts and ends with
/// the same quote loses them, and one that starts with `"` has its `\n` and `\r` turned into
/// a newline and a carriage return.
fn unquote(value: &str) -> String {
    let first = value.chars().next();
    let inner = match first {
        Some(q @ ('"' | '\'' | '`')) if value.len() >= 2 && value.ends_with(q) => {
            &value[1..value.len() - 1]
        }
        _ => value,
    };
    if first == Some('"') {
        inner.replace("\\n", "\n").replace("\\r", "\r")
    } else {
        inner.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn vars(text: &str) -> Vec<(String, String)> {
        parse(text).expect("valid")
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_seeds_example_reads_as_its_json() {
        let text = "# upstreams\nUPSTREAMS={\"example\":[\"http://localhost:3001\"]}\nPORT=3000\n";
        assert_eq!(
            vars(text),
            pairs(&[
                ("UPSTREAMS", r#"{"example":["http://localhost:3001"]}"#),
                ("PORT", "3000")
            ])
        );
    }

    #[test]
    fn values_follow_dotenvs_rules() {
        let text = concat!(
            "export A=1\n",
            "B = two words  # a comment\n",
            "C: colon\n",
            "D='single # not a comment'\n",
            "E=\"line\\nbreak\" # comment\n",
            "F='no \\n escape'\n",
            "G=`back`\n",
            "H=\n",
            "I=\"multi\nline\"\n",
            "J=\"open but never closed\n",
            "K=\"closed\" then text\n",
            "L=\"with \\\" inside\"\r\n",
            "  M.dotted-name=ok\n",
            "N=a=b\n",
        );
        assert_eq!(
            vars(text),
            pairs(&[
                ("A", "1"),
                ("B", "two words"),
                ("C", "colon"),
                ("D", "single # not a comment"),
                ("E", "line\nbreak"),
                ("F", "no \\n escape"),
                ("G", "back"),
                ("H", ""),
                ("I", "multi\nline"),
                ("J", "\"open but never closed"),
                ("K", "\"closed\" then text"),
                ("L", "with \\\" inside"),
                ("M.dotted-name", "ok"),
                ("N", "a=b"),
            ])
        );
    }

    /// Cases where dotenv's regular expression does something less obvious; every expected
    /// value is what npm dotenv 16.6.1's `parse()` returned for the same text.
    #[test]
    fn the_corners_of_dotenvs_rules() {
        for (text, expected) in [
            ("\u{feff}A=1\n", &[("A", "1")][..]),
            ("A=\"C:\\dir\\\"\n", &[("A", "C:\\dir\\")]),
            (
                "A=\"C:\\dir\\\"\nB=\"x\\\"\nC=1\n",
                &[("A", "C:\\dir\\"), ("B", "x\\"), ("C", "1")],
            ),
            (
                "A=\"a\" b\"\nB='x' and 'y'\n",
                &[("A", "a\" b"), ("B", "x' and 'y")],
            ),
            ("A=\"x\\ny\" z\"\n", &[("A", "x\ny\" z")]),
            ("A='a\\nb'\n", &[("A", "a\\nb")]),
            ("A=\"\"\nB=''\n", &[("A", ""), ("B", "")]),
            ("A=abc#def\nB=abc #def\n", &[("A", "abc"), ("B", "abc")]),
            ("A=\"  padded  \"\n", &[("A", "  padded  ")]),
        ] {
            assert_eq!(vars(text), pairs(expected), "{text:?}");
        }
        // dotenv skips `A : v` (a space before the colon); here it is an error, as any line
        // that sets nothing.
        assert_eq!(
            parse("A : v\n").err().as_deref(),
            Some("line 1: expected NAME=value")
        );
    }

    #[test]
    fn a_line_that_sets_nothing_is_an_error_naming_it() {
        assert_eq!(
            parse("A=1\n\nB\n").err().as_deref(),
            Some("line 3: expected NAME=value")
        );
        assert_eq!(
            parse("A=\"two\nlines\"\nC:nospace\n").err().as_deref(),
            Some("line 3: expected NAME=value")
        );
        assert_eq!(
            parse("\"x\"=1").err().as_deref(),
            Some("line 1: expected NAME=value")
        );
    }
}
