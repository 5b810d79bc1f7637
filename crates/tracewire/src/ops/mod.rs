//! Operations files generated from the code: Prometheus alert rules, a Grafana dashboard and
//! runbooks, from the service level objectives declared next to what they measure.
//!
//! Declare objectives with `tracewire::objective!` (any HTTP route, every route, a RabbitMQ
//! queue, a Kafka topic, a function) or `#[tracewire::traced(objective(...))]` (feature
//! `macros`); [`objectives`] lists them all. A [`Generator`] turns them, and the metric names
//! tracewire's instruments have in a Prometheus scrape of `/metrics`, into [`Files`]:
//!
//! - `<service>.rules.yml`: per objective, recording rules of the share of bad events over
//!   5m, 30m, 1h, 6h, 3d and the objective's window, and multi-window, multi-burn-rate alerts
//!   (`severity: page` at 14.4× over 1h and 5m or 6× over 6h and 30m; `severity: ticket` at 1×
//!   over 3d and 6h) with a minimum-traffic guard, `summary`, `description` and `runbook_url`;
//! - `<service>.rules.test.yml`: `promtool test rules` cases on synthetic series (every event
//!   bad pages; half the error budget stays silent; an idle subject and a trickle of failures
//!   below the traffic guard stay silent);
//! - `<service>.dashboard.json`: a Grafana dashboard (error budget left and burn rate per
//!   objective; rate, errors and duration per route, function and queue; exemplars on);
//! - `<service>.runbook.md`: one section per alert.
//!
//! Output is deterministic, so the files can be committed and held to the code by a test
//! ([`Files::assert_dir`]) the way the event schema is.
//!
//! ```
//! use std::time::Duration;
//! use tracewire::ops::{Generator, Objective, Percent, Subject};
//!
//! let files = Generator::new("shop")
//!     .objectives([Objective::new("checkout", Subject::HttpRoute("/checkout"))
//!         .with_availability(Percent::from_ppm(999_000))
//!         .with_latency(Percent::from_ppm(990_000), Duration::from_millis(250))])
//!     .files()
//!     .unwrap();
//! assert!(files.get("shop.rules.yml").unwrap().contains("alert: ShopCheckoutAvailabilityBudgetBurn"));
//! ```
//!
//! A program can write or check its own files: [`Generator::handle_args`] answers
//! `--ops-out DIR` and `--ops-check DIR`. See `docs/operations.md`.

mod dashboard;
mod gate;
mod objective;
mod promql;
mod rules;
mod runbook;
mod sli;
mod text;
mod unit_tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use gate::{Drift, UPDATE_ENV};
pub use objective::{DEFAULT_WINDOW, Latency, Objective, Percent, Subject, objectives};
pub use promql::metric_names;

#[doc(hidden)]
pub use objective::Registration;

use sli::{Kind, Sli};

/// Generates the operations files of one service from its objectives.
#[derive(Debug, Clone)]
pub struct Generator {
    service: String,
    matchers: Option<Vec<String>>,
    objectives: Option<Vec<Objective>>,
    runbook_base_url: String,
    trace_url_template: Option<String>,
    min_events: u32,
}

/// Events an alert's long window must hold before the alert may fire, unless set with
/// [`Generator::min_events`].
pub const DEFAULT_MIN_EVENTS: u32 = 20;

impl Generator {
    /// A generator for `service` (the `job` of its scrape, unless [`matchers`](Self::matchers)
    /// says otherwise), over every registered objective.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            matchers: None,
            objectives: None,
            runbook_base_url: String::new(),
            trace_url_template: None,
            min_events: DEFAULT_MIN_EVENTS,
        }
    }

    /// Uses these objectives instead of the registered ones.
    #[must_use]
    pub fn objectives(mut self, objectives: impl IntoIterator<Item = Objective>) -> Self {
        self.objectives = Some(objectives.into_iter().collect());
        self
    }

    /// The label matchers that select the service's series in every query, e.g.
    /// `["job=\"shop\"", "namespace=\"prod\""]` (default: `job="<service>"`).
    #[must_use]
    pub fn matchers<I, S>(mut self, matchers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.matchers = Some(matchers.into_iter().map(Into::into).collect());
        self
    }

    /// Where the runbook will be published: alerts link to
    /// `<base><service>.runbook.md#<alert>` (default: no base, a link relative to the rules).
    #[must_use]
    pub fn runbook_base_url(mut self, base: impl Into<String>) -> Self {
        self.runbook_base_url = base.into();
        self
    }

    /// The link from an exemplar to its trace, with `${__value.raw}` where the trace id goes
    /// (Grafana's data-link syntax), e.g. `http://jaeger:16686/trace/${__value.raw}`.
    #[must_use]
    pub fn trace_url_template(mut self, template: impl Into<String>) -> Self {
        self.trace_url_template = Some(template.into());
        self
    }

    /// The minimum number of events in an alert's long window (1h, 6h or 3d) for it to fire,
    /// so a route that served three requests does not page (default [`DEFAULT_MIN_EVENTS`]).
    #[must_use]
    pub fn min_events(mut self, events: u32) -> Self {
        self.min_events = events;
        self
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    fn service_matchers(&self) -> Vec<String> {
        self.matchers
            .clone()
            .unwrap_or_else(|| vec![format!("job={}", text::quote_label(&self.service))])
    }

    /// Checks the objectives and builds the indicators, in a stable order.
    fn slis(&self) -> Result<Vec<Sli>, OpsError> {
        let objectives = self.objectives.clone().unwrap_or_else(objectives);
        let mut problems = Vec::new();
        if !valid_name(&self.service) {
            problems.push(format!(
                "service name `{}`: use letters, digits, `-`, `_` and `.`",
                self.service
            ));
        }
        let mut seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for o in &objectives {
            seen.entry(o.name())
                .or_default()
                .push(o.location().unwrap_or_else(|| "(no location)".to_owned()));
        }
        for (name, places) in &seen {
            if places.len() > 1 {
                problems.push(format!(
                    "objective `{name}` is declared more than once: {}",
                    places.join(", ")
                ));
            }
        }
        let mut slis = Vec::new();
        let service_matchers = self.service_matchers();
        for o in &objectives {
            let at = o.location().map(|l| format!(" ({l})")).unwrap_or_default();
            let mut bad =
                |what: String| problems.push(format!("objective `{}`{at}: {what}", o.name()));
            if !valid_name(o.name()) {
                bad("the name must be letters, digits, `-` and `_`".to_owned());
            }
            match o.subject() {
                Subject::HttpRoute(route) if !route.starts_with('/') => {
                    bad(format!(
                        "the route `{route}` must start with `/`, as in the router"
                    ));
                }
                Subject::Function { name: "", .. }
                | Subject::AmqpQueue("")
                | Subject::KafkaTopic("") => {
                    bad("the function, queue or topic name is empty".to_owned());
                }
                _ => {}
            }
            if o.window() < Duration::from_secs(86_400) || o.window().subsec_nanos() != 0 {
                bad(format!(
                    "the window must be whole and at least a day (it is {})",
                    text::human_duration(o.window())
                ));
            }
            if o.availability().is_none() && o.latency().is_none() {
                bad("no target: give `availability`, `latency` or both".to_owned());
            }
            let mut check_percent = |p: Percent, what: &str| {
                if p.ppm() == 0 || p.ppm() >= 1_000_000 {
                    bad(format!(
                        "the {what} target {p} must be above 0% and below 100% (100% leaves no error budget)"
                    ));
                    false
                } else {
                    true
                }
            };
            let availability_ok = o.availability().map(|p| check_percent(p, "availability"));
            let latency_ok = o.latency().map(|l| check_percent(l.percent, "latency"));
            if let Some(p) = o.availability()
                && availability_ok == Some(true)
            {
                slis.push(Sli::new(
                    *o,
                    Kind::Availability,
                    p,
                    None,
                    &service_matchers,
                    &self.service,
                ));
            }
            if let Some(l) = o.latency() {
                match sli::bucket_le(l.threshold) {
                    Some(le) if latency_ok == Some(true) => slis.push(Sli::new(
                        *o,
                        Kind::Latency,
                        l.percent,
                        Some(le),
                        &service_matchers,
                        &self.service,
                    )),
                    Some(_) => {}
                    None => problems.push(format!(
                        "objective `{}`{at}: the latency threshold {} is not a bucket bound of the duration histograms (one of {}); a threshold between bounds cannot be measured",
                        o.name(),
                        text::human_duration(l.threshold),
                        bucket_list()
                    )),
                }
            }
        }
        if !problems.is_empty() {
            return Err(OpsError { problems });
        }
        slis.sort_by(|a, b| (a.objective.name(), a.kind).cmp(&(b.objective.name(), b.kind)));
        Ok(slis)
    }

    /// Generates every file.
    pub fn files(&self) -> Result<Files, OpsError> {
        let slis = self.slis()?;
        let ctx = Context {
            service: &self.service,
            service_matchers: self.service_matchers(),
            runbook_base_url: &self.runbook_base_url,
            trace_url_template: self.trace_url_template.as_deref(),
            min_events: self.min_events,
            slis: &slis,
        };
        let mut files = BTreeMap::new();
        files.insert(ctx.rules_file(), rules::render(&ctx));
        files.insert(
            format!("{}.rules.test.yml", self.service),
            unit_tests::render(&ctx),
        );
        files.insert(
            format!("{}.dashboard.json", self.service),
            dashboard::render(&ctx),
        );
        files.insert(ctx.runbook_file(), runbook::render(&ctx));
        Ok(Files { files })
    }

    /// Answers the command-line flags `--ops-out DIR` (write the files into `DIR`) and
    /// `--ops-check DIR` (compare them with the files in `DIR`; with
    /// [`UPDATE_ENV`]`=1`, rewrite those that differ). Returns the exit code when one of the
    /// flags was given (the program should then exit), `None` otherwise.
    ///
    /// ```no_run
    /// if let Some(code) = tracewire::ops::Generator::new("shop").handle_args() {
    ///     std::process::exit(code);
    /// }
    /// ```
    pub fn handle_args(&self) -> Option<i32> {
        let args: Vec<String> = std::env::args().collect();
        let mut iter = args.iter().skip(1);
        while let Some(arg) = iter.next() {
            let (flag, value) = match arg.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            if flag != "--ops-out" && flag != "--ops-check" {
                continue;
            }
            let Some(dir) = value.or_else(|| iter.next().cloned()) else {
                eprintln!("{flag} needs a directory");
                return Some(2);
            };
            let files = match self.files() {
                Ok(files) => files,
                Err(error) => {
                    eprintln!("{error}");
                    return Some(1);
                }
            };
            let result = if flag == "--ops-out" {
                files.write_to(&dir).map_err(|e| e.to_string())
            } else {
                files.check_dir(&dir).map_err(|e| e.to_string())
            };
            return Some(match result {
                Ok(()) => 0,
                Err(message) => {
                    eprintln!("{message}");
                    1
                }
            });
        }
        None
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn bucket_list() -> String {
    tracewire_core::metrics::DURATION_BOUNDARIES_SECONDS
        .iter()
        .map(|b| text::human_duration(Duration::from_secs_f64(*b)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What every renderer reads.
pub(crate) struct Context<'a> {
    pub(crate) service: &'a str,
    pub(crate) service_matchers: Vec<String>,
    pub(crate) runbook_base_url: &'a str,
    pub(crate) trace_url_template: Option<&'a str>,
    pub(crate) min_events: u32,
    pub(crate) slis: &'a [Sli],
}

impl Context<'_> {
    pub(crate) fn rules_file(&self) -> String {
        format!("{}.rules.yml", self.service)
    }

    pub(crate) fn runbook_file(&self) -> String {
        format!("{}.runbook.md", self.service)
    }

    pub(crate) fn dashboard_title(&self) -> String {
        format!("{} — service level", self.service)
    }

    pub(crate) fn alert_name(&self, sli: &Sli) -> String {
        format!(
            "{}{}{}BudgetBurn",
            text::camel(self.service),
            text::camel(sli.objective.name()),
            sli.kind.title()
        )
    }

    pub(crate) fn runbook_url(&self, sli: &Sli) -> String {
        format!(
            "{}{}#{}",
            self.runbook_base_url,
            self.runbook_file(),
            self.alert_name(sli).to_ascii_lowercase()
        )
    }

    pub(crate) fn service_selector(&self) -> String {
        format!("{{{}}}", self.service_matchers.join(","))
    }

    /// Whether any objective measures a subject of this kind (`http`, `function`, `messaging`).
    pub(crate) fn has(&self, kind: &str) -> bool {
        self.slis
            .iter()
            .any(|s| s.objective.subject().kind() == kind)
    }
}

/// The burn-rate alerts: severity, long and short windows, and the share of the error budget
/// spent in the long window (the SRE workbook's 2 % in 1 h, 5 % in 6 h, 10 % in 3 d).
pub(crate) struct BurnWindow {
    pub(crate) severity: &'static str,
    pub(crate) long: Duration,
    pub(crate) short: Duration,
    pub(crate) budget_share: f64,
}

pub(crate) const BURN_WINDOWS: [BurnWindow; 3] = [
    BurnWindow {
        severity: "page",
        long: Duration::from_secs(3600),
        short: Duration::from_secs(300),
        budget_share: 0.02,
    },
    BurnWindow {
        severity: "page",
        long: Duration::from_secs(6 * 3600),
        short: Duration::from_secs(30 * 60),
        budget_share: 0.05,
    },
    BurnWindow {
        severity: "ticket",
        long: Duration::from_secs(3 * 86_400),
        short: Duration::from_secs(6 * 3600),
        budget_share: 0.10,
    },
];

impl BurnWindow {
    /// The burn rate of this alert for an objective over `window`: 14.4, 6 and 1 for 30 days.
    pub(crate) fn factor(&self, window: Duration) -> f64 {
        let factor = self.budget_share * window.as_secs_f64() / self.long.as_secs_f64();
        (factor * 1e6).round() / 1e6
    }
}

/// The generated files, by file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    files: BTreeMap<String, String>,
}

impl Files {
    /// The content of one file.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.files.get(name).map(String::as_str)
    }

    /// Every file: name and content, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Writes every file into `dir` (created when missing).
    pub fn write_to(&self, dir: impl AsRef<Path>) -> std::io::Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        for (name, content) in &self.files {
            std::fs::write(dir.join(name), content)?;
        }
        Ok(())
    }
}

/// Objectives that cannot be turned into rules, every problem with the objective's name and
/// where it was declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl fmt::Display for OpsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot generate the operations files:")?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for OpsError {}
