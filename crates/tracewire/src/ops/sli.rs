//! The service level indicators behind an objective, as PromQL over the metric names a
//! Prometheus scrape of `/metrics` shows (unit suffix `_seconds`, `_total`, `_bucket`).

use std::fmt::Write as _;
use std::time::Duration;

use super::objective::{Objective, Percent, Subject};
use super::text::{le_value, prom_duration, quote_label};

/// Histogram of HTTP server requests, as scraped.
pub(crate) const HTTP_DURATION: &str = "http_server_request_duration_seconds";
/// Histogram of `#[traced]` calls, as scraped.
pub(crate) const FUNCTION_DURATION: &str = "function_calls_duration_seconds";
/// Counter of `#[traced]` calls by result, as scraped.
pub(crate) const FUNCTION_CALLS: &str = "function_calls_total";
/// Histogram of processed messages, as scraped.
pub(crate) const PROCESS_DURATION: &str = "messaging_process_duration_seconds";

/// Recording rule: the share of bad events over a window, per objective and indicator.
pub(crate) const BAD_RATIO: &str = "tracewire:slo_bad_ratio";
/// Recording rule: events per second over a window, per objective.
pub(crate) const EVENTS: &str = "tracewire:slo_events";

/// Windows of the multi-window, multi-burn-rate alerts (the SRE workbook's).
pub(crate) const ALERT_WINDOWS: [Duration; 5] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(3 * 86_400),
];

/// Which target of an objective an indicator measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Availability,
    Latency,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Availability => "availability",
            Kind::Latency => "latency",
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Kind::Availability => "Availability",
            Kind::Latency => "Latency",
        }
    }
}

/// One indicator of one objective, with everything the generators need.
#[derive(Debug, Clone)]
pub(crate) struct Sli {
    pub(crate) objective: Objective,
    pub(crate) kind: Kind,
    pub(crate) target: Percent,
    /// `le` value of the latency threshold (latency only).
    pub(crate) le: Option<String>,
    /// The selector matchers every query of this objective carries (service + subject).
    pub(crate) matchers: Vec<String>,
    /// The label the indicator is computed per (`http_route`, `function`, …).
    pub(crate) group: &'static str,
    pub(crate) service: String,
}

impl Sli {
    pub(crate) fn new(
        objective: Objective,
        kind: Kind,
        target: Percent,
        le: Option<String>,
        service_matchers: &[String],
        service: &str,
    ) -> Self {
        let mut matchers = service_matchers.to_vec();
        let group = match objective.subject() {
            Subject::HttpRoute(route) => {
                matchers.push(format!("http_route={}", quote_label(route)));
                "http_route"
            }
            Subject::AllHttpRoutes => {
                matchers.push("http_route!=\"\"".to_owned());
                "http_route"
            }
            Subject::Function { name, module } => {
                matchers.push(format!("function={}", quote_label(name)));
                if let Some(module) = module {
                    matchers.push(format!("module={}", quote_label(module)));
                }
                "function"
            }
            Subject::AmqpQueue(queue) => {
                matchers.push("messaging_system=\"rabbitmq\"".to_owned());
                matchers.push(format!("messaging_destination_name={}", quote_label(queue)));
                "messaging_destination_name"
            }
            Subject::KafkaTopic(topic) => {
                matchers.push("messaging_system=\"kafka\"".to_owned());
                matchers.push(format!("messaging_destination_name={}", quote_label(topic)));
                "messaging_destination_name"
            }
        };
        Self {
            objective,
            kind,
            target,
            le,
            matchers,
            group,
            service: service.to_owned(),
        }
    }

    /// The histogram the subject is measured by (without suffix).
    pub(crate) fn histogram(&self) -> &'static str {
        histogram_of(&self.objective.subject())
    }

    fn selector(&self, extra: &[&str]) -> String {
        let mut all: Vec<&str> = self.matchers.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        format!("{{{}}}", all.join(","))
    }

    /// Events per second over `window`, per group.
    pub(crate) fn events_expr(&self, window: Duration) -> String {
        format!(
            "sum by ({group}) (rate({h}_count{sel}[{w}]))",
            group = self.group,
            h = self.histogram(),
            sel = self.selector(&[]),
            w = prom_duration(window),
        )
    }

    /// The share of bad events over `window`, per group; `0` when there were events and none
    /// was bad, no value when there were no events.
    pub(crate) fn bad_ratio_expr(&self, window: Duration) -> String {
        let w = prom_duration(window);
        let group = self.group;
        match self.kind {
            Kind::Availability => {
                let (total, bad) = match self.objective.subject() {
                    Subject::Function { .. } => (FUNCTION_CALLS.to_owned(), "result=\"error\""),
                    subject => (
                        format!("{}_count", histogram_of(&subject)),
                        "error_type!=\"\"",
                    ),
                };
                let all = self.selector(&[]);
                let bad = self.selector(&[bad]);
                let mut out = String::new();
                let _ = write!(
                    out,
                    "(\n  sum by ({group}) (rate({total}{bad}[{w}]))\n  or\n  0 * sum by ({group}) (rate({total}{all}[{w}]))\n)\n/\nsum by ({group}) (rate({total}{all}[{w}]))"
                );
                out
            }
            Kind::Latency => {
                let h = self.histogram();
                let le = self.le.as_deref().unwrap_or("+Inf");
                let le_matcher = format!("le=\"{le}\"");
                let fast = self.selector(&[&le_matcher]);
                let all = self.selector(&[]);
                format!(
                    "1 - (\n  sum by ({group}) (rate({h}_bucket{fast}[{w}]))\n  /\n  sum by ({group}) (rate({h}_count{all}[{w}]))\n)"
                )
            }
        }
    }

    /// The labels identifying this indicator's recorded series, as PromQL matchers.
    pub(crate) fn recorded_matchers(&self, with_sli: bool) -> String {
        let mut out = format!(
            "service={},objective={}",
            quote_label(&self.service),
            quote_label(self.objective.name())
        );
        if with_sli {
            let _ = write!(out, ",sli=\"{}\"", self.kind.label());
        }
        out
    }

    /// What a bad event is, in words.
    pub(crate) fn bad_event_words(&self) -> String {
        match self.kind {
            Kind::Availability => match self.objective.subject() {
                Subject::HttpRoute(_) | Subject::AllHttpRoutes => {
                    "requests that failed (a 5xx status or an error of the service; `error.type` set)"
                        .to_owned()
                }
                Subject::Function { .. } => "calls that returned `Err` or panicked".to_owned(),
                Subject::AmqpQueue(_) | Subject::KafkaTopic(_) => {
                    "messages whose processing failed (`error.type` set)".to_owned()
                }
            },
            Kind::Latency => format!(
                "{} slower than {}",
                self.event_noun(),
                super::text::human_duration(
                    self.objective
                        .latency()
                        .map(|l| l.threshold)
                        .unwrap_or_default()
                )
            ),
        }
    }

    /// `requests`, `calls` or `messages`.
    pub(crate) fn event_noun(&self) -> &'static str {
        match self.objective.subject() {
            Subject::HttpRoute(_) | Subject::AllHttpRoutes => "requests",
            Subject::Function { .. } => "calls",
            Subject::AmqpQueue(_) | Subject::KafkaTopic(_) => "messages",
        }
    }
}

/// The histogram (without suffix) a subject is measured by.
pub(crate) fn histogram_of(subject: &Subject) -> &'static str {
    match subject {
        Subject::HttpRoute(_) | Subject::AllHttpRoutes => HTTP_DURATION,
        Subject::Function { .. } => FUNCTION_DURATION,
        Subject::AmqpQueue(_) | Subject::KafkaTopic(_) => PROCESS_DURATION,
    }
}

/// The `le` label value of `threshold` when it is a bucket bound of tracewire's duration
/// histograms, written as the Prometheus exporter writes it.
pub(crate) fn bucket_le(threshold: Duration) -> Option<String> {
    tracewire_core::metrics::DURATION_BOUNDARIES_SECONDS
        .iter()
        .find(|bound| (**bound * 1e9).round() as u128 == threshold.as_nanos())
        .map(|bound| le_value(*bound))
}
