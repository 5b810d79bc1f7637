//! The `traceparent` header: `version "-" trace-id "-" parent-id "-" trace-flags`.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId};

/// Length of a version `00` `traceparent`, and the minimum length of any version.
pub const TRACEPARENT_LEN: usize = 55;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The value of each lowercase hex digit (`0-9`, `a-f`), `0xff` for every other byte
/// (uppercase is invalid in `traceparent`).
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xff_u8; 256];
    let mut i = 0;
    while i < 16 {
        table[HEX[i] as usize] = i as u8;
        i += 1;
    }
    table
};

#[inline]
fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    let (hi, lo) = (HEX_VALUE[usize::from(hi)], HEX_VALUE[usize::from(lo)]);
    ((hi | lo) < 16).then_some(hi << 4 | lo)
}

/// Decodes `2 * N` lowercase hex digits into `N` bytes: one table lookup per digit and one
/// check at the end, no branch per digit.
#[inline]
fn hex_array<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    if digits.len() != 2 * N {
        return None;
    }
    let mut invalid = 0u8;
    for (i, byte) in out.iter_mut().enumerate() {
        let (hi, lo) = (
            HEX_VALUE[usize::from(digits[2 * i])],
            HEX_VALUE[usize::from(digits[2 * i + 1])],
        );
        invalid |= hi | lo;
        *byte = hi << 4 | (lo & 0x0f);
    }
    (invalid < 16).then_some(out)
}

/// Parses a `traceparent` value by the W3C Trace Context rules.
///
/// - Surrounding spaces and tabs (HTTP optional whitespace) are ignored; nothing else is.
/// - The version is two lowercase hex digits, `ff` is invalid. Version `00` is exactly
///   55 characters. A later version is parsed as `00` is, may be longer, and then continues
///   with `-` after the flags (what follows is ignored).
/// - Trace id (32) and parent id (16) are lowercase hex and not all zeros.
/// - Of the flags, only `sampled` is kept (other bits are not defined by the version this
///   implements, and must not be propagated).
///
/// Returns `None` for anything else. Never allocates.
///
/// ```
/// use tracewire_core::w3c::parse_traceparent;
/// let (trace_id, span_id, flags) =
///     parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(span_id.to_string(), "00f067aa0ba902b7");
/// assert!(flags.is_sampled());
/// assert!(parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
/// ```
pub fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let b = value.trim_matches([' ', '\t']).as_bytes();
    if b.len() < TRACEPARENT_LEN || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = hex_byte(b[0], b[1])?;
    match version {
        0xff => return None,
        0 if b.len() != TRACEPARENT_LEN => return None,
        _ if b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    let trace_id = hex_array::<16>(&b[3..35])?;
    let span_id = hex_array::<8>(&b[36..52])?;
    let flags = hex_byte(b[53], b[54])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
    ))
}

/// A formatted version `00` `traceparent`, on the stack.
#[derive(Clone, Copy)]
pub struct Traceparent([u8; TRACEPARENT_LEN]);

impl Traceparent {
    /// Formats the `traceparent` of `span_context` (only the `sampled` flag is written).
    ///
    /// ```
    /// use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    /// let sc = SpanContext::new(
    ///     TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736),
    ///     SpanId::from(0x00f067aa0ba902b7),
    ///     TraceFlags::SAMPLED,
    ///     false,
    ///     TraceState::NONE,
    /// );
    /// assert_eq!(
    ///     tracewire_core::w3c::Traceparent::new(&sc).as_str(),
    ///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    /// );
    /// ```
    pub fn new(span_context: &SpanContext) -> Self {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        put_hex_array(&mut out, 3, &span_context.trace_id().to_bytes());
        put_hex_array(&mut out, 36, &span_context.span_id().to_bytes());
        out[53] = b'0';
        out[54] = if span_context.is_sampled() {
            b'1'
        } else {
            b'0'
        };
        Traceparent(out)
    }

    /// The header value, as bytes (ASCII hex digits and dashes).
    pub fn as_bytes(&self) -> &[u8; TRACEPARENT_LEN] {
        &self.0
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes were written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for Traceparent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes `bytes` as lowercase hex into `out` from `at` (a fixed-size array, so the bounds are
/// checked once, at compile time).
#[inline]
fn put_hex_array<const N: usize>(out: &mut [u8; TRACEPARENT_LEN], at: usize, bytes: &[u8; N]) {
    let Some(digits) = out.get_mut(at..at + 2 * N) else {
        return;
    };
    for (pair, b) in digits.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn version_rules() {
        assert!(parse_traceparent(TP).is_some());
        assert!(parse_traceparent(&format!(" \t{TP} ")).is_some());
        // Version 00 is exactly 55 characters.
        assert!(parse_traceparent(&format!("{TP}-")).is_none());
        assert!(parse_traceparent(&format!("{TP}0")).is_none());
        // Later versions may carry more fields after a dash.
        let future = TP.replacen("00", "cc", 1);
        assert!(parse_traceparent(&future).is_some());
        assert!(parse_traceparent(&format!("{future}-what-ever")).is_some());
        assert!(parse_traceparent(&format!("{future}what")).is_none());
        assert!(parse_traceparent(&TP.replacen("00", "ff", 1)).is_none());
        assert!(parse_traceparent(&TP.replacen("00", "0g", 1)).is_none());
    }

    #[test]
    fn ids_and_flags() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_span = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        assert!(parse_traceparent(zero_trace).is_none());
        assert!(parse_traceparent(zero_span).is_none());
        assert!(parse_traceparent(&TP.replace("4bf9", "4BF9")).is_none());
        assert!(parse_traceparent(&TP.replace("-01", "-0A")).is_none());
        assert!(parse_traceparent(&TP.replace("-01", "-+1")).is_none());
        let (_, _, flags) = parse_traceparent(&TP.replace("-01", "-ff")).unwrap();
        assert_eq!(flags, TraceFlags::SAMPLED);
        let (_, _, flags) = parse_traceparent(&TP.replace("-01", "-fe")).unwrap();
        assert_eq!(flags, TraceFlags::NOT_SAMPLED);
    }
}
