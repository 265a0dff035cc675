//! Parsers for the value syntaxes operators type: durations (`"250ms"`, `"5s"`, `"1h"`),
//! byte sizes (`"64KiB"`, `"10MiB"`, or a bare integer of bytes) and the seeds' boolean
//! spellings (`true/1/yes/y/on`, `false/0/no/n/off`, any case).
//!
//! Each parser returns a message fit to follow a key in a config error
//! (`server.shutdown_grace: expected a duration like "30s", got "soon"`); none of them panic.

use std::time::Duration;

use serde::Deserialize;

/// A size as written in TOML: a bare integer of bytes or a string with a unit.
#[derive(Debug, Clone)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

/// A duration as written in TOML: a string with a unit (`"5s"`), or an integer of milliseconds.
#[derive(Debug, Clone)]
pub enum RawDuration {
    Millis(u64),
    Text(String),
}

// Hand-written rather than `#[serde(untagged)]`, whose only error is "data did not match any
// variant": an operator should read what was expected and what was found.
impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(NumberOrText(
                "a size like \"64KiB\" or a whole number of bytes",
            ))
            .map(|v| match v {
                Either::Number(n) => RawSize::Bytes(n),
                Either::Text(t) => RawSize::Text(t),
            })
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(NumberOrText(
                "a duration like \"250ms\" or \"30s\", or a whole number of milliseconds",
            ))
            .map(|v| match v {
                Either::Number(n) => RawDuration::Millis(n),
                Either::Text(t) => RawDuration::Text(t),
            })
    }
}

enum Either {
    Number(u64),
    Text(String),
}

struct NumberOrText(&'static str);

impl serde::de::Visitor<'_> for NumberOrText {
    type Value = Either;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Either, E> {
        Ok(Either::Number(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Either, E> {
        u64::try_from(v)
            .map(Either::Number)
            .map_err(|_| E::custom(format!("expected {}, got the negative number {v}", self.0)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Either, E> {
        Ok(Either::Text(v.to_owned()))
    }
}

impl RawSize {
    pub fn parse(&self) -> Result<u64, String> {
        match self {
            RawSize::Bytes(n) => Ok(*n),
            RawSize::Text(text) => parse_size(text),
        }
    }
}

impl RawDuration {
    pub fn parse(&self) -> Result<Duration, String> {
        match self {
            RawDuration::Millis(ms) => at_most_a_week(Duration::from_millis(*ms)),
            RawDuration::Text(text) => parse_duration(text),
        }
    }
}

/// The longest duration any key takes. Nothing a gateway times needs more, and a bound keeps
/// every deadline (`now + timeout`) far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

fn at_most_a_week(duration: Duration) -> Result<Duration, String> {
    if duration > MAX_DURATION {
        return Err(format!(
            "{} is longer than the longest duration accepted (7 days)",
            humantime::format_duration(duration)
        ));
    }
    Ok(duration)
}

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h 30m"` (humantime syntax). A bare number is refused:
/// in TOML a unit-less string is ambiguous, and the env vars that take milliseconds use
/// [`parse_millis`] instead.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("expected a duration like \"250ms\" or \"30s\", got {text:?}"))
        .and_then(at_most_a_week)
}

/// Parses the seeds' `*_MS` variables: a whole number of milliseconds.
pub fn parse_millis(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("expected a whole number of milliseconds, got {text:?}"))
        .and_then(at_most_a_week)
}

/// Parses a byte size: `"262144"`, `"64KiB"`, `"10MiB"`, `"1GiB"`, `"500kB"`, `"2MB"`.
/// Binary units are powers of 1024, decimal units powers of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let error = || format!("expected a size like \"64KiB\" or \"10MiB\", got {text:?}");
    let number: u64 = digits.parse().map_err(|_| error())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        _ => return Err(error()),
    };
    number.checked_mul(multiplier).ok_or_else(error)
}

/// Parses the seeds' booleans. Anything outside the two lists is an error, never a silent false.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Ok(true),
        "false" | "0" | "no" | "n" | "off" => Ok(false),
        _ => Err(format!(
            "expected a boolean (true/1/yes/y/on or false/0/no/n/off), got {text:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("7d"), Ok(MAX_DURATION));
        assert!(parse_duration("8d").is_err());
        assert!(parse_millis("18446744073709551615").is_err());
        assert!(RawDuration::Millis(u64::MAX).parse().is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_millis("30000"), Ok(Duration::from_secs(30)));
        assert!(parse_millis("30s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("262144"), Ok(262_144));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("2 MB"), Ok(2_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn booleans_accept_the_seed_spellings_only() {
        for yes in ["true", "1", "YES", "y", "On"] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
        }
        for no in ["false", "0", "No", "n", "OFF"] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
        }
        assert!(parse_bool("maybe").is_err());
        assert!(parse_bool("").is_err());
    }
}
