//! Sampling configuration: rules, limits, environment variables.

use std::fmt;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use crate::InitError;

/// What a [`Rule`] does with the traces it matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Keep every matching trace.
    Always,
    /// Never keep a matching trace by ratio (failing, slow and synthetic ones are still kept).
    Never,
    /// Keep this fraction (`0.0`–`1.0`), decided consistently from the trace id.
    Ratio(f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Selector {
    Name(String),
    Route(String),
    Destination(String),
    Function(String),
}

/// A sampling rule: which spans it matches and what it does with their traces.
///
/// A rule decides for the span that starts this process's part of a trace (the server span
/// of a request, the consumer span of a message, a `#[traced]` function called outside any
/// trace). On a span inside a trace, only [`Action::Always`] has an effect: it keeps the
/// trace. The first matching rule wins. A pattern ending in `*` matches by prefix.
///
/// ```
/// use tracewire::sampling::{Action, Rule};
/// let rules = [
///     Rule::span_name("GET /health", Action::Never),
///     Rule::span_name("POST /orders", Action::Always),
///     Rule::destination("audit.*", Action::Ratio(0.5)),
/// ];
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    selector: Selector,
    action: Action,
}

impl Rule {
    /// Matches spans named `name` (`GET /users/{id}`, a `#[traced]` span name, …).
    pub fn span_name(name: impl Into<String>, action: Action) -> Self {
        Self {
            selector: Selector::Name(name.into()),
            action,
        }
    }

    /// Matches server spans whose `http.route` is `route` (any method).
    pub fn route(route: impl Into<String>, action: Action) -> Self {
        Self {
            selector: Selector::Route(route.into()),
            action,
        }
    }

    /// Matches spans whose `messaging.destination.name` is `destination`.
    pub fn destination(destination: impl Into<String>, action: Action) -> Self {
        Self {
            selector: Selector::Destination(destination.into()),
            action,
        }
    }

    /// Matches the spans of the `#[traced]` function named `function`.
    pub fn function(function: impl Into<String>, action: Action) -> Self {
        Self {
            selector: Selector::Function(function.into()),
            action,
        }
    }

    /// The rule's action.
    pub fn action(&self) -> Action {
        self.action
    }

    pub(crate) fn matches(&self, name: &str, kind: &SpanKind, attributes: &[KeyValue]) -> bool {
        let attribute = |key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.as_str())
        };
        match &self.selector {
            Selector::Name(pattern) => matches_pattern(pattern, name),
            Selector::Function(pattern) => {
                matches!(kind, SpanKind::Internal) && matches_pattern(pattern, name)
            }
            Selector::Route(pattern) => {
                attribute("http.route").is_some_and(|v| matches_pattern(pattern, &v))
            }
            Selector::Destination(pattern) => attribute("messaging.destination.name")
                .is_some_and(|v| matches_pattern(pattern, &v)),
        }
    }

    /// Parses one `selector:pattern=action` rule, as in `TRACEWIRE_SAMPLING_RULES`.
    fn parse(text: &str) -> Result<Self, String> {
        let (selector, action) = text
            .rsplit_once('=')
            .ok_or_else(|| format!("rule {text:?} has no `=action`"))?;
        let action = match action.trim() {
            "always" => Action::Always,
            "never" => Action::Never,
            ratio => Action::Ratio(parse_ratio(ratio).map_err(|e| format!("rule {text:?}: {e}"))?),
        };
        let (kind, pattern) = selector.trim().split_once(':').ok_or_else(|| {
            format!("rule {text:?}: expected `name:`, `route:`, `destination:` or `function:`")
        })?;
        let pattern = pattern.trim().to_owned();
        if pattern.is_empty() {
            return Err(format!("rule {text:?} has an empty pattern"));
        }
        let selector = match kind.trim() {
            "name" => Selector::Name(pattern),
            "route" => Selector::Route(pattern),
            "destination" => Selector::Destination(pattern),
            "function" => Selector::Function(pattern),
            other => {
                return Err(format!(
                    "rule {text:?}: unknown selector {other:?}, expected `name`, `route`, `destination` or `function`"
                ));
            }
        };
        Ok(Self { selector, action })
    }
}

fn matches_pattern(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Parses `TRACEWIRE_SAMPLING_RULES`: rules separated by `,`, each `selector:pattern=action`
/// with selector `name`, `route`, `destination` or `function` and action `always`, `never`
/// or a ratio.
pub(crate) fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    text.split(',')
        .filter(|r| !r.trim().is_empty())
        .map(Rule::parse)
        .collect()
}

/// A ratio between 0 and 1.
pub(crate) fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number between 0.0 and 1.0"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("{text:?} is not between 0.0 and 1.0"));
    }
    Ok(ratio)
}

/// A duration such as `250ms`, `2s`, `1.5s`, `1m` (a bare number is milliseconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 0.000_001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 0.001)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as `250ms` or `2s`"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "{text:?} is not a duration such as `250ms` or `2s`"
        ));
    }
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("{text:?} is not a duration such as `250ms` or `2s`"))
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{text:?} is not `true` or `false`")),
    }
}

/// Bounds of the tail buffer. Every trace decided early because of a bound is counted in
/// `tracewire.sampling.overflow` (attribute `limit`: `traces`, `spans` or `wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Traces waiting for their decision at once (default 10 000). A trace that finds the
    /// buffer full is decided when it starts, by ratio and rules only.
    pub max_traces: usize,
    /// Spans buffered per trace (default 1 000); one more decides the trace with what is known.
    pub max_spans_per_trace: usize,
    /// The longest a trace waits for its last span (default 30 s); it is then decided with
    /// what is known, and its later spans follow that decision.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_traces: 10_000,
            max_spans_per_trace: 1_000,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// What the builder was told; `None` follows the environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    pub(crate) ratio: Option<f64>,
    pub(crate) slow: Option<Duration>,
    pub(crate) rules: Option<Vec<Rule>>,
    pub(crate) parent_based: Option<bool>,
    pub(crate) synthetic_key: Option<String>,
    pub(crate) breadcrumbs: Option<Vec<String>>,
    pub(crate) limits: Option<Limits>,
    pub(crate) disabled: bool,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) ratio: f64,
    pub(crate) slow: Duration,
    pub(crate) rules: Vec<Rule>,
    pub(crate) parent_based: bool,
    pub(crate) synthetic_key: String,
    pub(crate) breadcrumbs: Vec<String>,
    pub(crate) limits: Limits,
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ratio {} slow {:?}", self.ratio, self.slow)
    }
}

const RATIO: &str = "TRACEWIRE_SAMPLING_RATIO";
const SLOW: &str = "TRACEWIRE_SAMPLING_SLOW";
const RULES: &str = "TRACEWIRE_SAMPLING_RULES";
const PARENT_BASED: &str = "TRACEWIRE_SAMPLING_PARENT_BASED";
const SYNTHETIC_KEY: &str = "TRACEWIRE_SAMPLING_SYNTHETIC_KEY";
const BREADCRUMBS: &str = "TRACEWIRE_BAGGAGE_ATTRIBUTES";

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

fn invalid(variable: &'static str, value: &str, message: String) -> InitError {
    InitError::Sampling {
        variable,
        value: value.to_owned(),
        message,
    }
}

impl Options {
    /// Resolves the configuration. `None` when another sampler was chosen (in code or with
    /// `OTEL_TRACES_SAMPLER`): tracewire's sampling then stays out of the way, and setting
    /// `TRACEWIRE_SAMPLING_*` as well is an error.
    pub(crate) fn resolve(&self, other_sampler: bool) -> Result<Option<Setup>, InitError> {
        let other_sampler = other_sampler || env("OTEL_TRACES_SAMPLER").is_some();
        if other_sampler || self.disabled {
            if other_sampler {
                for var in [RATIO, SLOW, RULES] {
                    if let Some(value) = env(var) {
                        return Err(invalid(
                            var,
                            &value,
                            "another sampler is configured (OTEL_TRACES_SAMPLER or Builder::sampler): remove one of them".to_owned(),
                        ));
                    }
                }
            }
            return Ok(None);
        }
        let ratio = match (self.ratio, env(RATIO)) {
            (Some(r), _) => {
                if !(0.0..=1.0).contains(&r) {
                    return Err(invalid(
                        "Builder::sampling_ratio",
                        &r.to_string(),
                        "not between 0.0 and 1.0".to_owned(),
                    ));
                }
                r
            }
            (None, Some(v)) => parse_ratio(&v).map_err(|e| invalid(RATIO, &v, e))?,
            (None, None) => 1.0,
        };
        let slow = match (self.slow, env(SLOW)) {
            (Some(d), _) => d,
            (None, Some(v)) => parse_duration(&v).map_err(|e| invalid(SLOW, &v, e))?,
            (None, None) => Duration::from_secs(1),
        };
        let rules = match (&self.rules, env(RULES)) {
            (Some(r), _) => r.clone(),
            (None, Some(v)) => parse_rules(&v).map_err(|e| invalid(RULES, &v, e))?,
            (None, None) => Vec::new(),
        };
        for rule in &rules {
            if let Action::Ratio(r) = rule.action
                && !(0.0..=1.0).contains(&r)
            {
                return Err(invalid(
                    "Builder::sampling_rule",
                    &r.to_string(),
                    "rule ratio not between 0.0 and 1.0".to_owned(),
                ));
            }
        }
        let parent_based = match (self.parent_based, env(PARENT_BASED)) {
            (Some(b), _) => b,
            (None, Some(v)) => parse_bool(&v).map_err(|e| invalid(PARENT_BASED, &v, e))?,
            (None, None) => true,
        };
        let synthetic_key = match (&self.synthetic_key, env(SYNTHETIC_KEY)) {
            (Some(k), _) => k.clone(),
            (None, Some(v)) => v.trim().to_owned(),
            (None, None) => "synthetic".to_owned(),
        };
        let breadcrumbs = match (&self.breadcrumbs, env(BREADCRUMBS)) {
            (Some(b), _) => b.clone(),
            (None, Some(v)) => v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            (None, None) => Vec::new(),
        };
        Ok(Some(Setup {
            ratio,
            slow,
            rules,
            parent_based,
            synthetic_key,
            breadcrumbs,
            limits: self.limits.unwrap_or_default(),
        }))
    }
}

/// Whether `key` is on the breadcrumb allow-list (`feature_flag.*` matches by prefix).
pub(crate) fn allowed(patterns: &[String], key: &str) -> bool {
    patterns.iter().any(|p| matches_pattern(p, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_documented() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("100"), Ok(Duration::from_millis(100)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn rules_parse_from_text() {
        let rules =
            parse_rules("name:GET /health=never, route:/orders=always,destination:audit.*=0.5")
                .unwrap();
        assert_eq!(rules[0], Rule::span_name("GET /health", Action::Never));
        assert_eq!(rules[1], Rule::route("/orders", Action::Always));
        assert_eq!(rules[2], Rule::destination("audit.*", Action::Ratio(0.5)));
        assert!(parse_rules("name:x=2").is_err());
        assert!(parse_rules("colour:x=always").is_err());
        assert!(parse_rules("name:x").is_err());
        let attrs = [KeyValue::new("messaging.destination.name", "audit.log")];
        assert!(rules[2].matches("publish", &SpanKind::Producer, &attrs));
        assert!(!rules[1].matches("GET /orders", &SpanKind::Server, &attrs));
    }

    #[test]
    fn ratios_must_be_between_zero_and_one() {
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("lots").is_err());
    }
}
