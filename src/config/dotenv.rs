//! Reading a `.env` file the way the Node gateways read theirs: npm `dotenv`'s rules, which
//! Node's own `--env-file` follows too.
//!
//! Why not the `dotenvy` crate: it reads values with shell rules, so quotes inside an unquoted
//! value are taken as quoting. The seeds' own `.env.example` has
//! `UPSTREAMS={"example":["http://localhost:3001"]}`, which dotenv reads as the JSON it is and
//! dotenvy as `{example:[http://localhost:3001]}`: the file a team brings would fail.
//!
//! The rules, as dotenv has them:
//! - `NAME=value`, `export NAME=value` or `NAME: value`; a name is letters, digits, `_`, `.`
//!   and `-`. Blank lines and lines starting with `#` are skipped.
//! - An unquoted value runs to the end of the line or to a `#` (a comment), trimmed; quotes
//!   inside it are kept as they are.
//! - A value that starts with `'`, `"` or `` ` `` runs to the same quote (one after a
//!   backslash does not count), across lines if it must, and only blanks or a comment may
//!   follow it on its last line; otherwise the line is read as an unquoted value, quotes and
//!   all. In double quotes `\n` and `\r` are a newline and a carriage return; nothing else is
//!   escaped.
//!
//! One difference, for an operator's sake: a line that is none of these (a name without `=`)
//! is an error naming the line, where dotenv skips it in silence.

/// The variables `text` sets, in file order (a later line for the same name wins).
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
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
        let after_name = after_name.trim_start_matches([' ', '\t']);
        let value = match after_name.as_bytes() {
            [b'=', ..] | [b':', b' ' | b'\t', ..] if !name.is_empty() => &after_name[1..],
            _ => return Err(format!("line {line_no}: expected NAME=value")),
        };
        let value = value.trim_start_matches([' ', '\t']);
        let value_at = line_end - value.len();
        let (value, next) = match quoted(&text, value_at) {
            Some((value, end_of_entry)) => (value, end_of_entry),
            None => {
                let end = value.find('#').unwrap_or(value.len());
                (value[..end].trim().to_owned(), line_end)
            }
        };
        line_no += text[pos..next].matches('\n').count() + 1;
        vars.push((name.to_owned(), value));
        pos = next + 1;
    }
    Ok(vars)
}

/// A quoted value starting at `at` in `text`: its content, and where the line holding its
/// closing quote ends. `None` when it is not one (no quote, never closed, or more than a
/// comment after it).
fn quoted(text: &str, at: usize) -> Option<(String, usize)> {
    let quote = text[at..]
        .chars()
        .next()
        .filter(|c| matches!(c, '"' | '\'' | '`'))?;
    let body = &text[at + 1..];
    let mut escaped = false;
    let close = body.char_indices().find_map(|(i, c)| {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == quote => return Some(i),
            _ => {}
        }
        None
    })?;
    let after = &body[close + 1..];
    let line_rest = &after[..after.find('\n').unwrap_or(after.len())];
    let line_rest = line_rest.trim_start();
    if !(line_rest.is_empty() || line_rest.starts_with('#')) {
        return None;
    }
    let mut value = body[..close].to_owned();
    if quote == '"' {
        value = value.replace("\\n", "\n").replace("\\r", "\r");
    }
    let end_of_entry = at + 1 + close + 1 + after.find('\n').unwrap_or(after.len());
    Some((value, end_of_entry))
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
