//! The OpenTelemetry environment variables tracewire reads besides the exporter ones, parsed
//! once by `init()` and checked: a value that cannot work is an [`InitError`] naming the
//! variable, never a setting silently ignored. The full list, with defaults, is in
//! `docs/configuration.md`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracewire_core::propagators::{B3Encoding, B3Propagator, JaegerPropagator};

use crate::InitError;

/// Where settings are read from: the process environment, or a map in tests.
pub(crate) trait Env {
    fn var(&self, name: &str) -> Option<String>;

    /// The value of `name`, trimmed, when set and not empty.
    fn get(&self, name: &str) -> Option<String> {
        self.var(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }
}

/// The process environment.
pub(crate) struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| (*v).to_owned())
    }
}

fn invalid(variable: &str, value: &str, expected: &str) -> InitError {
    InitError::InvalidSetting {
        variable: variable.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

/// A boolean variable (`true` / `false`, any case).
pub(crate) fn boolean(env: &dyn Env, name: &str) -> Result<Option<bool>, InitError> {
    match env.get(name) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(invalid(name, &v, "`true` or `false`")),
    }
}

/// A non-negative integer variable.
pub(crate) fn integer(env: &dyn Env, name: &str) -> Result<Option<u64>, InitError> {
    match env.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| invalid(name, &v, "a non-negative integer")),
    }
}

/// A duration variable in milliseconds.
pub(crate) fn millis(env: &dyn Env, name: &str) -> Result<Option<Duration>, InitError> {
    match env.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(|ms| Some(Duration::from_millis(ms)))
            .map_err(|_| invalid(name, &v, "a duration in milliseconds")),
    }
}

/// `OTEL_SDK_DISABLED`: `true` turns every signal of the SDK off.
pub(crate) fn sdk_disabled(env: &dyn Env) -> Result<bool, InitError> {
    Ok(boolean(env, "OTEL_SDK_DISABLED")?.unwrap_or(false))
}

/// `TRACEWIRE_TRACING_SPANS`: `true` turns the `tracing` span bridge on.
pub(crate) fn tracing_spans(env: &dyn Env) -> Result<bool, InitError> {
    Ok(boolean(env, "TRACEWIRE_TRACING_SPANS")?.unwrap_or(false))
}

/// The batch processor variables the SDK reads itself (it ignores values it cannot parse):
/// checked here so a typo is an error.
pub(crate) const BATCH_VARIABLES: [(&str, Unit); 9] = [
    ("OTEL_BSP_SCHEDULE_DELAY", Unit::Millis),
    ("OTEL_BSP_EXPORT_TIMEOUT", Unit::Millis),
    ("OTEL_BSP_MAX_QUEUE_SIZE", Unit::Count),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", Unit::Count),
    ("OTEL_BSP_MAX_CONCURRENT_EXPORTS", Unit::Count),
    ("OTEL_BLRP_SCHEDULE_DELAY", Unit::Millis),
    ("OTEL_BLRP_EXPORT_TIMEOUT", Unit::Millis),
    ("OTEL_BLRP_MAX_QUEUE_SIZE", Unit::Count),
    ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", Unit::Count),
];

/// The unit of a numeric variable.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit {
    Millis,
    Count,
}

/// Checks the numeric variables the SDK reads on its own.
pub(crate) fn check_sdk_numbers(env: &dyn Env) -> Result<(), InitError> {
    for (name, unit) in BATCH_VARIABLES {
        match unit {
            Unit::Millis => {
                millis(env, name)?;
            }
            Unit::Count => {
                integer(env, name)?;
            }
        }
    }
    Ok(())
}

/// Span limits from `OTEL_SPAN_*_COUNT_LIMIT`, `OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT`,
/// `OTEL_LINK_ATTRIBUTE_COUNT_LIMIT`, and the attribute value length limit
/// (`OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`, else `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) span: opentelemetry_sdk::trace::SpanLimits,
    pub(crate) value_length: Option<usize>,
}

pub(crate) fn limits(env: &dyn Env) -> Result<Limits, InitError> {
    let mut span = opentelemetry_sdk::trace::SpanLimits::default();
    let count = |name: &str, slot: &mut u32| -> Result<(), InitError> {
        if let Some(v) = integer(env, name)? {
            *slot = u32::try_from(v).unwrap_or(u32::MAX);
        }
        Ok(())
    };
    // The general attribute count limit first, the span-specific one wins.
    if let Some(v) = integer(env, "OTEL_ATTRIBUTE_COUNT_LIMIT")? {
        let v = u32::try_from(v).unwrap_or(u32::MAX);
        span.max_attributes_per_span = v;
        span.max_attributes_per_event = v;
        span.max_attributes_per_link = v;
    }
    count(
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
        &mut span.max_attributes_per_span,
    )?;
    count("OTEL_SPAN_EVENT_COUNT_LIMIT", &mut span.max_events_per_span)?;
    count("OTEL_SPAN_LINK_COUNT_LIMIT", &mut span.max_links_per_span)?;
    count(
        "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
        &mut span.max_attributes_per_event,
    )?;
    count(
        "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
        &mut span.max_attributes_per_link,
    )?;
    let general = integer(env, "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")?;
    let specific = integer(env, "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT")?;
    let value_length = specific
        .or(general)
        .map(|v| usize::try_from(v).unwrap_or(usize::MAX));
    Ok(Limits { span, value_length })
}

/// The propagators `OTEL_PROPAGATORS` names, in order (`None` when unset: the default
/// `tracecontext,baggage`). `none` alone means no propagation.
pub(crate) fn propagators(
    env: &dyn Env,
) -> Result<Option<Vec<Box<dyn TextMapPropagator + Send + Sync>>>, InitError> {
    let Some(value) = env.get("OTEL_PROPAGATORS") else {
        return Ok(None);
    };
    let mut out: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name.to_ascii_lowercase().as_str() {
            "tracecontext" => out.push(Box::new(TraceContextPropagator::new())),
            "baggage" => out.push(Box::new(BaggagePropagator::new())),
            "b3" => out.push(Box::new(B3Propagator::new(B3Encoding::SingleHeader))),
            "b3multi" => out.push(Box::new(B3Propagator::new(B3Encoding::MultipleHeaders))),
            "jaeger" => out.push(Box::new(JaegerPropagator::new())),
            "none" => {}
            _ => {
                return Err(invalid(
                    "OTEL_PROPAGATORS",
                    &value,
                    "a comma-separated list of `tracecontext`, `baggage`, `b3`, `b3multi`, `jaeger`, `none`",
                ));
            }
        }
    }
    Ok(Some(out))
}

/// Which measurements may become exemplars (`OTEL_METRICS_EXEMPLAR_FILTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExemplarFilter {
    /// Only measurements taken inside a sampled trace (`trace_based`, the default).
    #[default]
    TraceBased,
    /// Every measurement (`always_on`).
    AlwaysOn,
    /// None (`always_off`).
    AlwaysOff,
}

static EXEMPLAR_FILTER: OnceLock<ExemplarFilter> = OnceLock::new();

/// The exemplar filter set by `init()` from `OTEL_METRICS_EXEMPLAR_FILTER` (or the builder);
/// [`ExemplarFilter::TraceBased`] before `init()` ran.
pub fn exemplar_filter() -> ExemplarFilter {
    EXEMPLAR_FILTER.get().copied().unwrap_or_default()
}

pub(crate) fn set_exemplar_filter(filter: ExemplarFilter) {
    let _ = EXEMPLAR_FILTER.set(filter);
}

pub(crate) fn parse_exemplar_filter(env: &dyn Env) -> Result<ExemplarFilter, InitError> {
    let name = "OTEL_METRICS_EXEMPLAR_FILTER";
    match env.get(name) {
        None => Ok(ExemplarFilter::TraceBased),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "trace_based" => Ok(ExemplarFilter::TraceBased),
            "always_on" => Ok(ExemplarFilter::AlwaysOn),
            "always_off" => Ok(ExemplarFilter::AlwaysOff),
            _ => Err(invalid(
                name,
                &v,
                "`trace_based`, `always_on` or `always_off`",
            )),
        },
    }
}

/// `OTEL_LOGS_EXPORTER`: whether log records go out over OTLP (`otlp`) or only to standard
/// output (`none`, `console`, unset).
pub(crate) fn logs_exporter(env: &dyn Env) -> Result<bool, InitError> {
    let name = "OTEL_LOGS_EXPORTER";
    match env.get(name) {
        None => Ok(false),
        Some(v) => {
            let mut otlp = false;
            for item in v.split(',').map(str::trim) {
                match item {
                    "otlp" => otlp = true,
                    "none" | "console" => {}
                    _ => return Err(invalid(name, &v, "`otlp`, `console` or `none`")),
                }
            }
            Ok(otlp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &[(&'a str, &'a str)]) -> HashMap<&'a str, &'a str> {
        pairs.iter().copied().collect()
    }

    fn variable_of(error: InitError) -> String {
        match error {
            InitError::InvalidSetting { variable, .. } => variable,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn booleans_accept_true_false_and_name_the_variable_otherwise() {
        assert!(sdk_disabled(&env(&[("OTEL_SDK_DISABLED", "TRUE")])).unwrap());
        assert!(!sdk_disabled(&env(&[("OTEL_SDK_DISABLED", "false")])).unwrap());
        assert!(!sdk_disabled(&env(&[])).unwrap());
        let error = sdk_disabled(&env(&[("OTEL_SDK_DISABLED", "yes")])).unwrap_err();
        assert!(
            error.to_string().contains("OTEL_SDK_DISABLED=\"yes\""),
            "{error}"
        );
        assert!(tracing_spans(&env(&[("TRACEWIRE_TRACING_SPANS", "true")])).unwrap());
        assert_eq!(
            variable_of(tracing_spans(&env(&[("TRACEWIRE_TRACING_SPANS", "1")])).unwrap_err()),
            "TRACEWIRE_TRACING_SPANS"
        );
    }

    #[test]
    fn every_batch_variable_is_checked() {
        for (name, _) in BATCH_VARIABLES {
            assert!(check_sdk_numbers(&env(&[(name, "250")])).is_ok());
            assert_eq!(
                variable_of(check_sdk_numbers(&env(&[(name, "5s")])).unwrap_err()),
                name
            );
        }
    }

    #[test]
    fn limits_specific_wins_over_general() {
        let l = limits(&env(&[
            ("OTEL_ATTRIBUTE_COUNT_LIMIT", "10"),
            ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3"),
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "4"),
            ("OTEL_SPAN_LINK_COUNT_LIMIT", "5"),
            ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "6"),
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "100"),
            ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "8"),
        ]))
        .unwrap();
        assert_eq!(l.span.max_attributes_per_span, 3);
        assert_eq!(l.span.max_events_per_span, 4);
        assert_eq!(l.span.max_links_per_span, 5);
        assert_eq!(l.span.max_attributes_per_event, 10);
        assert_eq!(l.span.max_attributes_per_link, 6);
        assert_eq!(l.value_length, Some(8));
        let l = limits(&env(&[("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "100")])).unwrap();
        assert_eq!(l.value_length, Some(100));
        assert_eq!(l.span.max_attributes_per_span, 128);
        for name in [
            "OTEL_ATTRIBUTE_COUNT_LIMIT",
            "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
            "OTEL_SPAN_EVENT_COUNT_LIMIT",
            "OTEL_SPAN_LINK_COUNT_LIMIT",
            "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
            "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        ] {
            assert_eq!(
                variable_of(limits(&env(&[(name, "-1")])).unwrap_err()),
                name
            );
        }
    }

    #[test]
    fn propagators_in_order_and_unknown_names_rejected() {
        let fields = |value: &str| -> Vec<String> {
            propagators(&env(&[("OTEL_PROPAGATORS", value)]))
                .unwrap()
                .unwrap()
                .iter()
                .flat_map(|p| p.fields().map(str::to_owned).collect::<Vec<_>>())
                .collect()
        };
        assert_eq!(
            fields("b3multi"),
            [
                "x-b3-traceid",
                "x-b3-spanid",
                "x-b3-sampled",
                "x-b3-flags",
                "x-b3-parentspanid"
            ]
        );
        assert_eq!(
            fields("tracecontext, baggage"),
            ["traceparent", "tracestate", "baggage"]
        );
        assert_eq!(fields("jaeger,b3"), ["uber-trace-id", "b3"]);
        assert!(fields("none").is_empty());
        assert!(propagators(&env(&[])).unwrap().is_none());
        assert_eq!(
            variable_of(
                propagators(&env(&[("OTEL_PROPAGATORS", "tracecontext,xray")]))
                    .err()
                    .unwrap()
            ),
            "OTEL_PROPAGATORS"
        );
    }

    #[test]
    fn exemplar_filter_values() {
        let parse = |v| parse_exemplar_filter(&env(&[("OTEL_METRICS_EXEMPLAR_FILTER", v)]));
        assert_eq!(parse("always_on").unwrap(), ExemplarFilter::AlwaysOn);
        assert_eq!(parse("always_off").unwrap(), ExemplarFilter::AlwaysOff);
        assert_eq!(parse("trace_based").unwrap(), ExemplarFilter::TraceBased);
        assert_eq!(
            parse_exemplar_filter(&env(&[])).unwrap(),
            ExemplarFilter::TraceBased
        );
        assert_eq!(
            variable_of(parse("sometimes").unwrap_err()),
            "OTEL_METRICS_EXEMPLAR_FILTER"
        );
    }

    #[test]
    fn logs_exporter_values() {
        assert!(logs_exporter(&env(&[("OTEL_LOGS_EXPORTER", "otlp")])).unwrap());
        assert!(logs_exporter(&env(&[("OTEL_LOGS_EXPORTER", "console,otlp")])).unwrap());
        assert!(!logs_exporter(&env(&[("OTEL_LOGS_EXPORTER", "none")])).unwrap());
        assert!(!logs_exporter(&env(&[])).unwrap());
        assert_eq!(
            variable_of(logs_exporter(&env(&[("OTEL_LOGS_EXPORTER", "loki")])).unwrap_err()),
            "OTEL_LOGS_EXPORTER"
        );
    }
}
