//! The pieces of a hand-written JSON log line: a timestamp, strings, integers and addresses
//! appended straight to a byte buffer.
//!
//! The access log writes one line per request, so its formatting is on the hot path. Going
//! through `core::fmt` (`write!`, `Display`) cost about 3,000 instructions a line — an IPv4
//! address alone near 1,000 — so numbers go through `itoa`, an address octet by octet, and
//! the timestamp's date and time are formatted once a second per thread, leaving only the
//! microseconds to write. Strings that need no escaping (request ids, paths and names almost
//! always) are copied as they are; anything else goes through serde_json's escaping.

use std::cell::Cell;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SS`: the part of an RFC 3339 timestamp that changes once a second.
const SECOND_LEN: usize = 19;

thread_local! {
    /// The second last formatted on this thread, and its text (the epoch's until then, so
    /// nothing unprintable is ever written should formatting fail).
    static SECOND: Cell<(u64, [u8; SECOND_LEN])> =
        const { Cell::new((u64::MAX, *b"1970-01-01T00:00:00")) };
}

/// Appends `time` as RFC 3339 in UTC with microseconds, as tracing's JSON lines have it:
/// `2026-12-05T06:17:25.123456Z`.
pub fn timestamp(line: &mut Vec<u8>, time: SystemTime) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
        // `2026-12-05T06:17:25Z`: everything but the zone letter.
        let formatted = whole.to_string();
        if let Some(prefix) = formatted.as_bytes().get(..SECOND_LEN) {
            text.copy_from_slice(prefix);
            SECOND.set((secs, text));
        }
    }
    line.extend_from_slice(&text);
    line.push(b'.');
    padded(line, since_epoch.subsec_micros(), 6);
    line.push(b'Z');
}

/// Appends `n` in decimal, zero-padded on the left to `width` digits.
fn padded(line: &mut Vec<u8>, mut n: u32, width: usize) {
    let start = line.len();
    line.resize(start + width, b'0');
    for digit in line[start..].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Appends `n` in decimal.
pub fn uint(line: &mut Vec<u8>, n: impl itoa::Integer) {
    line.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `ip` as its usual text (dotted quad; RFC 5952 for IPv6), without quotes.
pub fn ip(line: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    line.push(b'.');
                }
                uint(line, octet);
            }
        }
        // Rare on the paths that matter; `Display` already knows RFC 5952's rules.
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(line, "{v6}");
        }
    }
}

/// Appends `text` as a JSON string, quotes included.
pub fn string(line: &mut Vec<u8>, text: &str) {
    let to_escape = needs_escape(text.as_bytes());
    if !to_escape {
        line.push(b'"');
        line.extend_from_slice(text.as_bytes());
        line.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *line, text);
    }
}

/// Whether any byte must be escaped in a JSON string: a control character, `"` or `\\`.
/// Eight bytes at a time (the classic "has a zero byte" bit trick), as the byte-wise check
/// cost more than the copy it guards.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0; 8];
        eight.copy_from_slice(word);
        let x = u64::from_ne_bytes(eight);
        // A byte below 0x20 (only a high bit set does not hide one: those are not below it),
        // or equal to `"` or `\\`.
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0;
        if below_space
            || has_zero(x ^ (ONES * u64::from(b'"')))
            || has_zero(x ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut line = Vec::new();
        write(&mut line);
        String::from_utf8(line).unwrap_or_default()
    }

    #[test]
    fn the_timestamp_matches_humantimes_with_microseconds() {
        for micros in [
            0u64,
            7,
            999_999,
            1_764_915_445_123_456,
            1_764_915_446_000_001,
        ] {
            let time = UNIX_EPOCH + Duration::from_micros(micros);
            let expected = humantime::format_rfc3339_micros(time).to_string();
            assert_eq!(text(|l| timestamp(l, time)), expected);
            // Twice: the second time from the cached second.
            assert_eq!(text(|l| timestamp(l, time)), expected);
        }
    }

    #[test]
    fn addresses_read_as_their_display() {
        for addr in [
            "0.0.0.0",
            "127.0.0.1",
            "203.0.113.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let parsed: IpAddr = addr.parse().unwrap_or(IpAddr::from([9, 9, 9, 9]));
            assert_eq!(text(|l| ip(l, parsed)), addr);
        }
    }

    #[test]
    fn strings_are_valid_json_with_or_without_escapes() {
        for s in [
            "plain-id",
            "/a b/c",
            "quo\"te",
            "back\\slash",
            "nl\n",
            "del\u{7f}",
            "é✓",
        ] {
            let written = text(|l| string(l, s));
            let parsed: serde_json::Value = serde_json::from_str(&written).unwrap_or_default();
            assert_eq!(parsed, serde_json::Value::from(s), "{written}");
        }
        assert_eq!(text(|l| uint(l, 1234567u64)), "1234567");
    }

    #[test]
    fn every_byte_that_needs_escaping_is_found_at_every_position() {
        for position in 0..19 {
            for byte in 0u8..=255 {
                let mut bytes = vec![b'a'; 19];
                bytes[position] = byte;
                let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
                assert_eq!(
                    needs_escape(&bytes),
                    expected,
                    "byte {byte:#x} at {position}"
                );
            }
        }
    }
}
