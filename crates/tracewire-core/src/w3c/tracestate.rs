//! The `tracestate` header: up to 32 comma-separated `key=value` list members.

use opentelemetry::trace::TraceState;

/// Most list members a `tracestate` may have (empty ones included).
pub const MAX_MEMBERS: usize = 32;

use super::split::{split_byte, split_once_byte, trim_ows};

#[inline]
fn key_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// `simple-key = lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")`, or
/// `multi-tenant-key = tenant-id "@" system-id` with
/// `tenant-id = (lcalpha / DIGIT) 0*240(…)` and `system-id = lcalpha 0*13(…)`.
pub(crate) fn valid_key(key: &[u8]) -> bool {
    match key.iter().position(|&b| b == b'@') {
        None => {
            !key.is_empty()
                && key.len() <= 256
                && key[0].is_ascii_lowercase()
                && key.iter().all(|&b| key_char(b))
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            !tenant.is_empty()
                && tenant.len() <= 241
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && tenant.iter().all(|&b| key_char(b))
                && !system.is_empty()
                && system.len() <= 14
                && system[0].is_ascii_lowercase()
                && system.iter().all(|&b| key_char(b))
        }
    }
}

/// `value = 0*255(chr) nblk-chr`: 1 to 256 printable ASCII characters other than `,` and
/// `=`, not ending with a space.
pub(crate) fn valid_value(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value.last() != Some(&b' ')
        && value
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

/// The non-empty list members of `header` as `(key, value)`, in order; the header must have
/// been validated.
fn members(header: &str) -> impl Iterator<Item = (&str, &str)> {
    split_byte(header, b',').filter_map(|member| split_once_byte(trim_ows(member), b'='))
}

/// Checks `header` against the W3C grammar without allocating: at most [`MAX_MEMBERS`] list
/// members (empty ones allowed), each `key=value` by the key and value rules, no key twice.
pub fn validate_tracestate(header: &str) -> bool {
    let mut count = 0;
    for member in split_byte(header, b',') {
        count += 1;
        if count > MAX_MEMBERS {
            return false;
        }
        let member = trim_ows(member);
        if member.is_empty() {
            continue;
        }
        let Some((key, value)) = split_once_byte(member, b'=') else {
            return false;
        };
        if !valid_key(key.as_bytes()) || !valid_value(value.as_bytes()) {
            return false;
        }
    }
    // Keys are unique: at most 32 members, so the quadratic check stays small.
    let mut seen = 0;
    for (i, (key, _)) in members(header).enumerate() {
        if members(header).take(i).any(|(k, _)| k == key) {
            return false;
        }
        seen += 1;
    }
    seen <= MAX_MEMBERS
}

/// Parses a `tracestate` value. An invalid header yields `None` as a whole (the W3C rule: a
/// vendor must not propagate a `tracestate` it could not parse); an empty one yields
/// [`TraceState::NONE`].
///
/// ```
/// use tracewire_core::w3c::parse_tracestate;
/// let ts = parse_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE").unwrap();
/// assert_eq!(ts.get("congo"), Some("t61rcWkgMzE"));
/// assert!(parse_tracestate("Upper=1").is_none());
/// ```
pub fn parse_tracestate(header: &str) -> Option<TraceState> {
    if !validate_tracestate(header) {
        return None;
    }
    // The SDK type re-checks every key and value it is given.
    TraceState::from_key_value(members(header)).ok()
}

/// Appends `trace_state` as a header value (`key=value,…`) to `out`.
pub fn write_tracestate(trace_state: &TraceState, out: &mut String) {
    for (i, (key, value)) in trace_state.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_grammar() {
        assert!(valid_key(b"rojo"));
        assert!(valid_key(b"a0_-*/"));
        assert!(valid_key(b"0tenant@sys"));
        assert!(valid_key(b"t@abcdefghijklmn")); // 14-character system id
        assert!(!valid_key(b"t@abcdefghijklmno"));
        assert!(!valid_key(b"0simple"));
        assert!(!valid_key(b"t@0sys"));
        assert!(!valid_key(b"t@"));
        assert!(!valid_key(b"@sys"));
        assert!(!valid_key(b"a@b@c"));
        assert!(!valid_key(b"Upper"));
        assert!(valid_key("k".repeat(256).as_bytes()));
        assert!(!valid_key("k".repeat(257).as_bytes()));
    }

    #[test]
    fn value_grammar() {
        assert!(valid_value(b"a b"));
        assert!(valid_value(b" a"));
        assert!(!valid_value(b""));
        assert!(!valid_value(b"a "));
        assert!(!valid_value(b"a=b"));
        assert!(!valid_value(b"a,b"));
        assert!(!valid_value("é".as_bytes()));
        assert!(!valid_value(b"a\x7f"));
    }

    #[test]
    fn list_rules() {
        assert_eq!(parse_tracestate(""), Some(TraceState::NONE));
        assert!(parse_tracestate("a=1,, \t,b=2").is_some());
        assert!(parse_tracestate("a=1,a=2").is_none());
        assert!(parse_tracestate("a=1,b").is_none());
        assert!(parse_tracestate("a==1").is_none());
        let members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let ts = parse_tracestate(&members.join(",")).unwrap();
        assert_eq!(ts.get("k31"), Some("v"));
        assert!(parse_tracestate(&format!("{},k32=v", members.join(","))).is_none());
        assert!(parse_tracestate(&format!("{},", members.join(","))).is_none());
    }

    #[test]
    fn writes_in_order() {
        let ts = parse_tracestate("b=2,a=1").unwrap();
        let mut out = String::new();
        write_tracestate(&ts, &mut out);
        assert_eq!(out, "b=2,a=1");
    }
}
