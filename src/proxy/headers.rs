//! Header handling on the proxy path: what is removed, added and kept in each direction.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1: `Connection`, every header it names, and
//!   `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`) belong to one
//!   connection and are removed both ways; `TE: trailers` alone is kept for gRPC-style upstreams.
//! - `X-Forwarded-For/Proto/Host/Port` describe the client. A client's own values are believed
//!   only when the peer is a configured trusted proxy; otherwise they are replaced, and its
//!   `Forwarded` and `X-Real-IP` headers are removed.
//! - `x-request-id`: a client's value is kept when it is printable ASCII of at most 128 bytes,
//!   otherwise replaced by a new UUID.
//! - W3C `traceparent` (Trace Context §3.2): a valid one is forwarded, else a new one created.

use std::net::IpAddr;

use http::header::{
    CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::config::HashKey;
use crate::upstream::balancer::hash_bytes;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Joins the `Cookie` fields an HTTP/2 client split (one per cookie, RFC 9113 §8.2.3 allows
/// it and browsers do) into one, `; ` between them, as that section requires before the
/// request goes on over HTTP/1.1: many HTTP/1 servers read only the first `Cookie` line.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(http::header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for cookie in headers.get_all(http::header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(cookie.as_bytes());
    }
    // Each part was a valid field value, and so is `; ` between them.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::COOKIE, value);
    }
}

/// Removes hop-by-hop headers in place (both directions use this).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) headers present notes which hop-by-hop names occur; only those
    // are then removed. Hashing every name for removals that usually find nothing costs more,
    // and this runs twice per proxied request.
    // Proxy-Authorization and Proxy-Authenticate too (hop-by-hop in RFC 2616 §13.5.1): they
    // are for the proxy that asked, and sluice asks none; relayed, a client's proxy credentials
    // would reach the upstream and its logs.
    const FIXED: [HeaderName; 7] = [
        TE,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TRANSFER_ENCODING,
        UPGRADE,
        PROXY_AUTHORIZATION,
        PROXY_AUTHENTICATE,
    ];
    let mut has_connection = false;
    let mut present = [false; 7];
    for name in headers.keys() {
        if name == CONNECTION {
            has_connection = true;
        } else if let Some(i) = FIXED.iter().position(|fixed| name == fixed) {
            present[i] = true;
        }
    }
    // Headers named by Connection go first, while we still have it. The usual values
    // (`keep-alive`, `close`, `upgrade`) name nothing beyond the fixed list, so the common
    // case allocates nothing.
    if has_connection {
        let mut named: Vec<HeaderName> = Vec::new();
        for token in headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            let fixed = [
                "keep-alive",
                "close",
                "upgrade",
                "te",
                "transfer-encoding",
                "",
            ]
            .iter()
            .any(|known| token.eq_ignore_ascii_case(known));
            if fixed {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                // Never let Connection strip the headers we are about to set ourselves.
                if name != X_REQUEST_ID && name != TRACEPARENT {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    for (name, present) in FIXED.into_iter().zip(present) {
        if !present {
            continue;
        }
        let trailers_only = name == TE
            && headers
                .get(TE)
                .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if !trailers_only {
            headers.remove(name);
        }
    }
}

/// What the forwarding headers should say about this request. The peer's address and the
/// local port are rendered once per connection, not once per request.
pub struct Forwarded<'a> {
    pub peer: &'a HeaderValue,
    pub peer_trusted: bool,
    pub proto: &'static str,
    pub host: Option<&'a HeaderValue>,
    pub port: &'a HeaderValue,
}

/// Sets `X-Forwarded-*` on the upstream request. A client's own `Forwarded` (RFC 7239) and
/// `X-Real-IP` claims are dropped unless it is a trusted proxy: sluice speaks `X-Forwarded-*`,
/// and an upstream reading the others must not be handed a spoofed address.
pub fn set_forwarded(headers: &mut HeaderMap, fwd: &Forwarded<'_>) {
    if !fwd.peer_trusted {
        headers.remove(http::header::FORWARDED);
        headers.remove(X_REAL_IP);
    }
    let prior = if fwd.peer_trusted {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    match prior {
        Some(prior) => {
            let peer = fwd.peer.to_str().unwrap_or_default();
            if let Ok(value) = HeaderValue::from_str(&format!("{prior}, {peer}")) {
                headers.insert(X_FORWARDED_FOR, value);
            }
        }
        None => {
            headers.insert(X_FORWARDED_FOR, fwd.peer.clone());
        }
    }
    if !(fwd.peer_trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(fwd.proto));
    }
    if !(fwd.peer_trusted && headers.contains_key(X_FORWARDED_HOST)) {
        match fwd.host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
    if !(fwd.peer_trusted && headers.contains_key(X_FORWARDED_PORT)) {
        headers.insert(X_FORWARDED_PORT, fwd.port.clone());
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(
    peer: IpAddr,
    peer_trusted: bool,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> IpAddr {
    if !peer_trusted {
        return peer;
    }
    let Some(chain) = joined(headers, &X_FORWARDED_FOR) else {
        return peer;
    };
    let mut client = peer;
    for hop in chain.rsplit(',') {
        let Some(ip) = forwarded_hop(hop.trim()) else {
            // A hop nobody can read: the client is unknown, and must not pass for the
            // trusted proxy behind it (whose address IP allow lists may admit).
            return IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, `ip:port`, or `[v6]:port`.
fn forwarded_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (ip, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare, and are shown, as the IPv4
/// address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A `Content-Length` value (RFC 9110 §8.6): one or more ASCII digits, blanks around them
/// aside. `u64::from_str` alone would also take a leading `+`.
pub fn content_length_value(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The client's request id when valid, else a fresh UUID (v4).
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(X_REQUEST_ID)
        .filter(|v| is_valid_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id)
}

fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("invalid"))
}

/// Printable ASCII (0x21–0x7e plus space inside), 1 to 128 bytes.
pub fn is_valid_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value.iter().all(|b| (0x20..0x7f).contains(b))
        && value.first() != Some(&b' ')
        && value.last() != Some(&b' ')
}

/// Sets the upstream request's `traceparent`: the client's when valid, else a new trace. A
/// client's `tracestate` then goes too: it describes the trace its `traceparent` named (W3C
/// Trace Context §3.3), not the new one.
pub fn set_traceparent(headers: &mut HeaderMap) {
    let valid = headers
        .get(TRACEPARENT)
        .filter(|v| is_valid_traceparent(v.as_bytes()))
        .cloned();
    match valid {
        // Inserted again, so a second `traceparent` field (junk, or another trace) goes.
        Some(kept) => drop(headers.insert(TRACEPARENT, kept)),
        None => {
            headers.insert(TRACEPARENT, new_traceparent());
            // Looked for among the few names first: a removal hashes the name, and almost no
            // request has one (~190 instructions a request, `bench/instructions`).
            if headers.keys().any(|name| name == TRACESTATE) {
                headers.remove(TRACESTATE);
            }
        }
    }
}

fn new_traceparent() -> HeaderValue {
    // `00-` + 32 hex trace-id + `-` + 16 hex parent-id + `-01`, built on the stack.
    let mut text = [0u8; 55];
    text[..3].copy_from_slice(b"00-");
    uuid::Uuid::new_v4().simple().encode_lower(&mut text[3..35]);
    text[35] = b'-';
    // The parent id needs to be unique within the trace only: a cheap random number will do.
    let span = fastrand::u64(1..);
    for (i, digit) in text[36..52].iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((span >> (60 - 4 * i)) & 0xf) as usize];
    }
    text[52..].copy_from_slice(b"-01");
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("invalid"))
}

/// `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`, ids not all zero, version not ff.
pub fn is_valid_traceparent(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match parts.as_slice() {
        [version, trace, parent, flags, ..] => {
            hex(version, 2)
                && *version != "ff"
                && (*version != "00" || parts.len() == 4)
                && hex(trace, 32)
                && nonzero(trace)
                && hex(parent, 16)
                && nonzero(parent)
                && hex(flags, 2)
        }
        _ => false,
    }
}

/// The value a `hash` balancer keys this request on, hashed; `None` when the request does not
/// carry it (no such header or cookie), which makes the request non-sticky.
pub fn hash_key(key: &HashKey, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(hash_bytes(canonical(client).to_string().as_bytes())),
        HashKey::Header(name) => headers.get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie(name) => cookie_value(headers, name).map(|v| hash_bytes(v.as_bytes())),
    }
}

/// Whether the request's `Origin` names `authority` (host and port; the scheme is not
/// compared: behind a TLS-terminating proxy the browser's scheme is not ours). `None` when
/// there is no `Origin` (not a cross-site browser request).
pub fn origin_is(headers: &HeaderMap, authority: Option<&str>) -> Option<bool> {
    let origin = headers.get(http::header::ORIGIN)?;
    let origin_authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    Some(matches!((origin_authority, authority), (Some(o), Some(a)) if o.eq_ignore_ascii_case(a)))
}

/// The value of the cookie `name` in the request's `Cookie` headers (quotes removed).
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

#[cfg(test)]
mod tests;
