//! Request path normalisation: one canonical form that is both matched and forwarded, so a
//! route's policy cannot be bypassed by spelling the same path differently to the gateway and
//! to the upstream.
//!
//! Rules (RFC 3986 §6.2.2): percent-encoded unreserved characters are decoded (`%7E` → `~`,
//! `%2e` → `.`), other percent-encodings are upper-cased, and runs of `/` collapse to one (an
//! upstream that reads `//host/x` as a protocol-relative URL must never see one). Anything we
//! would have to guess at is refused instead: dot-segments (`.`/`..`, also once decoded), path
//! parameters (`;`, which servlet containers strip from segments: `/users;x/7` is `/users/7`
//! to them), an
//! encoded `/` or `\`, a raw `\`, NUL, and malformed percent-encoding. The query is not touched.

use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotOriginForm,
    DotSegment,
    EncodedSeparator,
    Backslash,
    Nul,
    BadPercentEncoding,
    PathParameter,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotOriginForm => "path must start with '/'",
            PathError::DotSegment => "path contains a '.' or '..' segment",
            PathError::EncodedSeparator => "path contains an encoded '/', '\\' or NUL",
            PathError::Backslash => "path contains a backslash",
            PathError::Nul => "path contains a NUL byte",
            PathError::PathParameter => "path contains a ';' (path parameters are not accepted)",
            PathError::BadPercentEncoding => "path contains malformed percent-encoding",
        })
    }
}

/// Normalises `raw` (a path without query). Borrows when nothing changes, the common case,
/// which is one pass over the bytes.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let mut needs_rewrite = false;
    let mut segment_start = 1;
    for (i, &byte) in bytes.iter().enumerate().skip(1) {
        match byte {
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            // Servlet containers and others strip `;params` from each segment, so `/users;x/7`
            // would be `/users/7` upstream while missing the `/users` route here.
            b';' => return Err(PathError::PathParameter),
            b'%' => needs_rewrite = true,
            b'/' => {
                needs_rewrite |= bytes[i - 1] == b'/';
                if is_dot_segment(&bytes[segment_start..i]) {
                    return Err(PathError::DotSegment);
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    if is_dot_segment(&bytes[segment_start..]) {
        return Err(PathError::DotSegment);
    }
    if !needs_rewrite {
        return Ok(Cow::Borrowed(raw));
    }
    // Decoding can make new dot-segments (`%2e%2e`): check the result again.
    let path = rewrite(bytes)?;
    if path
        .split('/')
        .any(|segment| is_dot_segment(segment.as_bytes()))
    {
        return Err(PathError::DotSegment);
    }
    Ok(Cow::Owned(path))
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

fn rewrite(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'/' if out.ends_with('/') => {}
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .ok_or(PathError::BadPercentEncoding)?;
                let value = hex_value(hex[0])
                    .zip(hex_value(hex[1]))
                    .map(|(hi, lo)| hi << 4 | lo)
                    .ok_or(PathError::BadPercentEncoding)?;
                match value {
                    b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => {
                        out.push('%');
                        out.push(char::from(HEX_UPPER[usize::from(v >> 4)]));
                        out.push(char::from(HEX_UPPER[usize::from(v & 0xf)]));
                    }
                }
                i += 3;
                continue;
            }
            other => out.push(char::from(other)),
        }
        i += 1;
    }
    Ok(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        let path = normalize_path("/api/users/42").unwrap();
        assert!(matches!(path, Cow::Borrowed("/api/users/42")));
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("/a/b/").unwrap(), "/a/b/");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(normalize_path("/%75sers/%7e").unwrap(), "/users/~");
        assert_eq!(normalize_path("/a%20b/%c3%a9").unwrap(), "/a%20b/%C3%A9");
    }

    #[test]
    fn repeated_slashes_collapse() {
        assert_eq!(
            normalize_path("/api/svc//127.0.0.1:9/x").unwrap(),
            "/api/svc/127.0.0.1:9/x"
        );
        assert_eq!(
            normalize_path("//evil.example/x").unwrap(),
            "/evil.example/x"
        );
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("/a/../b", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/a/..", PathError::DotSegment),
            ("/users/..;/admin", PathError::PathParameter),
            ("/users;x/7", PathError::PathParameter),
            ("/a/%2e%2e/b", PathError::DotSegment),
            ("/a/.%2E/b", PathError::DotSegment),
            ("/a/%2f/b", PathError::EncodedSeparator),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a%00b", PathError::EncodedSeparator),
            ("/a\\b", PathError::Backslash),
            ("/a%zzb", PathError::BadPercentEncoding),
            ("/a%2", PathError::BadPercentEncoding),
            ("a/b", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_path(raw), Err(expected), "{raw}");
        }
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(raw in "/[a-z0-9%./_~-]{0,40}") {
            if let Ok(once) = normalize_path(&raw) {
                let twice = normalize_path(&once).unwrap().into_owned();
                prop_assert_eq!(once.into_owned(), twice);
            }
        }

        #[test]
        fn a_normalised_path_never_holds_dot_segments_or_double_slashes(raw in "/[a-z%2eEfF./]{0,30}") {
            if let Ok(path) = normalize_path(&raw) {
                prop_assert!(!path.contains("//"));
                prop_assert!(!path.split('/').any(|s| s == "." || s == ".."));
            }
        }
    }
}
