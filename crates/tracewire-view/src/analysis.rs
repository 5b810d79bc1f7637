//! What the ring says in aggregate: the service map and the RED table.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::model::{Kind, SpanRecord};
use crate::store::Store;

/// A service on the map.
#[derive(Debug, Clone, Serialize)]
pub struct MapNode {
    /// `service.name`.
    pub service: String,
    /// Spans of this service in the ring.
    pub spans: usize,
    /// Of which failed.
    pub errors: usize,
}

/// How one service reaches another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// A CLIENT span whose child is another service's SERVER span.
    Request,
    /// A PRODUCER span that is the parent of, or linked from, another service's CONSUMER span.
    Message,
}

/// A caller → callee relationship with its RED figures, measured on the callee's spans.
#[derive(Debug, Clone, Serialize)]
pub struct MapEdge {
    /// Calling (or publishing) service.
    pub from: String,
    /// Called (or consuming) service.
    pub to: String,
    /// Request or message.
    pub kind: EdgeKind,
    /// Server or consumer spans reached over this edge.
    pub requests: usize,
    /// Of which failed.
    pub errors: usize,
    /// `errors / requests`.
    pub error_rate: f64,
    /// 99th percentile of the server or consumer span durations (nearest rank).
    pub p99_nano: u64,
}

/// Services and the edges between them, from the traces in the ring.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceMap {
    /// Every service with a span in the ring, sorted by name.
    pub nodes: Vec<MapNode>,
    /// Edges, sorted by (from, to, kind).
    pub edges: Vec<MapEdge>,
}

/// Requests, errors and callee durations of one edge.
type EdgeTally = (usize, usize, Vec<u64>);

/// Builds the service map from every span in `store`.
pub fn service_map(store: &Store) -> ServiceMap {
    store.with_spans(|spans| {
        let by_id: HashMap<(&str, &str), &SpanRecord> = spans
            .iter()
            .map(|s| ((s.trace_id.as_str(), s.span_id.as_str()), *s))
            .collect();
        let mut nodes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut edges: BTreeMap<(&str, &str, EdgeKind), EdgeTally> = BTreeMap::new();
        for span in &spans {
            let node = nodes.entry(span.service.as_str()).or_default();
            node.0 += 1;
            node.1 += usize::from(span.is_error());
            let (wanted, kind) = match span.kind {
                Kind::Server => (Kind::Client, EdgeKind::Request),
                Kind::Consumer => (Kind::Producer, EdgeKind::Message),
                _ => continue,
            };
            let parent = span
                .parent_span_id
                .as_deref()
                .map(|p| (span.trace_id.as_str(), p));
            let links = span
                .links
                .iter()
                .map(|l| (l.trace_id.as_str(), l.span_id.as_str()));
            let mut callers: Vec<&str> = Vec::new();
            let mut seen = HashSet::new();
            for key in parent.into_iter().chain(links) {
                if !seen.insert(key) {
                    continue;
                }
                if let Some(caller) = by_id.get(&key)
                    && caller.kind == wanted
                    && caller.service != span.service
                    && !callers.contains(&caller.service.as_str())
                {
                    callers.push(caller.service.as_str());
                }
            }
            for caller in callers {
                let edge = edges
                    .entry((caller, span.service.as_str(), kind))
                    .or_default();
                edge.0 += 1;
                edge.1 += usize::from(span.is_error());
                edge.2.push(span.duration_nano());
            }
        }
        ServiceMap {
            nodes: nodes
                .into_iter()
                .map(|(service, (spans, errors))| MapNode {
                    service: service.to_owned(),
                    spans,
                    errors,
                })
                .collect(),
            edges: edges
                .into_iter()
                .map(
                    |((from, to, kind), (requests, errors, mut durations))| MapEdge {
                        from: from.to_owned(),
                        to: to.to_owned(),
                        kind,
                        requests,
                        errors,
                        error_rate: errors as f64 / requests.max(1) as f64,
                        p99_nano: percentile(&mut durations, 0.99),
                    },
                )
                .collect(),
        }
    })
}

/// What a RED row groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedKind {
    /// A server route (`http.route`, else the server span's name).
    Route,
    /// A `#[traced]` function (`code.function.name`).
    Function,
    /// A queue or topic (`messaging.destination.name`), per operation.
    Destination,
}

/// Rate, errors and duration of one route, function or destination, over the ring.
#[derive(Debug, Clone, Serialize)]
pub struct RedRow {
    /// Service.
    pub service: String,
    /// What `name` is.
    pub kind: RedKind,
    /// Route, function or `operation destination`.
    pub name: String,
    /// Spans.
    pub count: usize,
    /// Spans per second over the time the ring covers.
    pub rate_per_second: f64,
    /// Failed spans.
    pub errors: usize,
    /// Median duration (nearest rank).
    pub p50_nano: u64,
    /// 99th percentile duration (nearest rank).
    pub p99_nano: u64,
}

/// The RED table over every span in `store`, sorted by service, kind and name.
pub fn red(store: &Store) -> Vec<RedRow> {
    store.with_spans(|spans| {
        let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(0);
        let window = (end.saturating_sub(start) as f64 / 1e9).max(1.0);
        let mut groups: BTreeMap<(&str, RedKind, String), (usize, Vec<u64>)> = BTreeMap::new();
        for span in &spans {
            let Some((kind, name)) = red_key(span) else {
                continue;
            };
            let group = groups
                .entry((span.service.as_str(), kind, name))
                .or_default();
            group.0 += usize::from(span.is_error());
            group.1.push(span.duration_nano());
        }
        groups
            .into_iter()
            .map(|((service, kind, name), (errors, mut durations))| RedRow {
                service: service.to_owned(),
                kind,
                name,
                count: durations.len(),
                rate_per_second: durations.len() as f64 / window,
                errors,
                p50_nano: percentile(&mut durations, 0.5),
                p99_nano: percentile(&mut durations, 0.99),
            })
            .collect()
    })
}

fn red_key(span: &SpanRecord) -> Option<(RedKind, String)> {
    if let Some(function) = span.attribute("code.function.name") {
        return Some((RedKind::Function, function.to_owned()));
    }
    match span.kind {
        Kind::Server => {
            let name = match (
                span.attribute("http.request.method"),
                span.attribute("http.route"),
            ) {
                (Some(method), Some(route)) => format!("{method} {route}"),
                _ => span.name.clone(),
            };
            Some((RedKind::Route, name))
        }
        Kind::Producer | Kind::Consumer => {
            let destination = span.attribute("messaging.destination.name")?;
            let operation = span
                .attribute("messaging.operation.name")
                .or_else(|| span.attribute("messaging.operation.type"))
                .unwrap_or(span.kind.as_str());
            Some((RedKind::Destination, format!("{operation} {destination}")))
        }
        _ => None,
    }
}

/// Nearest-rank percentile; 0 for no values.
fn percentile(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = (p * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 0.99), 99);
        assert_eq!(percentile(&mut v, 0.5), 50);
        assert_eq!(percentile(&mut [7], 0.99), 7);
        assert_eq!(percentile(&mut [], 0.99), 0);
    }
}
