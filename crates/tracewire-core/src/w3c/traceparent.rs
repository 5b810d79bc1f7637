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

/// Decodes `2 * N` lowercase hex digits into `N` bytes (`N` a multiple of 4), eight digits at
/// a time in one 64-bit word: a range check of all eight bytes at once, then the nibbles
/// packed into four bytes. Equivalent to decoding digit by digit through [`HEX_VALUE`] (a
/// test compares the two on every byte at every position).
#[inline]
fn hex_array<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte set when the byte is `>= lo` / `<= hi`; valid only for bytes
    // below 0x80 (no carry crosses a byte), which is checked separately.
    const fn at_least(x: u64, lo: u8) -> u64 {
        x.wrapping_add((0x80 - lo as u64) * L) & H
    }
    const fn at_most(x: u64, hi: u8) -> u64 {
        !x.wrapping_add((0x7f - hi as u64) * L) & H
    }
    let mut out = [0u8; N];
    if digits.len() != 2 * N || !N.is_multiple_of(4) {
        return None;
    }
    for (chunk, word) in digits.chunks_exact(8).zip(out.chunks_exact_mut(4)) {
        let x = u64::from_le_bytes(chunk.try_into().ok()?);
        let decimal = at_least(x, b'0') & at_most(x, b'9');
        let letter = at_least(x, b'a') & at_most(x, b'f');
        if x & H != 0 || (decimal | letter) != H {
            return None;
        }
        // A digit's value is its low nibble, a letter's its low nibble + 9.
        let nibbles = (x & (0x0f * L)) + (letter >> 7) * 9;
        // Byte 2j becomes (nibble 2j << 4 | nibble 2j+1); then the even bytes are gathered.
        let mut packed = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
        packed = (packed | (packed >> 8)) & 0x0000_ffff_0000_ffff;
        packed = (packed | (packed >> 16)) & 0x0000_0000_ffff_ffff;
        word.copy_from_slice(&(packed as u32).to_le_bytes());
    }
    Some(out)
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
    parse_traceparent_bytes(value.as_bytes())
}

/// [`parse_traceparent`] of raw header bytes, for a carrier that holds the value as bytes: a
/// value that is not text is not a valid `traceparent` either, so there is no need to check
/// it is text first.
///
/// ```
/// use tracewire_core::w3c::parse_traceparent_bytes;
/// assert!(parse_traceparent_bytes(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
/// assert!(parse_traceparent_bytes(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-\xff1").is_none());
/// ```
pub fn parse_traceparent_bytes(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let b = trim_ows(value);
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

/// `value` without leading and trailing spaces and tabs (HTTP optional whitespace).
fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
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

/// Writes `bytes` as lowercase hex into `out` from `at` (`N` a multiple of 4), four bytes at a
/// time ([`hex_word`]).
#[inline]
fn put_hex_array<const N: usize>(out: &mut [u8; TRACEPARENT_LEN], at: usize, bytes: &[u8; N]) {
    let Some(digits) = out.get_mut(at..at + 2 * N) else {
        return;
    };
    for (four, eight) in bytes.chunks_exact(4).zip(digits.chunks_exact_mut(8)) {
        eight.copy_from_slice(&hex_word([four[0], four[1], four[2], four[3]]));
    }
}

/// Four bytes as eight lowercase hex digits, in one 64-bit word: the nibbles spread one per
/// byte, then turned into digits all at once. A test compares it with formatting digit by
/// digit through [`HEX`].
#[inline]
pub(crate) fn hex_word(four: [u8; 4]) -> [u8; 8] {
    const L: u64 = 0x0101_0101_0101_0101;
    const LOW: u64 = 0x0f * 0x0001_0001_0001_0001;
    let mut spread = u64::from(u32::from_le_bytes(four));
    spread = (spread | (spread << 16)) & 0x0000_ffff_0000_ffff;
    spread = (spread | (spread << 8)) & 0x00ff_00ff_00ff_00ff;
    // Byte 2j: the high nibble of input byte j; byte 2j+1: its low nibble.
    let nibbles = ((spread >> 4) & LOW) | ((spread & LOW) << 8);
    // 1 in each byte whose nibble is 10 or more: those become `a`–`f`.
    let letters = ((nibbles + 0x06 * L) >> 4) & L;
    (nibbles + 0x30 * L + letters * u64::from(b'a' - b'0' - 10)).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// The digit-by-digit decoding the word-at-a-time one must equal.
    fn hex_array_by_digit<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = hex_byte(pair[0], pair[1])?;
        }
        (digits.len() == 2 * N).then_some(out)
    }

    #[test]
    fn word_decoding_equals_digit_decoding_for_every_byte_at_every_position() {
        let base: Vec<u8> = b"0123456789abcdef0f1e2d3c4b5a6978".to_vec();
        for position in 0..base.len() {
            for byte in 0..=255u8 {
                let mut digits = base.clone();
                digits[position] = byte;
                assert_eq!(
                    hex_array::<16>(&digits),
                    hex_array_by_digit::<16>(&digits),
                    "byte {byte:#04x} at {position}"
                );
                assert_eq!(
                    hex_array::<8>(&digits[..16]),
                    hex_array_by_digit::<8>(&digits[..16])
                );
            }
        }
        // Every pair of digits, in every byte lane.
        for hi in 0..=255u8 {
            for lo in 0..=255u8 {
                let mut digits = *b"00000000";
                digits[(usize::from(hi) % 4) * 2] = hi;
                digits[(usize::from(hi) % 4) * 2 + 1] = lo;
                assert_eq!(hex_array::<4>(&digits), hex_array_by_digit::<4>(&digits));
            }
        }
    }

    #[test]
    fn word_formatting_equals_digit_formatting_for_every_byte_in_every_lane() {
        for byte in 0..=255u8 {
            for lane in 0..8 {
                let mut bytes = [0x5a_u8, 0x00, 0xff, 0x19, 0xa0, 0x0a, 0x7e, 0xe7];
                bytes[lane] = byte;
                let mut out = [b'-'; TRACEPARENT_LEN];
                put_hex_array(&mut out, 36, &bytes);
                let expected: Vec<u8> = bytes
                    .iter()
                    .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]])
                    .collect();
                assert_eq!(
                    &out[36..52],
                    &expected[..],
                    "byte {byte:#04x} in lane {lane}"
                );
                assert!(out[..36].iter().chain(&out[52..]).all(|&b| b == b'-'));
            }
        }
    }

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
