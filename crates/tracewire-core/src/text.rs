//! Small text encoders for the hot paths (log lines, request ids): hex, RFC 3339 timestamps,
//! numbers. Each appends to a `String` without going through `core::fmt`.

use std::time::{SystemTime, UNIX_EPOCH};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as lowercase hex digits.
///
/// ```
/// let mut s = String::new();
/// tracewire_core::text::push_hex(&mut s, &[0x00, 0xf0, 0x67]);
/// assert_eq!(s, "00f067");
/// ```
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// Appends `time` as RFC 3339 in UTC with nanoseconds: `2026-11-25T01:02:03.000000042Z`.
/// Times before 1970 are written as the epoch.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let mut s = String::new();
/// tracewire_core::text::push_rfc3339(&mut s, UNIX_EPOCH + Duration::new(1_764_032_523, 42));
/// assert_eq!(s, "2025-11-25T01:02:03.000000042Z");
/// ```
pub fn push_rfc3339(out: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut buf = [0u8; 30];
    put_digits(&mut buf[0..4], u64::from(year));
    buf[4] = b'-';
    put_digits(&mut buf[5..7], u64::from(month));
    buf[7] = b'-';
    put_digits(&mut buf[8..10], u64::from(day));
    buf[10] = b'T';
    put_digits(&mut buf[11..13], rem / 3600);
    buf[13] = b':';
    put_digits(&mut buf[14..16], rem % 3600 / 60);
    buf[16] = b':';
    put_digits(&mut buf[17..19], rem % 60);
    buf[19] = b'.';
    put_digits(&mut buf[20..29], u64::from(since.subsec_nanos()));
    buf[29] = b'Z';
    // Only ASCII digits and separators were written.
    if let Ok(s) = std::str::from_utf8(&buf) {
        out.push_str(s);
    }
}

/// Writes `value` as exactly `out.len()` decimal digits (zero-padded, high digits dropped).
fn put_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + u64::from(month <= 2)) as u32;
    (year, month, day)
}

/// Appends an integer in decimal.
pub fn push_int(out: &mut String, value: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// Appends a float as a JSON number (`null` for NaN and infinities, which JSON cannot hold).
pub fn push_f64(out: &mut String, value: f64) {
    if value.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_match_a_reference_formatter() {
        let rfc3339 = time::format_description::well_known::Rfc3339;
        // Leap days, year ends, the epoch, far future, odd nanoseconds.
        for secs in [
            0u64,
            951_782_400,     // 2000-02-29
            1_709_164_800,   // 2024-02-29
            1_735_689_599,   // 2024-12-31T23:59:59
            4_102_444_800,   // 2100-01-01
            253_402_300_799, // 9999-12-31T23:59:59
        ] {
            for nanos in [0u32, 1, 999_999_999, 123_456_789] {
                let t = UNIX_EPOCH + Duration::new(secs, nanos);
                let mut ours = String::new();
                push_rfc3339(&mut ours, t);
                let reference = time::OffsetDateTime::from(t).format(&rfc3339).unwrap();
                // The reference trims trailing zeros of the fraction; compare as instants.
                let parsed = time::OffsetDateTime::parse(&ours, &rfc3339).unwrap();
                assert_eq!(
                    parsed,
                    time::OffsetDateTime::from(t),
                    "{ours} vs {reference}"
                );
                assert_eq!(ours.len(), 30, "{ours}");
            }
        }
    }

    #[test]
    fn numbers_and_hex() {
        let mut s = String::new();
        push_int(&mut s, -42i64);
        s.push(' ');
        push_f64(&mut s, 1.5);
        s.push(' ');
        push_f64(&mut s, f64::NAN);
        s.push(' ');
        push_hex(&mut s, &u128::MAX.to_be_bytes());
        assert_eq!(s, format!("-42 1.5 null {}", "f".repeat(32)));
    }
}
