//! Byte-level splitting and trimming of header values at ASCII separators: what `str::split`,
//! `split_once` and `trim_matches` do for these, without the general pattern machinery (the
//! parsers run on every extracted message and request).

/// `s` without leading and trailing optional whitespace (spaces and tabs), byte by byte.
#[inline]
pub(crate) fn trim_ows(s: &str) -> &str {
    trim_ows_end(trim_ows_start(s))
}

#[inline]
pub(crate) fn trim_ows_start(s: &str) -> &str {
    let skip = s.bytes().take_while(|b| matches!(b, b' ' | b'\t')).count();
    // Spaces and tabs are one byte each: `skip` is a character boundary.
    &s[skip..]
}

#[inline]
pub(crate) fn trim_ows_end(s: &str) -> &str {
    let skip = s
        .bytes()
        .rev()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    &s[..s.len() - skip]
}

/// Splits `s` at the first `sep` (an ASCII byte), as `str::split_once` does.
#[inline]
pub(crate) fn split_once_byte(s: &str, sep: u8) -> Option<(&str, &str)> {
    let at = s.bytes().position(|b| b == sep)?;
    // `sep` is ASCII: `at` and `at + 1` are character boundaries.
    Some((&s[..at], &s[at + 1..]))
}

/// The pieces of `s` between `sep`s (an ASCII byte), as `str::split` gives them.
#[inline]
pub(crate) fn split_byte(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let current = rest?;
        match split_once_byte(current, sep) {
            Some((piece, tail)) => {
                rest = Some(tail);
                Some(piece)
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}
