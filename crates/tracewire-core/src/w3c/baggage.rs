//! The `baggage` header: comma-separated `key=value;property` list members, values
//! percent-encoded.

use std::borrow::Cow;

use opentelemetry::baggage::{Baggage, BaggageMetadata};
use opentelemetry::{Key, StringValue};

use super::split::{split_byte, split_once_byte, trim_ows, trim_ows_end, trim_ows_start};

/// Longest `baggage` header accepted, in bytes.
pub const MAX_BYTES: usize = 8192;

/// Most list members a `baggage` header may have.
pub const MAX_MEMBERS: usize = 180;

/// Most entries OpenTelemetry's [`Baggage`] holds; members after these are not kept (as the
/// SDK's propagator does).
pub const MAX_KEPT: usize = 64;

/// `tchar` of RFC 9110 (the characters of a `token`).
#[inline]
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn valid_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(tchar)
}

/// `baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`.
#[inline]
fn baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

fn valid_value(s: &str) -> bool {
    s.bytes().all(baggage_octet)
}

/// `property = key OWS "=" OWS value / key OWS`.
fn valid_property(p: &str) -> bool {
    let p = trim_ows(p);
    match split_once_byte(p, b'=') {
        Some((key, value)) => valid_token(trim_ows_end(key)) && valid_value(trim_ows_start(value)),
        None => valid_token(p),
    }
}

/// One parsed list member, borrowing from the header.
struct Member<'a> {
    key: &'a str,
    value: &'a str,
    /// Everything after the first `;` (the properties), unparsed.
    properties: Option<&'a str>,
}

fn split_member(member: &str) -> Option<Member<'_>> {
    let member = trim_ows(member);
    let (pair, properties) = match split_once_byte(member, b';') {
        Some((pair, props)) => (pair, Some(props)),
        None => (member, None),
    };
    let (key, value) = split_once_byte(pair, b'=')?;
    Some(Member {
        key: trim_ows_end(key),
        value: trim_ows(value),
        properties,
    })
}

/// Checks `header` against the W3C Baggage grammar and limits without allocating: at most
/// [`MAX_BYTES`] bytes and [`MAX_MEMBERS`] list members, each `key = value` with a token key, a
/// value of baggage octets, and well-formed properties.
pub fn validate_baggage(header: &str) -> bool {
    if header.len() > MAX_BYTES {
        return false;
    }
    let mut count = 0;
    for member in split_byte(header, b',') {
        count += 1;
        if count > MAX_MEMBERS {
            return false;
        }
        let Some(m) = split_member(member) else {
            return false;
        };
        if !valid_token(m.key) || !valid_value(m.value) {
            return false;
        }
        if let Some(props) = m.properties
            && !split_byte(props, b';').all(valid_property)
        {
            return false;
        }
    }
    true
}

/// Percent-decodes `s` (`%` and two hex digits of either case make a byte; any other `%` stays
/// as it is). Sequences that do not decode to UTF-8 become U+FFFD, as the W3C Baggage
/// specification requires. Borrows when there is nothing to decode.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.as_bytes().contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a `baggage` header into OpenTelemetry [`Baggage`]: `None` when the header breaks the
/// grammar or a limit (it is then ignored as a whole).
///
/// Keys and values are percent-decoded and trimmed, property lists are kept as metadata
/// (each property decoded and trimmed, joined with `;`) — what OpenTelemetry SDKs do, so
/// baggage reads the same whichever side wrote it. Of the members, the first [`MAX_KEPT`]
/// are kept.
///
/// ```
/// use tracewire_core::w3c::parse_baggage;
/// let baggage = parse_baggage("user=alice%20smith, tier=gold;ttl=30").unwrap();
/// assert_eq!(baggage.get("user").map(|v| v.as_str()), Some("alice smith"));
/// assert_eq!(baggage.get_with_metadata("tier").unwrap().1.as_str(), "ttl=30");
/// assert!(parse_baggage("user=alice,").is_none());
/// ```
pub fn parse_baggage(header: &str) -> Option<Baggage> {
    if !validate_baggage(header) {
        return None;
    }
    let mut baggage = Baggage::new();
    for member in split_byte(header, b',').take(MAX_KEPT) {
        let Some(m) = split_member(member) else {
            continue;
        };
        let key = percent_decode(m.key);
        let value = percent_decode(m.value);
        let metadata = match m.properties {
            None => BaggageMetadata::default(),
            Some(props) => {
                let mut joined = String::new();
                for (i, prop) in split_byte(props, b';').enumerate() {
                    if i > 0 {
                        joined.push(';');
                    }
                    joined.push_str(percent_decode(prop).trim());
                }
                BaggageMetadata::from(joined)
            }
        };
        baggage.insert_with_metadata(
            Key::from(key.trim().to_owned()),
            StringValue::from(value.trim().to_owned()),
            metadata,
        );
    }
    Some(baggage)
}

/// Whether `b` is written as is in a value; everything else is percent-encoded: controls,
/// space, `"`, `,`, `;`, `=`, `%`, `\\` and every non-ASCII byte.
#[inline]
fn unreserved(b: u8) -> bool {
    baggage_octet(b) && b != b'=' && b != b'%'
}

/// Whether `b` is written as is in a key (of a member or a property), which must stay a
/// token: every other byte (`[`, `/`, `:`, `@`, … and what [`unreserved`] escapes) is
/// percent-encoded, `%` included.
#[inline]
fn key_char(b: u8) -> bool {
    tchar(b) && b != b'%'
}

fn push_encoded(out: &mut String, s: &str, keep: impl Fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = s.as_bytes();
    // Most keys and values need no escape: one check, one copy.
    if bytes.iter().all(|&b| keep(b)) {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if keep(b) {
            continue;
        }
        // Everything between escapes is unreserved ASCII.
        out.push_str(std::str::from_utf8(&bytes[start..i]).unwrap_or_default());
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
        start = i + 1;
    }
    out.push_str(std::str::from_utf8(&bytes[start..]).unwrap_or_default());
}

/// Appends the properties of `metadata` (as [`parse_baggage`] keeps them: decoded, joined with
/// `;`): a property that is still valid as it is goes out unchanged (as the SDK writes it),
/// any other as `;key` or `;key=value` encoded like keys and values. Properties without a key
/// cannot be written and are left out.
fn push_properties(out: &mut String, metadata: &str) {
    for prop in metadata.split(';') {
        let prop = trim_ows(prop);
        if valid_property(prop) && !prop.contains('%') {
            out.push(';');
            out.push_str(prop);
            continue;
        }
        let (key, value) = match prop.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim())),
            None => (prop.trim(), None),
        };
        if key.is_empty() {
            continue;
        }
        out.push(';');
        push_encoded(out, key, key_char);
        if let Some(value) = value {
            out.push('=');
            push_encoded(out, value, unreserved);
        }
    }
}

/// Appends `baggage` as a header value to `out`: `key=value[;properties]` members joined by
/// `,`, keys, values and properties trimmed and percent-encoded, so whatever [`parse_baggage`]
/// accepted (keys and properties percent-decoded to any text) is written as a header it
/// accepts again. Members with an empty key cannot be written and are left out; members that
/// would take the header past [`MAX_BYTES`] are left out (a receiver would drop the whole
/// header).
pub fn write_baggage(baggage: &Baggage, out: &mut String) {
    let start = out.len();
    for (key, (value, metadata)) in baggage {
        let key = key.as_str().trim();
        if key.is_empty() {
            continue;
        }
        let before = out.len();
        if before > start {
            out.push(',');
        }
        push_encoded(out, key, key_char);
        out.push('=');
        push_encoded(out, value.as_str().trim(), unreserved);
        push_properties(out, metadata.as_str());
        if out.len() - start > MAX_BYTES {
            out.truncate(before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The grammar check written with `str`'s own splitting and trimming: what the byte-level
    /// helpers above must agree with on every input.
    fn reference_validate(header: &str) -> bool {
        const OWS: [char; 2] = [' ', '\t'];
        let member_ok = |member: &str| {
            let member = member.trim_matches(OWS);
            let (pair, props) = match member.split_once(';') {
                Some((pair, props)) => (pair, Some(props)),
                None => (member, None),
            };
            let Some((key, value)) = pair.split_once('=') else {
                return false;
            };
            let prop_ok = |p: &str| {
                let p = p.trim_matches(OWS);
                match p.split_once('=') {
                    Some((k, v)) => {
                        valid_token(k.trim_end_matches(OWS))
                            && valid_value(v.trim_start_matches(OWS))
                    }
                    None => valid_token(p),
                }
            };
            valid_token(key.trim_end_matches(OWS))
                && valid_value(value.trim_matches(OWS))
                && props.is_none_or(|props| props.split(';').all(prop_ok))
        };
        header.len() <= MAX_BYTES
            && header.split(',').count() <= MAX_MEMBERS
            && header.split(',').all(member_ok)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn byte_level_splitting_agrees_with_str_splitting(
            header in "[ \t,;=a-c%2Cé\\\"]{0,24}"
        ) {
            prop_assert_eq!(validate_baggage(&header), reference_validate(&header));
            let pieces: Vec<&str> = split_byte(&header, b',').collect();
            prop_assert_eq!(pieces, header.split(',').collect::<Vec<_>>());
            prop_assert_eq!(trim_ows(&header), header.trim_matches([' ', '\t']));
        }
    }

    #[test]
    fn grammar() {
        assert!(validate_baggage("k=v"));
        assert!(validate_baggage("k=")); // an empty value is allowed
        assert!(validate_baggage(" k = v , k2=v2;p1;p2 = x "));
        assert!(validate_baggage("k=a=b")); // `=` is a baggage octet
        assert!(!validate_baggage(""));
        assert!(!validate_baggage("k=v,"));
        assert!(!validate_baggage("=v"));
        assert!(!validate_baggage("k v=1"));
        assert!(!validate_baggage("k=a b"));
        assert!(!validate_baggage("k=a\\b"));
        assert!(!validate_baggage("k=\"a\""));
        assert!(!validate_baggage("k=é"));
        assert!(!validate_baggage("k=v;"));
        assert!(!validate_baggage("k=v;p q"));
    }

    #[test]
    fn limits() {
        let members: Vec<String> = (0..MAX_MEMBERS).map(|i| format!("k{i}=v")).collect();
        let header = members.join(",");
        let baggage = parse_baggage(&header).unwrap();
        assert_eq!(baggage.len(), MAX_KEPT);
        assert!(baggage.get("k63").is_some());
        assert!(parse_baggage(&format!("{header},k180=v")).is_none());
        let long = format!("k={}", "v".repeat(MAX_BYTES - 2));
        assert!(validate_baggage(&long));
        assert!(!validate_baggage(&format!("{long}v")));
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b%2c%2C"), "a b,,");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
        let b = parse_baggage("k=a=b,e=%FF").unwrap();
        assert_eq!(b.get("k").unwrap().as_str(), "a=b");
        assert_eq!(b.get("e").unwrap().as_str(), "\u{FFFD}");
    }

    #[test]
    fn encoding_round_trips() {
        let mut b = Baggage::new();
        b.insert("k", "a b,c;d=e%f\\g\"é");
        let mut out = String::new();
        write_baggage(&b, &mut out);
        assert_eq!(out, "k=a%20b%2Cc%3Bd%3De%25f%5Cg%22%C3%A9");
        assert!(validate_baggage(&out));
        assert_eq!(parse_baggage(&out).unwrap().get("k"), b.get("k"));
    }

    /// Found by the `amqp_headers` and `kafka_headers` fuzz targets: properties are kept
    /// percent-decoded and were written back raw, so forwarding a message whose baggage had
    /// `k=v;p%20q` wrote a header every receiver rejects as a whole: the baggage was lost.
    #[test]
    fn decoded_keys_and_properties_are_written_back_encoded() {
        let header = "tenant=ac;me%20!!c`orp;x%19=y%2Cz;%20,tier=gold;prop=1";
        let parsed = parse_baggage(header).unwrap();
        let mut out = String::new();
        write_baggage(&parsed, &mut out);
        assert!(validate_baggage(&out), "{out}");
        let again = parse_baggage(&out).unwrap();
        let entries = |b: &Baggage| {
            let mut e: Vec<(String, String, String)> = b
                .iter()
                .map(|(k, (v, m))| (k.to_string(), v.to_string(), m.as_str().to_owned()))
                .collect();
            e.sort();
            e
        };
        assert_eq!(
            entries(&again),
            [
                (
                    "tenant".into(),
                    "ac".into(),
                    "me !!c`orp;x\u{19}=y,z".into()
                ),
                ("tier".into(), "gold".into(), "prop=1".into()),
            ]
        );
    }

    #[test]
    fn oversized_output_drops_whole_members() {
        let mut b = Baggage::new();
        b.insert("a", "x".repeat(4000));
        b.insert("b", "\u{1}".repeat(1500)); // 4500 bytes once encoded
        let mut out = String::new();
        write_baggage(&b, &mut out);
        assert!(out.len() <= MAX_BYTES);
        assert!(validate_baggage(&out));
        assert_eq!(parse_baggage(&out).unwrap().len(), 1);
    }
}
