//! The ring of recent traces: bounded in traces, in spans and log lines per trace, and in
//! estimated bytes. When a bound is reached the oldest trace nobody kept (its spans were not
//! sampled for export) goes first, then the oldest kept one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::model::{LogRecord, SpanRecord, hex, parse_trace_id};

/// Bounds of a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Traces kept at most.
    pub max_traces: usize,
    /// Estimated bytes of spans and log lines kept at most.
    pub max_bytes: usize,
    /// Spans kept per trace; later ones are counted and dropped.
    pub max_spans_per_trace: usize,
    /// Log lines kept per trace; later ones are counted and dropped.
    pub max_logs_per_trace: usize,
}

impl Default for Limits {
    /// 1 000 traces, 32 MiB, 1 000 spans and 1 000 log lines per trace.
    fn default() -> Self {
        Self {
            max_traces: 1_000,
            max_bytes: 32 * 1024 * 1024,
            max_spans_per_trace: 1_000,
            max_logs_per_trace: 1_000,
        }
    }
}

#[derive(Debug, Default)]
struct Trace {
    seq: u64,
    spans: Vec<SpanRecord>,
    logs: Vec<LogRecord>,
    bytes: usize,
    kept: bool,
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<u128, Trace>,
    /// Insertion order of traces nobody kept, oldest first.
    unkept: BTreeMap<u64, u128>,
    /// Insertion order of kept traces, oldest first.
    kept: BTreeMap<u64, u128>,
    next_seq: u64,
    bytes: usize,
    stats: Counters,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    evicted_traces: u64,
    dropped_spans: u64,
    dropped_logs: u64,
    spans: u64,
    logs: u64,
}

/// What the store holds and what it let go, for the page footer and `/api/stats`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StoreStats {
    /// Traces held now.
    pub traces: usize,
    /// Spans held now.
    pub spans: u64,
    /// Log lines held now.
    pub logs: u64,
    /// Estimated bytes held now.
    pub bytes: usize,
    /// The byte cap.
    pub max_bytes: usize,
    /// The trace cap.
    pub max_traces: usize,
    /// Traces evicted to stay within the caps.
    pub evicted_traces: u64,
    /// Spans refused because their trace was at the per-trace cap.
    pub dropped_spans: u64,
    /// Log lines refused because their trace was at the per-trace cap.
    pub dropped_logs: u64,
}

/// Filters of the trace list.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    /// A trace id (exact), or text found in a span name or an `http.route`, a messaging
    /// destination or a function name (case-insensitive).
    pub text: Option<String>,
    /// Only traces with (`Some(true)`) or without (`Some(false)`) an error span.
    pub error: Option<bool>,
    /// Only traces at least this long.
    pub min_duration_nano: Option<u64>,
    /// Only traces with a span of this service.
    pub service: Option<String>,
    /// At most this many, newest first (0: 100).
    pub limit: usize,
}

/// One line of the trace list.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    /// 32 hex digits.
    pub trace_id: String,
    /// Name of the root span (the earliest span whose parent is not in the trace).
    pub name: String,
    /// Service of the root span.
    pub service: String,
    /// Every service with a span in the trace, sorted.
    pub services: Vec<String>,
    /// Earliest start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// Latest end minus earliest start.
    pub duration_nano: u64,
    /// Spans held.
    pub spans: usize,
    /// Spans with an error status.
    pub errors: usize,
    /// Whether a span of the trace was sampled for export.
    pub sampled: bool,
}

/// A span in waterfall order.
#[derive(Debug, Clone, Serialize)]
pub struct WaterfallSpan {
    /// Nesting depth (roots are 0).
    pub depth: usize,
    /// The span.
    #[serde(flatten)]
    pub span: SpanRecord,
    /// Log lines written while it was current.
    pub logs: Vec<LogRecord>,
}

/// A whole trace, spans in waterfall order (depth first, siblings by start time).
#[derive(Debug, Clone, Serialize)]
pub struct TraceDetail {
    /// The list line of this trace.
    #[serde(flatten)]
    pub summary: TraceSummary,
    /// Spans in waterfall order.
    pub spans: Vec<WaterfallSpan>,
    /// Log lines whose span is not (or not yet) in the trace.
    pub unattached_logs: Vec<LogRecord>,
}

/// A cheaply cloned handle to the ring of recent traces.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    limits: Limits,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Store {
    /// An empty store bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            limits,
        }
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data behind (every update is
        // complete before the next starts): keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds finished spans; spans with an id that is not 32 hex digits are ignored.
    pub fn insert_spans(&self, spans: impl IntoIterator<Item = SpanRecord>) {
        let mut inner = self.lock();
        for span in spans {
            let Some(id) = parse_trace_id(&span.trace_id) else {
                continue;
            };
            inner.insert(id, Entry::Span(span), &self.limits);
        }
        inner.evict(&self.limits);
    }

    /// Adds log lines; lines with a trace id that is not 32 hex digits are ignored.
    pub fn insert_logs(&self, logs: impl IntoIterator<Item = LogRecord>) {
        let mut inner = self.lock();
        for log in logs {
            let Some(id) = parse_trace_id(&log.trace_id) else {
                continue;
            };
            inner.insert(id, Entry::Log(log), &self.limits);
        }
        inner.evict(&self.limits);
    }

    /// Counts and sizes.
    pub fn stats(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats {
            traces: inner.traces.len(),
            spans: inner.stats.spans,
            logs: inner.stats.logs,
            bytes: inner.bytes,
            max_bytes: self.limits.max_bytes,
            max_traces: self.limits.max_traces,
            evicted_traces: inner.stats.evicted_traces,
            dropped_spans: inner.stats.dropped_spans,
            dropped_logs: inner.stats.dropped_logs,
        }
    }

    /// The traces matching `query`, newest first.
    pub fn traces(&self, query: &TraceQuery) -> Vec<TraceSummary> {
        let inner = self.lock();
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let text = query
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let by_id = text.and_then(parse_trace_id);
        let needle = text.map(str::to_lowercase);
        let mut out: Vec<(u64, TraceSummary)> = Vec::new();
        for (id, trace) in &inner.traces {
            if trace.spans.is_empty() {
                continue;
            }
            let text_matches = match (by_id, &needle) {
                (Some(wanted), _) => *id == wanted,
                (None, Some(needle)) => trace.spans.iter().any(|s| matches_text(s, needle)),
                (None, None) => true,
            };
            let service_matches = query
                .service
                .as_ref()
                .is_none_or(|service| trace.spans.iter().any(|s| &s.service == service));
            if !text_matches || !service_matches {
                continue;
            }
            let summary = summarize(*id, trace);
            if query
                .error
                .is_some_and(|error| (summary.errors > 0) != error)
            {
                continue;
            }
            if query
                .min_duration_nano
                .is_some_and(|min| summary.duration_nano < min)
            {
                continue;
            }
            out.push((trace.seq, summary));
        }
        out.sort_by(|a, b| {
            b.1.start_unix_nano
                .cmp(&a.1.start_unix_nano)
                .then(b.0.cmp(&a.0))
        });
        out.into_iter().take(limit).map(|(_, s)| s).collect()
    }

    /// One trace by its 32 hex digits.
    pub fn trace(&self, trace_id: &str) -> Option<TraceDetail> {
        let id = parse_trace_id(trace_id)?;
        let inner = self.lock();
        let trace = inner.traces.get(&id).filter(|t| !t.spans.is_empty())?;
        Some(detail(id, trace))
    }

    /// Every service with a span in the store, sorted.
    pub fn services(&self) -> Vec<String> {
        let inner = self.lock();
        let mut set: Vec<String> = inner
            .traces
            .values()
            .flat_map(|t| t.spans.iter().map(|s| s.service.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        set.sort();
        set
    }

    /// Runs `f` over every span held, under the store's lock.
    pub(crate) fn with_spans<R>(&self, f: impl FnOnce(Vec<&SpanRecord>) -> R) -> R {
        let inner = self.lock();
        f(inner.traces.values().flat_map(|t| t.spans.iter()).collect())
    }
}

enum Entry {
    Span(SpanRecord),
    Log(LogRecord),
}

impl Inner {
    fn insert(&mut self, id: u128, entry: Entry, limits: &Limits) {
        if !self.traces.contains_key(&id) {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.traces.insert(
                id,
                Trace {
                    seq,
                    ..Trace::default()
                },
            );
            self.unkept.insert(seq, id);
        }
        let Some(trace) = self.traces.get_mut(&id) else {
            return;
        };
        let added = match entry {
            Entry::Span(span) => {
                if trace.spans.len() >= limits.max_spans_per_trace {
                    self.stats.dropped_spans += 1;
                    return;
                }
                let bytes = span.estimated_bytes();
                let sampled = span.sampled;
                trace.spans.push(span);
                self.stats.spans += 1;
                if sampled && !trace.kept {
                    trace.kept = true;
                    self.unkept.remove(&trace.seq);
                    self.kept.insert(trace.seq, id);
                }
                bytes
            }
            Entry::Log(log) => {
                if trace.logs.len() >= limits.max_logs_per_trace {
                    self.stats.dropped_logs += 1;
                    return;
                }
                let bytes = log.estimated_bytes();
                trace.logs.push(log);
                self.stats.logs += 1;
                bytes
            }
        };
        trace.bytes += added;
        self.bytes += added;
    }

    fn evict(&mut self, limits: &Limits) {
        while self.traces.len() > limits.max_traces
            || (self.bytes > limits.max_bytes && !self.traces.is_empty())
        {
            let oldest = self
                .unkept
                .pop_first()
                .or_else(|| self.kept.pop_first())
                .map(|(_, id)| id);
            let Some(id) = oldest else { break };
            if let Some(trace) = self.traces.remove(&id) {
                self.bytes = self.bytes.saturating_sub(trace.bytes);
                self.stats.spans -= trace.spans.len() as u64;
                self.stats.logs -= trace.logs.len() as u64;
                self.stats.evicted_traces += 1;
            }
        }
    }
}

fn matches_text(span: &SpanRecord, needle: &str) -> bool {
    let hit = |value: &str| value.to_lowercase().contains(needle);
    hit(&span.name)
        || [
            "http.route",
            "messaging.destination.name",
            "code.function.name",
            "url.path",
        ]
        .iter()
        .any(|key| span.attribute(key).is_some_and(hit))
}

fn root_of(spans: &[SpanRecord]) -> Option<&SpanRecord> {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    spans
        .iter()
        .filter(|s| s.parent_span_id.as_deref().is_none_or(|p| !ids.contains(p)))
        .min_by_key(|s| s.start_unix_nano)
        .or_else(|| spans.iter().min_by_key(|s| s.start_unix_nano))
}

fn summarize(id: u128, trace: &Trace) -> TraceSummary {
    let start = trace
        .spans
        .iter()
        .map(|s| s.start_unix_nano)
        .min()
        .unwrap_or(0);
    let end = trace
        .spans
        .iter()
        .map(|s| s.end_unix_nano)
        .max()
        .unwrap_or(0);
    let root = root_of(&trace.spans);
    let mut services: Vec<String> = trace
        .spans
        .iter()
        .map(|s| s.service.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    services.sort();
    TraceSummary {
        trace_id: hex(&id.to_be_bytes()),
        name: root.map(|r| r.name.clone()).unwrap_or_default(),
        service: root.map(|r| r.service.clone()).unwrap_or_default(),
        services,
        start_unix_nano: start,
        duration_nano: end.saturating_sub(start),
        spans: trace.spans.len(),
        errors: trace.spans.iter().filter(|s| s.is_error()).count(),
        sampled: trace.kept,
    }
}

fn detail(id: u128, trace: &Trace) -> TraceDetail {
    let summary = summarize(id, trace);
    let spans = &trace.spans;
    let index: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match span
            .parent_span_id
            .as_deref()
            .and_then(|p| index.get(p))
            .filter(|&&p| p != i)
        {
            Some(&parent) => children.entry(parent).or_default().push(i),
            None => roots.push(i),
        }
    }
    let by_start = |v: &mut Vec<usize>| v.sort_by_key(|&i| (spans[i].start_unix_nano, i));
    by_start(&mut roots);
    for list in children.values_mut() {
        by_start(list);
    }
    let mut logs_by_span: HashMap<&str, Vec<LogRecord>> = HashMap::new();
    let mut unattached_logs = Vec::new();
    for log in &trace.logs {
        if index.contains_key(log.span_id.as_str()) {
            logs_by_span
                .entry(log.span_id.as_str())
                .or_default()
                .push(log.clone());
        } else {
            unattached_logs.push(log.clone());
        }
    }
    for logs in logs_by_span.values_mut() {
        logs.sort_by_key(|l| l.time_unix_nano);
    }
    unattached_logs.sort_by_key(|l| l.time_unix_nano);

    let mut order = Vec::with_capacity(spans.len());
    let mut visited = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&r| (r, 0)).collect();
    // Spans caught in a parent cycle have no root: start from them too, once.
    let mut pending = (0..spans.len()).rev().collect::<Vec<_>>();
    loop {
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut visited[i], true) {
                continue;
            }
            order.push((i, depth));
            if let Some(kids) = children.get(&i) {
                stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
            }
        }
        match pending.pop() {
            Some(i) if !visited[i] => stack.push((i, 0)),
            Some(_) => continue,
            None => break,
        }
    }
    let spans = order
        .into_iter()
        .map(|(i, depth)| WaterfallSpan {
            depth,
            logs: logs_by_span
                .remove(spans[i].span_id.as_str())
                .unwrap_or_default(),
            span: spans[i].clone(),
        })
        .collect();
    TraceDetail {
        summary,
        spans,
        unattached_logs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, StatusCode};

    fn span(trace: u128, id: u64, parent: Option<u64>, name: &str, sampled: bool) -> SpanRecord {
        SpanRecord {
            trace_id: format!("{trace:032x}"),
            span_id: format!("{id:016x}"),
            parent_span_id: parent.map(|p| format!("{p:016x}")),
            name: name.into(),
            kind: Kind::Internal,
            service: "svc".into(),
            start_unix_nano: id * 10,
            end_unix_nano: id * 10 + 5,
            status: StatusCode::Unset,
            status_message: String::new(),
            attributes: BTreeMap::new(),
            events: Vec::new(),
            links: Vec::new(),
            sampled,
        }
    }

    #[test]
    fn evicts_unkept_traces_before_kept_ones() {
        let store = Store::new(Limits {
            max_traces: 2,
            ..Limits::default()
        });
        store.insert_spans([span(1, 1, None, "kept", true)]);
        store.insert_spans([span(2, 2, None, "dropped by the sampler", false)]);
        store.insert_spans([span(3, 3, None, "newest", true)]);
        let names: Vec<String> = store
            .traces(&TraceQuery::default())
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["newest", "kept"]);
        assert_eq!(store.stats().evicted_traces, 1);
    }

    #[test]
    fn memory_cap_holds() {
        let store = Store::new(Limits {
            max_bytes: 10_000,
            ..Limits::default()
        });
        for t in 1..200u128 {
            store.insert_spans([span(t, 1, None, &"x".repeat(300), true)]);
        }
        let stats = store.stats();
        assert!(stats.bytes <= 10_000, "{stats:?}");
        assert!(stats.traces > 0 && stats.traces < 199, "{stats:?}");
        assert_eq!(stats.evicted_traces as usize + stats.traces, 199);
    }

    #[test]
    fn waterfall_is_depth_first_by_start() {
        let store = Store::default();
        store.insert_spans([
            span(7, 4, Some(2), "grandchild", true),
            span(7, 3, Some(1), "second child", true),
            span(7, 2, Some(1), "first child", true),
            span(7, 1, None, "root", true),
        ]);
        let detail = store.trace(&format!("{:032x}", 7)).unwrap();
        let order: Vec<(&str, usize)> = detail
            .spans
            .iter()
            .map(|s| (s.span.name.as_str(), s.depth))
            .collect();
        assert_eq!(
            order,
            [
                ("root", 0),
                ("first child", 1),
                ("grandchild", 2),
                ("second child", 1)
            ]
        );
    }

    #[test]
    fn parent_cycles_still_show_every_span() {
        let store = Store::default();
        store.insert_spans([
            span(9, 1, Some(2), "a", true),
            span(9, 2, Some(1), "b", true),
        ]);
        assert_eq!(store.trace(&format!("{:032x}", 9)).unwrap().spans.len(), 2);
    }

    #[test]
    fn per_trace_span_cap_counts_drops() {
        let store = Store::new(Limits {
            max_spans_per_trace: 2,
            ..Limits::default()
        });
        store.insert_spans((1..=5).map(|i| span(5, i, None, "s", true)));
        assert_eq!(store.stats().spans, 2);
        assert_eq!(store.stats().dropped_spans, 3);
    }
}
