//! The cache key: one string per distinct request as forwarded. The plain key is the method,
//! scheme, authority, normalised path and query, plus the forwarding headers' lines; a
//! response that varies adds one line per `Vary` header. Every value is escaped, so two
//! distinct requests never share a key, and a key splits back into its path for purges.

use http::{HeaderMap, HeaderName};

use super::CacheRequest;

/// Forwarding headers the upstream may build links from: always part of the key, as if every
/// response varied on them (a front proxy's `X-Forwarded-Host` must not poison the entry
/// another host's clients get).
const FORWARDING: [HeaderName; 3] = [
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-port"),
];

/// Room reserved for each header line, so a key is usually built without growing (the
/// forwarding headers' lines are a name and a short value).
const LINE_ROOM: usize = 48;

/// `GET http://example.com:8080/p?q` and the forwarding headers' lines: the key without
/// `Vary`. Nothing on the first line can contain a space or a newline, so it never runs into
/// the header lines or the method.
pub(super) fn plain_key(req: &CacheRequest<'_>) -> String {
    let query = req.query.map_or(0, |q| q.len() + 1);
    let mut key = String::with_capacity(
        req.method.as_str().len()
            + req.scheme.len()
            + req.authority.len()
            + req.path.len()
            + query
            + 5
            + LINE_ROOM * FORWARDING.len(),
    );
    key.push_str(req.method.as_str());
    key.push(' ');
    key.push_str(req.scheme);
    key.push_str("://");
    key.push_str(req.authority);
    key.push_str(req.path);
    if let Some(query) = req.query {
        key.push('?');
        key.push_str(query);
    }
    for name in &FORWARDING {
        push_header_line(&mut key, name, req.headers);
    }
    key
}

/// The plain key plus one line per `Vary` header: `\nname=values`, each value's bytes
/// escaped (`%XX` for anything but visible ASCII other than `%` and `,`), values joined by
/// `,`, an absent header as `\nname!`: distinct requests never share a key.
pub(super) fn variant_key(key: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut full = String::with_capacity(key.len() + LINE_ROOM * names.len());
    full.push_str(key);
    for name in names {
        push_header_line(&mut full, name, headers);
    }
    full
}

/// `\nname=v1,v2` (escaped as [`variant_key`] says) or `\nname!` when absent.
fn push_header_line(key: &mut String, name: &HeaderName, headers: &HeaderMap) {
    use std::fmt::Write;
    key.push('\n');
    key.push_str(name.as_str());
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        key.push('!');
        return;
    }
    key.push('=');
    for (i, value) in values.enumerate() {
        if i > 0 {
            key.push(',');
        }
        // Usually every byte stands for itself: then the value goes in whole.
        match std::str::from_utf8(value.as_bytes()) {
            Ok(text) if text.bytes().all(is_plain) => key.push_str(text),
            _ => {
                for &byte in value.as_bytes() {
                    if is_plain(byte) {
                        key.push(char::from(byte));
                    } else {
                        let _ = write!(key, "%{byte:02X}");
                    }
                }
            }
        }
    }
}

/// A byte that stands for itself in a key's header line: visible ASCII or a space, but not
/// `%` (the escape) or `,` (between values).
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_graphic() && byte != b'%' && byte != b',' || byte == b' '
}

/// The path of a key (`GET http://host/p?q[\n…]` → `/p?q`).
pub(super) fn path_of(key: &str) -> &str {
    let line = key.split('\n').next().unwrap_or(key);
    let after_scheme = line.split_once("://").map_or("", |(_, rest)| rest);
    after_scheme
        .find('/')
        .map_or("", |slash| &after_scheme[slash..])
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Method};

    use super::*;

    #[test]
    fn keys_split_back_into_their_path_and_never_collide() {
        let headers = HeaderMap::new();
        let req = CacheRequest {
            method: &Method::GET,
            scheme: "http",
            authority: "example.com:8080",
            path: "/a/b",
            query: Some("x=1"),
            headers: &headers,
            identified: false,
        };
        let key = plain_key(&req);
        assert_eq!(
            key,
            "GET http://example.com:8080/a/b?x=1\nx-forwarded-host!\nx-forwarded-proto!\nx-forwarded-port!"
        );
        assert_eq!(path_of(&key), "/a/b?x=1");
        let mut headers = HeaderMap::new();
        headers.append("accept", HeaderValue::from_static("text/html"));
        headers.append("accept", HeaderValue::from_static("*/*"));
        let names = [
            HeaderName::from_static("accept"),
            HeaderName::from_static("x-absent"),
        ];
        let full = variant_key(&key, &names, &headers);
        assert!(full.starts_with(&key));
        assert_eq!(&full[key.len()..], "\naccept=text/html,*/*\nx-absent!");
        assert_eq!(path_of(&full), "/a/b?x=1");
        // Values that a lossy or joined rendering would confuse stay apart.
        let one = |values: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("x-lang", HeaderValue::from_bytes(value).unwrap());
            }
            variant_key("k", &[HeaderName::from_static("x-lang")], &headers)
        };
        assert_ne!(one(&[b"\xff"]), one(&[b"\xfe"]));
        assert_ne!(one(&[b"a", b"b"]), one(&[b"a,b"]));
        assert_ne!(one(&[b""]), one(&[]));
        assert_ne!(one(&[b"%41"]), one(&[b"A"]));
    }
}
