//! Small, deterministic writers: numbers, durations, PromQL label values, YAML scalars and
//! JSON with sorted keys.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

/// A number as PromQL and people read it: shortest exact form after rounding away float noise
/// (`14.4 * 0.001` is `0.0144`).
pub(crate) fn num(value: f64) -> String {
    let rounded = (value * 1e12).round() / 1e12;
    format!("{rounded}")
}

/// The `le` label value of a bucket bound, as the Prometheus exporter writes it (`0.25`, `1`).
pub(crate) fn le_value(bound: f64) -> String {
    format!("{bound}")
}

/// A Prometheus duration: the largest unit that divides it (`30d`, `6h`, `5m`, `90s`).
pub(crate) fn prom_duration(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= len && secs.is_multiple_of(len) {
            return format!("{}{unit}", secs / len);
        }
    }
    format!("{secs}s")
}

/// A duration for people: `250 ms`, `1 s`, `2.5 s`, `30 days`, `6 hours`.
pub(crate) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        let ms = d.as_secs_f64() * 1000.0;
        if ms < 1000.0 {
            return format!("{} ms", num(ms));
        }
        return format!("{} s", num(d.as_secs_f64()));
    }
    for (one, many, len) in [
        ("day", "days", 86_400u64),
        ("hour", "hours", 3600),
        ("minute", "minutes", 60),
    ] {
        if secs >= len && secs.is_multiple_of(len) {
            let n = secs / len;
            return format!("{n} {}", if n == 1 { one } else { many });
        }
    }
    format!("{secs} s")
}

/// A PromQL string literal for a label value.
pub(crate) fn quote_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A YAML scalar: plain when unambiguous, double-quoted (JSON escaping) otherwise.
pub(crate) fn yaml_str(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && !matches!(
            value.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        value.to_owned()
    } else {
        serde_json::to_string(value).unwrap_or_default()
    }
}

/// A YAML block scalar (`|-`) of `text`, each line indented by `indent` spaces.
pub(crate) fn yaml_block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::from("|-\n");
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    out
}

/// `users-read` → `UsersRead`.
pub(crate) fn camel(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// JSON, pretty-printed with two-space indentation and keys sorted at every level, so the
/// output never depends on map implementation details.
pub(crate) fn json_pretty(value: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value, 0);
    out.push('\n');
    out
}

fn write_json(out: &mut String, value: &Value, depth: usize) {
    let pad = |out: &mut String, depth: usize| {
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(out, depth + 1);
                write_json(out, item, depth + 1);
                if i + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            pad(out, depth);
            out.push(']');
        }
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, key) in keys.iter().enumerate() {
                pad(out, depth + 1);
                let _ = write!(out, "{}: ", serde_json::to_string(key).unwrap_or_default());
                write_json(out, &map[key.as_str()], depth + 1);
                if i + 1 < keys.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            pad(out, depth);
            out.push('}');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_lose_float_noise() {
        assert_eq!(num(14.4 * 0.001), "0.0144");
        assert_eq!(num(6.0 * 0.001), "0.006");
        assert_eq!(num(1.0), "1");
    }

    #[test]
    fn durations() {
        assert_eq!(prom_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(prom_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(prom_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(human_duration(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(human_duration(Duration::from_secs(1)), "1 s");
        assert_eq!(human_duration(Duration::from_secs(3 * 86_400)), "3 days");
    }

    #[test]
    fn yaml_scalars_are_quoted_when_needed() {
        assert_eq!(yaml_str("page"), "page");
        assert_eq!(yaml_str("/users/{id}"), "\"/users/{id}\"");
        assert_eq!(yaml_str("no"), "\"no\"");
        assert_eq!(yaml_str("a: b"), "\"a: b\"");
    }

    #[test]
    fn camel_case() {
        assert_eq!(camel("users-read"), "UsersRead");
        assert_eq!(camel("pipeline.orders_v2"), "PipelineOrdersV2");
    }
}
