//! What tracewire never records in clear.
//!
//! By default the values of `authorization`, `cookie`, `set-cookie`, `proxy-authorization` and
//! `x-api-key` never reach a span, a log line or a metric, and query strings keep their keys
//! but lose their values. The list is configurable on every layer that records headers.

use std::borrow::Cow;
use std::sync::Arc;

/// The text that replaces a redacted value.
pub const REDACTED: &str = "REDACTED";

/// Header names whose values are redacted unless configured otherwise (lowercase).
pub const DEFAULT_SENSITIVE_HEADERS: [&str; 5] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "x-api-key",
];

/// A set of header (or field) names whose values are never recorded, compared
/// case-insensitively.
#[derive(Debug, Clone)]
pub struct SensitiveHeaders(Arc<[Box<str>]>);

impl Default for SensitiveHeaders {
    fn default() -> Self {
        Self::new(DEFAULT_SENSITIVE_HEADERS)
    }
}

impl SensitiveHeaders {
    /// Exactly these names.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self(
            names
                .into_iter()
                .map(|n| n.as_ref().to_ascii_lowercase().into_boxed_str())
                .collect(),
        )
    }

    /// These names added to the current set.
    pub fn with<I, S>(&self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::new(
            self.0
                .iter()
                .map(|n| n.to_string())
                .chain(names.into_iter().map(|n| n.as_ref().to_string())),
        )
    }

    /// Whether `name`'s value must be redacted.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// `value`, or [`REDACTED`] when `name` is sensitive.
    pub fn apply<'a>(&self, name: &str, value: &'a str) -> &'a str {
        if self.contains(name) { REDACTED } else { value }
    }
}

/// A query string with every value replaced by [`REDACTED`]; keys and order are kept, so
/// `a=1&b&c=x` becomes `a=REDACTED&b&c=REDACTED`. Borrowed when there is nothing to redact.
///
/// ```
/// use tracewire_core::redact::redact_query;
/// assert_eq!(redact_query("token=s3cret&page=2"), "token=REDACTED&page=REDACTED");
/// assert_eq!(redact_query("flag"), "flag");
/// ```
pub fn redact_query(query: &str) -> Cow<'_, str> {
    if !query.contains('=') {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((key, _)) => {
                out.push_str(key);
                out.push('=');
                out.push_str(REDACTED);
            }
            None => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

/// A URL with its userinfo replaced by `REDACTED:REDACTED` and its query values redacted, for
/// `url.full` on client spans.
///
/// ```
/// use tracewire_core::redact::redact_url;
/// assert_eq!(
///     redact_url("https://bob:pw@api.example.com/x?key=1#top"),
///     "https://REDACTED:REDACTED@api.example.com/x?key=REDACTED#top"
/// );
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let (before_query, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let authority_start = before_query.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = before_query[authority_start..]
        .find('/')
        .map(|i| authority_start + i)
        .unwrap_or(before_query.len());
    let userinfo_end = before_query[authority_start..authority_end].rfind('@');
    let query_redacted = query.map(redact_query);
    let needs_change = userinfo_end.is_some() || matches!(query_redacted, Some(Cow::Owned(_)));
    if !needs_change {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len() + 16);
    match userinfo_end {
        Some(at) => {
            out.push_str(&before_query[..authority_start]);
            out.push_str("REDACTED:REDACTED");
            out.push_str(&before_query[authority_start + at..]);
        }
        None => out.push_str(before_query),
    }
    if let Some(q) = query_redacted {
        out.push('?');
        out.push_str(&q);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_defaults() {
        let s = SensitiveHeaders::default();
        assert!(s.contains("Authorization"));
        assert!(s.contains("x-api-key"));
        assert!(!s.contains("x-tenant"));
        assert_eq!(s.apply("Cookie", "a=b"), REDACTED);
        let more = s.with(["X-Tenant"]);
        assert!(more.contains("x-tenant") && more.contains("cookie"));
    }

    #[test]
    fn queries() {
        assert_eq!(redact_query("a=1&b&c=x=y"), "a=REDACTED&b&c=REDACTED");
        assert_eq!(redact_query(""), "");
    }

    #[test]
    fn urls() {
        assert_eq!(redact_url("http://h:1/p"), "http://h:1/p");
        assert_eq!(
            redact_url("http://u@h/p?x"),
            "http://REDACTED:REDACTED@h/p?x"
        );
        assert_eq!(redact_url("/p?a=1"), "/p?a=REDACTED");
        assert_eq!(redact_url("http://h/a@b?q=1"), "http://h/a@b?q=REDACTED");
    }
}
