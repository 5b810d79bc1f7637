//! Service level objectives: what is measured, the targets, and the link-time registry.

use std::fmt;
use std::time::Duration;

/// One service level objective: a target for the share of good events of one thing tracewire
/// measures (an HTTP route, a `#[traced]` function, the messages of a queue or topic) over a
/// rolling window.
///
/// Declare objectives with `tracewire::objective!` or `#[tracewire::traced(objective(...))]`
/// (feature `macros`): both register the objective at link time, so [`objectives`] lists every
/// objective of the program. The `const` builder methods are what the macros expand to; they
/// also build objectives by hand, e.g. for [`Generator::objectives`](super::Generator::objectives).
///
/// ```
/// use std::time::Duration;
/// use tracewire::ops::{Objective, Percent, Subject};
///
/// const USERS: Objective = Objective::new("users", Subject::HttpRoute("/users/{id}"))
///     .with_availability(Percent::from_ppm(999_000))                         // 99.9 %
///     .with_latency(Percent::from_ppm(990_000), Duration::from_millis(250)); // 99 % within 250 ms
/// assert_eq!(USERS.window(), Duration::from_secs(30 * 86_400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Objective {
    name: &'static str,
    subject: Subject,
    availability: Option<Percent>,
    latency: Option<Latency>,
    window: Duration,
    description: &'static str,
    file: &'static str,
    line: u32,
}

/// What an objective measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// The requests of one route of a `ServerLayer`, as written in the router
    /// (`/users/{id}`: the `http.route` attribute).
    HttpRoute(&'static str),
    /// Every route of a `ServerLayer`, each held to the target on its own (requests that
    /// matched no route are left out).
    AllHttpRoutes,
    /// The calls of a `#[traced]` function (the `function` and `module` attributes of the
    /// `function.calls*` metrics; `module` `None` matches the function in any module).
    Function {
        /// The function's name.
        name: &'static str,
        /// Its module path (`module_path!()`).
        module: Option<&'static str>,
    },
    /// The messages processed from a RabbitMQ queue (`messaging.destination.name`).
    AmqpQueue(&'static str),
    /// The records processed from a Kafka topic (`messaging.destination.name`).
    KafkaTopic(&'static str),
}

impl Subject {
    /// `http`, `function` or `messaging`: the dashboard section the subject belongs to.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::HttpRoute(_) | Subject::AllHttpRoutes => "http",
            Subject::Function { .. } => "function",
            Subject::AmqpQueue(_) | Subject::KafkaTopic(_) => "messaging",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::HttpRoute(route) => write!(f, "HTTP route `{route}`"),
            Subject::AllHttpRoutes => f.write_str("every HTTP route"),
            Subject::Function {
                name,
                module: Some(module),
            } => write!(f, "function `{module}::{name}`"),
            Subject::Function { name, module: None } => write!(f, "function `{name}`"),
            Subject::AmqpQueue(queue) => write!(f, "RabbitMQ queue `{queue}`"),
            Subject::KafkaTopic(topic) => write!(f, "Kafka topic `{topic}`"),
        }
    }
}

/// A percentage held exactly, in parts per million (`99.9 %` is `999_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u32);

impl Percent {
    /// `ppm` parts per million.
    pub const fn from_ppm(ppm: u32) -> Self {
        Self(ppm)
    }

    /// The value in parts per million.
    pub const fn ppm(self) -> u32 {
        self.0
    }

    /// The share of events allowed to be bad, in parts per million.
    pub const fn budget_ppm(self) -> u32 {
        1_000_000u32.saturating_sub(self.0)
    }

    /// As a ratio (`0.999`).
    pub fn ratio(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exact decimal: integer percent, then up to four decimals.
        let whole = self.0 / 10_000;
        let frac = self.0 % 10_000;
        if frac == 0 {
            write!(f, "{whole}%")
        } else {
            let digits = format!("{frac:04}");
            write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
        }
    }
}

/// A latency target: `percent` of the events take at most `threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Latency {
    /// The share of events that must be fast enough.
    pub percent: Percent,
    /// The threshold; must be a bucket bound of the duration histograms.
    pub threshold: Duration,
}

/// The window of an objective when none is given: 30 days.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * 86_400);

impl Objective {
    /// An objective named `name` (unique in the program; letters, digits, `-` and `_`) on
    /// `subject`, with no target yet, over [`DEFAULT_WINDOW`].
    pub const fn new(name: &'static str, subject: Subject) -> Self {
        Self {
            name,
            subject,
            availability: None,
            latency: None,
            window: DEFAULT_WINDOW,
            description: "",
            file: "",
            line: 0,
        }
    }

    /// Sets the availability target: this share of the events succeed.
    #[must_use]
    pub const fn with_availability(mut self, percent: Percent) -> Self {
        self.availability = Some(percent);
        self
    }

    /// Sets the latency target: `percent` of the events take at most `threshold`.
    #[must_use]
    pub const fn with_latency(mut self, percent: Percent, threshold: Duration) -> Self {
        self.latency = Some(Latency { percent, threshold });
        self
    }

    /// Sets the rolling window the targets hold over (default 30 days).
    #[must_use]
    pub const fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets a sentence for people: what this objective protects.
    #[must_use]
    pub const fn with_description(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }

    /// Records where the objective was declared (for messages).
    #[must_use]
    pub const fn declared_at(mut self, file: &'static str, line: u32) -> Self {
        self.file = file;
        self.line = line;
        self
    }

    /// The name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// What is measured.
    pub const fn subject(&self) -> Subject {
        self.subject
    }

    /// The availability target.
    pub const fn availability(&self) -> Option<Percent> {
        self.availability
    }

    /// The latency target.
    pub const fn latency(&self) -> Option<Latency> {
        self.latency
    }

    /// The rolling window.
    pub const fn window(&self) -> Duration {
        self.window
    }

    /// The description (empty when none was given).
    pub const fn description(&self) -> &'static str {
        self.description
    }

    /// `file:line` of the declaration, when known.
    pub fn location(&self) -> Option<String> {
        (!self.file.is_empty()).then(|| format!("{}:{}", self.file, self.line))
    }
}

/// A registered objective, collected at link time.
#[doc(hidden)]
#[derive(Debug)]
pub struct Registration(pub Objective);

inventory::collect!(Registration);

/// Every objective registered in the program (declared with `tracewire::objective!` or
/// `#[traced(objective(...))]`), ordered by name then declaration place.
pub fn objectives() -> Vec<Objective> {
    let mut all: Vec<Objective> = inventory::iter::<Registration>
        .into_iter()
        .map(|r| r.0)
        .collect();
    all.sort_by(|a, b| (a.name, a.file, a.line).cmp(&(b.name, b.file, b.line)));
    all
}
