//! Reading metric names back out of PromQL, to check that a dashboard or rule file only asks
//! for series that exist.

use std::collections::BTreeSet;

const KEYWORDS: [&str; 13] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects (`rate(http_server_request_duration_seconds_count{...}[5m])`
/// names `http_server_request_duration_seconds_count`): identifiers that are not functions,
/// aggregations, keywords, label names, durations or Grafana variables.
///
/// ```
/// let names = tracewire::ops::metric_names(
///     "histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{job=\"shop\"}[$__rate_interval])))",
/// );
/// assert_eq!(names.into_iter().collect::<Vec<_>>(), ["http_server_request_duration_seconds_bucket"]);
/// ```
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_next_paren = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            if chars[i] == '\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_next_paren => {
                skip_next_paren = false;
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let lower = word.to_ascii_lowercase();
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    skip_next_paren = chars.get(next) == Some(&'(');
                    continue;
                }
                // A function or an aggregation (`sum(`, `sum by (...) (`), never a selector.
                let rest: String = chars[next..]
                    .iter()
                    .take(8)
                    .collect::<String>()
                    .to_ascii_lowercase();
                let aggregation = ["by ", "by(", "without ", "without("]
                    .iter()
                    .any(|k| rest.starts_with(k));
                if KEYWORDS.contains(&lower.as_str())
                    || chars.get(next) == Some(&'(')
                    || aggregation
                {
                    continue;
                }
                names.insert(word);
            }
            _ => i += 1,
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::metric_names;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn selectors_functions_and_modifiers() {
        assert_eq!(
            names(
                "(sum by (http_route) (rate(a_total{job=\"x\",error_type!=\"\"}[5m])) or 0 * sum by (http_route) (rate(b_count{le=\"0.25\"}[5m]))) / on (http_route) group_left c:rec:rate5m offset 1h"
            ),
            ["a_total", "b_count", "c:rec:rate5m"]
        );
        assert_eq!(
            names("1 - tracewire:slo_bad_ratio:rate30d{objective=\"a\"} / 0.001"),
            ["tracewire:slo_bad_ratio:rate30d"]
        );
        assert_eq!(names("x > bool 1e3 and y"), ["x", "y"]);
        assert_eq!(names("sum by (a) (x)\n/\nsum without (b) (y)"), ["x", "y"]);
    }
}
