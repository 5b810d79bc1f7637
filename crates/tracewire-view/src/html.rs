//! Server-rendered pages: plain HTML and inline CSS, an inline SVG for the map, no script,
//! no external resource.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::analysis::{EdgeKind, RedKind, RedRow, ServiceMap};
use crate::model::{LogRecord, SpanRecord};
use crate::store::{StoreStats, TraceDetail, TraceQuery, TraceSummary};

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:17px;margin:0}
header a{color:#c9d1d9;text-decoration:none}header a:hover{color:#fff}
main{padding:16px 20px;max-width:1400px}
h2{font-size:16px;margin:18px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
form.search{display:flex;gap:10px;flex-wrap:wrap;align-items:end;margin-bottom:12px}
form.search label{display:flex;flex-direction:column;font-size:12px;color:#57606a}
input,select,button{font:inherit;padding:4px 6px}
.mark{display:inline-block;background:#cf222e;color:#fff;border-radius:3px;padding:0 5px;font-size:11.5px;font-weight:600;margin-left:6px}
.ok{color:#1a7f37}
.muted{color:#57606a}
.waterfall{background:#fff;border:1px solid #d0d7de}
.waterfall .head,.waterfall summary{display:grid;grid-template-columns:minmax(260px,34%) 120px 80px 1fr;gap:8px;align-items:center;padding:3px 8px}
.waterfall .head{font-weight:600;background:#f6f8fa;border-bottom:1px solid #d0d7de}
.waterfall summary{cursor:pointer;list-style:none;border-bottom:1px solid #eaeef2}
.waterfall summary::-webkit-details-marker{display:none}
.waterfall details[open]>summary{background:#f0f6ff}
.waterfall .error>summary .name{color:#cf222e;font-weight:600}
.name{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.track{position:relative;height:14px;background:#f6f8fa}
.bar{position:absolute;top:1px;height:12px;background:#54aeff;border-radius:2px;min-width:2px}
.kind-server .bar{background:#2da44e}.kind-client .bar{background:#bf8700}
.kind-producer .bar{background:#8250df}.kind-consumer .bar{background:#0969da}
.error .bar{background:#cf222e}
.detail{padding:8px 12px 12px 28px;border-bottom:1px solid #d0d7de;background:#fbfcfd}
.detail table{margin:4px 0 10px}.detail table th{width:30%}
.detail h3{font-size:13px;margin:8px 0 2px}
.logs td{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
.lvl-ERROR{color:#cf222e;font-weight:600}.lvl-WARN{color:#9a6700;font-weight:600}
svg text{font:13px system-ui,sans-serif}
.node rect{fill:#fff;stroke:#24292f;stroke-width:1.5}
.node.has-errors rect{stroke:#cf222e}
.node .svc{font-weight:600}
.edge path{fill:none;stroke:#57606a;stroke-width:1.5}
.edge.message path{stroke-dasharray:6 4}
.edge text{fill:#24292f;font-size:11.5px}
footer{padding:10px 20px;color:#57606a;font-size:12px}
"#;

/// Query parameters of a page.
#[derive(Debug, Default)]
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub(crate) fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub(crate) fn trace_query(&self) -> TraceQuery {
        TraceQuery {
            text: self.get("q").map(str::to_owned),
            error: match self.get("status") {
                Some("error") => Some(true),
                Some("ok") => Some(false),
                _ => None,
            },
            min_duration_nano: self
                .get("min_ms")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0)
                .map(|ms| (ms * 1e6) as u64),
            service: self.get("service").map(str::to_owned),
            limit: self
                .get("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100)
                .min(1_000),
        }
    }
}

/// Percent-decoding of a query component (`+` is a space); invalid escapes stay as written.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration for people: `850 µs`, `12.3 ms`, `1.20 s`.
pub(crate) fn duration(nanos: u64) -> String {
    let n = nanos as f64;
    if nanos < 1_000 {
        format!("{nanos} ns")
    } else if nanos < 1_000_000 {
        format!("{:.0} µs", n / 1e3)
    } else if nanos < 100_000_000 {
        format!("{:.1} ms", n / 1e6)
    } else if nanos < 1_000_000_000 {
        format!("{:.0} ms", n / 1e6)
    } else {
        format!("{:.2} s", n / 1e9)
    }
}

/// Time of day in UTC with milliseconds.
fn clock(unix_nano: u64) -> String {
    let ms = unix_nano / 1_000_000;
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

pub(crate) struct Page<'a> {
    pub(crate) base: &'a str,
    pub(crate) title: &'a str,
    pub(crate) stats: StoreStats,
    pub(crate) dropped: u64,
}

impl Page<'_> {
    fn wrap(&self, heading: &str, body: &str) -> String {
        let b = esc(self.base);
        let s = &self.stats;
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{heading} · {title}</title><style>{STYLE}</style></head><body>\
<header><h1>{title}</h1><nav><a href=\"{b}/\">Traces</a> &nbsp; <a href=\"{b}/red\">RED</a> &nbsp; \
<a href=\"{b}/map\">Map</a></nav></header><main>{body}</main>\
<footer>{traces} traces, {spans} spans, {logs} log lines, ~{kib} KiB of {max_kib} KiB; \
evicted {evicted} traces; dropped {dspans} spans and {dlogs} log lines over the per-trace cap, \
{dropped} at the hand-off. Times are UTC.</footer></body></html>",
            title = esc(self.title),
            traces = s.traces,
            spans = s.spans,
            logs = s.logs,
            kib = s.bytes / 1024,
            max_kib = s.max_bytes / 1024,
            evicted = s.evicted_traces,
            dspans = s.dropped_spans,
            dlogs = s.dropped_logs,
            dropped = self.dropped,
        )
    }

    pub(crate) fn index(
        &self,
        traces: &[TraceSummary],
        params: &Params,
        services: &[String],
    ) -> String {
        let mut body = String::new();
        let value = |k: &str| esc(params.get(k).unwrap_or(""));
        let status = params.get("status").unwrap_or("");
        let selected = |v: &str| if status == v { " selected" } else { "" };
        let _ = write!(
            body,
            "<form class=\"search\" method=\"get\" action=\"{b}/\">\
<label>Trace id, route or name<input name=\"q\" size=\"36\" value=\"{q}\"></label>\
<label>Status<select name=\"status\"><option value=\"\">any</option>\
<option value=\"error\"{se}>error</option><option value=\"ok\"{so}>no error</option></select></label>\
<label>Min duration (ms)<input name=\"min_ms\" size=\"8\" value=\"{min}\"></label>",
            b = esc(self.base),
            q = value("q"),
            se = selected("error"),
            so = selected("ok"),
            min = value("min_ms"),
        );
        if services.len() > 1 {
            let wanted = params.get("service").unwrap_or("");
            body.push_str("<label>Service<select name=\"service\"><option value=\"\">any</option>");
            for s in services {
                let sel = if s == wanted { " selected" } else { "" };
                let _ = write!(body, "<option{sel}>{}</option>", esc(s));
            }
            body.push_str("</select></label>");
        }
        body.push_str("<button type=\"submit\">Search</button></form>");
        if traces.is_empty() {
            body.push_str("<p class=\"muted\">No trace matches (yet). Send a request to the service, then reload.</p>");
            return self.wrap("Traces", &body);
        }
        body.push_str(
            "<table class=\"traces\"><thead><tr><th>Started</th><th>Trace</th><th>Root span</th>\
<th>Services</th><th class=\"num\">Spans</th><th class=\"num\">Duration</th><th>Status</th></tr></thead><tbody>",
        );
        for t in traces {
            let status = if t.errors > 0 {
                format!(
                    "<span class=\"mark\">{} error{}</span>",
                    t.errors,
                    if t.errors == 1 { "" } else { "s" }
                )
            } else {
                "<span class=\"ok\">ok</span>".to_owned()
            };
            let _ = write!(
                body,
                "<tr class=\"trace{err}\"><td class=\"mono\">{start}</td>\
<td><a class=\"mono\" href=\"{b}/traces/{id}\">{id}</a>{unsampled}</td><td>{name}</td>\
<td>{services}</td><td class=\"num\">{spans}</td><td class=\"num\">{dur}</td><td>{status}</td></tr>",
                err = if t.errors > 0 { " error" } else { "" },
                start = clock(t.start_unix_nano),
                b = esc(self.base),
                id = esc(&t.trace_id),
                unsampled = if t.sampled {
                    ""
                } else {
                    " <span class=\"muted\">(not exported)</span>"
                },
                name = esc(&t.name),
                services = esc(&t.services.join(", ")),
                spans = t.spans,
                dur = duration(t.duration_nano),
            );
        }
        body.push_str("</tbody></table>");
        self.wrap("Traces", &body)
    }

    pub(crate) fn not_found(&self, id: &str) -> String {
        self.wrap(
            "Not found",
            &format!(
                "<h2>No trace <code>{}</code></h2><p>It is not in the ring: not recorded yet, \
or evicted (see the footer). <a href=\"{}/\">All traces</a></p>",
                esc(id),
                esc(self.base)
            ),
        )
    }

    pub(crate) fn trace(&self, trace: &TraceDetail) -> String {
        let t = &trace.summary;
        let start = t.start_unix_nano;
        let total = t.duration_nano.max(1) as f64;
        let mut body = String::new();
        let _ = write!(
            body,
            "<h2>Trace <code id=\"trace-id\">{id}</code></h2><p class=\"summary\">{name} · {dur} · \
{spans} spans · services: {services} · started {clock} UTC{errors}</p>",
            id = esc(&t.trace_id),
            name = esc(&t.name),
            dur = duration(t.duration_nano),
            spans = t.spans,
            services = esc(&t.services.join(", ")),
            clock = clock(start),
            errors = if t.errors > 0 {
                format!(
                    "<span class=\"mark\">{} error{}</span>",
                    t.errors,
                    if t.errors == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            },
        );
        body.push_str(
            "<div class=\"waterfall\"><div class=\"head\"><span>Span</span><span>Service</span>\
<span>Duration</span><span>Timeline</span></div>",
        );
        for w in &trace.spans {
            let s = &w.span;
            let left = (s.start_unix_nano.saturating_sub(start)) as f64 / total * 100.0;
            let width = (s.duration_nano() as f64 / total * 100.0).max(0.2);
            let _ = write!(
                body,
                "<details class=\"span kind-{kind}{err}\" id=\"span-{sid}\" data-span-id=\"{sid}\">\
<summary><span class=\"name\" style=\"padding-left:{pad}px\" title=\"{name}\"><span class=\"label\">{name}</span>{mark}</span>\
<span class=\"svc\">{svc}</span><span class=\"dur num\">{dur}</span>\
<span class=\"track\"><span class=\"bar\" style=\"left:{left:.3}%;width:{width:.3}%\"></span></span></summary>\
<div class=\"detail\">",
                kind = s.kind.as_str(),
                err = if s.is_error() { " error" } else { "" },
                sid = esc(&s.span_id),
                pad = w.depth * 18,
                name = esc(&s.name),
                mark = if s.is_error() {
                    "<span class=\"mark\">error</span>"
                } else {
                    ""
                },
                svc = esc(&s.service),
                dur = duration(s.duration_nano()),
            );
            span_detail(&mut body, s, &w.logs);
            body.push_str("</div></details>");
        }
        body.push_str("</div>");
        if !trace.unattached_logs.is_empty() {
            body.push_str("<h2>Log lines of spans not in the ring</h2>");
            logs_table(&mut body, &trace.unattached_logs);
        }
        self.wrap(&format!("Trace {}", t.trace_id), &body)
    }

    pub(crate) fn red(&self, rows: &[RedRow]) -> String {
        let mut body = String::from(
            "<h2>Rate, errors, duration</h2><p class=\"muted\">Over the spans in the ring; \
the complete figures are in the metrics.</p>",
        );
        if rows.is_empty() {
            body.push_str("<p class=\"muted\">Nothing recorded yet.</p>");
            return self.wrap("RED", &body);
        }
        body.push_str(
            "<table class=\"red\"><thead><tr><th>Service</th><th>What</th><th>Name</th>\
<th class=\"num\">Count</th><th class=\"num\">Rate /s</th><th class=\"num\">Errors</th>\
<th class=\"num\">p50</th><th class=\"num\">p99</th></tr></thead><tbody>",
        );
        for r in rows {
            let what = match r.kind {
                RedKind::Route => "route",
                RedKind::Function => "function",
                RedKind::Destination => "queue / topic",
            };
            let _ = write!(
                body,
                "<tr><td>{svc}</td><td>{what}</td><td><a href=\"{b}/?q={q}\">{name}</a></td>\
<td class=\"num\">{count}</td><td class=\"num\">{rate:.2}</td><td class=\"num\">{errors}</td>\
<td class=\"num\">{p50}</td><td class=\"num\">{p99}</td></tr>",
                svc = esc(&r.service),
                b = esc(self.base),
                q = esc(&query_component(
                    r.name.rsplit(' ').next().unwrap_or(&r.name)
                )),
                name = esc(&r.name),
                count = r.count,
                rate = r.rate_per_second,
                errors = r.errors,
                p50 = duration(r.p50_nano),
                p99 = duration(r.p99_nano),
            );
        }
        body.push_str("</tbody></table>");
        self.wrap("RED", &body)
    }

    pub(crate) fn map(&self, map: &ServiceMap) -> String {
        let mut body = String::from("<h2>Service map</h2>");
        if map.nodes.is_empty() {
            body.push_str("<p class=\"muted\">Nothing recorded yet.</p>");
            return self.wrap("Map", &body);
        }
        body.push_str(&map_svg(map));
        body.push_str(
            "<h2>Edges</h2><table class=\"edges\"><thead><tr><th>From</th><th></th><th>To</th><th>Kind</th>\
<th class=\"num\">Requests</th><th class=\"num\">Error rate</th><th class=\"num\">p99</th></tr></thead><tbody>",
        );
        for e in &map.edges {
            let _ = write!(
                body,
                "<tr class=\"edge-row\"><td>{from}</td><td>→</td><td>{to}</td><td>{kind}</td>\
<td class=\"num\">{n}</td><td class=\"num\">{rate:.1}%</td><td class=\"num\">{p99}</td></tr>",
                from = esc(&e.from),
                to = esc(&e.to),
                kind = match e.kind {
                    EdgeKind::Request => "request",
                    EdgeKind::Message => "message",
                },
                n = e.requests,
                rate = e.error_rate * 100.0,
                p99 = duration(e.p99_nano),
            );
        }
        if map.edges.is_empty() {
            body.push_str(
                "<tr><td colspan=\"7\" class=\"muted\">No edge between services yet.</td></tr>",
            );
        }
        body.push_str("</tbody></table>");
        self.wrap("Map", &body)
    }
}

fn query_component(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn kv_table(body: &mut String, class: &str, map: &BTreeMap<String, String>) {
    let _ = write!(body, "<table class=\"{class}\"><tbody>");
    for (k, v) in map {
        let _ = write!(
            body,
            "<tr><th class=\"mono\">{}</th><td class=\"mono\">{}</td></tr>",
            esc(k),
            esc(v)
        );
    }
    body.push_str("</tbody></table>");
}

fn span_detail(body: &mut String, s: &SpanRecord, logs: &[LogRecord]) {
    let _ = write!(
        body,
        "<p class=\"mono muted\">span {sid} · parent {parent} · {kind} · status {status}{msg}</p>",
        sid = esc(&s.span_id),
        parent = esc(s.parent_span_id.as_deref().unwrap_or("none")),
        kind = s.kind.as_str(),
        status = match s.status {
            crate::model::StatusCode::Unset => "unset",
            crate::model::StatusCode::Ok => "ok",
            crate::model::StatusCode::Error => "error",
        },
        msg = if s.status_message.is_empty() {
            String::new()
        } else {
            format!(": {}", esc(&s.status_message))
        },
    );
    if !s.attributes.is_empty() {
        body.push_str("<h3>Attributes</h3>");
        kv_table(body, "attributes", &s.attributes);
    }
    if !s.events.is_empty() {
        body.push_str("<h3>Events</h3>");
        for e in &s.events {
            let _ = write!(
                body,
                "<p class=\"event\"><b>{}</b> <span class=\"mono muted\">+{}</span></p>",
                esc(&e.name),
                duration(e.time_unix_nano.saturating_sub(s.start_unix_nano))
            );
            if !e.attributes.is_empty() {
                kv_table(body, "event-attributes", &e.attributes);
            }
        }
    }
    if !s.links.is_empty() {
        body.push_str("<h3>Links</h3><ul class=\"links\">");
        for l in &s.links {
            let _ = write!(
                body,
                "<li class=\"mono\"><a href=\"{tid}#span-{sid}\">{tid}</a> span {sid}",
                tid = esc(&l.trace_id),
                sid = esc(&l.span_id)
            );
            for (k, v) in &l.attributes {
                let _ = write!(body, " · {}={}", esc(k), esc(v));
            }
            body.push_str("</li>");
        }
        body.push_str("</ul>");
    }
    if !logs.is_empty() {
        body.push_str("<h3>Log lines</h3>");
        logs_table(body, logs);
    }
}

fn logs_table(body: &mut String, logs: &[LogRecord]) {
    body.push_str("<table class=\"logs\"><tbody>");
    for l in logs {
        let fields: Vec<String> = l
            .fields
            .iter()
            .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{time}</td><td class=\"lvl-{lvl}\">{lvl}</td><td>{msg}</td><td class=\"muted\">{fields}</td></tr>",
            time = clock(l.time_unix_nano),
            lvl = esc(&l.level),
            msg = esc(&l.message),
            fields = fields.join(" "),
        );
    }
    body.push_str("</tbody></table>");
}

const NODE_W: f64 = 180.0;
const NODE_H: f64 = 50.0;
const COL_GAP: f64 = 150.0;
const ROW_GAP: f64 = 40.0;
const PAD: f64 = 20.0;

/// Columns by longest path from a service nobody calls; rows in name order.
fn map_svg(map: &ServiceMap) -> String {
    let names: Vec<&str> = map.nodes.iter().map(|n| n.service.as_str()).collect();
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut depth = vec![0usize; names.len()];
    // Longest-path layering, bounded by the node count so cycles end.
    for _ in 0..names.len() {
        let mut changed = false;
        for e in &map.edges {
            let (Some(&a), Some(&b)) = (index.get(e.from.as_str()), index.get(e.to.as_str()))
            else {
                continue;
            };
            if a != b && depth[b] < depth[a] + 1 && depth[a] + 1 < names.len() {
                depth[b] = depth[a] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut rows = vec![0usize; names.len()];
    let mut per_col: HashMap<usize, usize> = HashMap::new();
    for i in 0..names.len() {
        let row = per_col.entry(depth[i]).or_default();
        rows[i] = *row;
        *row += 1;
    }
    let cols = depth.iter().max().map_or(1, |d| d + 1);
    let max_rows = per_col.values().copied().max().unwrap_or(1);
    let pos = |i: usize| {
        (
            PAD + depth[i] as f64 * (NODE_W + COL_GAP),
            PAD + 20.0 + rows[i] as f64 * (NODE_H + ROW_GAP),
        )
    };
    let width = PAD * 2.0 + cols as f64 * NODE_W + (cols - 1) as f64 * COL_GAP;
    let height = PAD * 2.0 + 40.0 + max_rows as f64 * NODE_H + (max_rows - 1) as f64 * ROW_GAP;
    let mut svg = format!(
        "<svg class=\"map\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"service map\">\
<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" \
orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#57606a\"/></marker></defs>"
    );
    for e in &map.edges {
        let (Some(&a), Some(&b)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) else {
            continue;
        };
        let (ax, ay) = pos(a);
        let (bx, by) = pos(b);
        let (x1, y1) = (ax + NODE_W, ay + NODE_H / 2.0);
        let (x2, y2) = (bx, by + NODE_H / 2.0);
        let path = if x2 > x1 {
            let mid = (x1 + x2) / 2.0;
            format!("M{x1:.1},{y1:.1} C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}")
        } else {
            // Backwards or within a column: loop below.
            let low = ay.max(by) + NODE_H + ROW_GAP * 0.8;
            format!(
                "M{:.1},{:.1} C{:.1},{low:.1} {:.1},{low:.1} {:.1},{:.1}",
                ax + NODE_W / 2.0,
                ay + NODE_H,
                ax + NODE_W / 2.0,
                bx + NODE_W / 2.0,
                bx + NODE_W / 2.0,
                by + NODE_H
            )
        };
        let (lx, ly) = if x2 > x1 {
            ((x1 + x2) / 2.0, (y1 + y2) / 2.0 - 8.0)
        } else {
            (
                (ax + bx + NODE_W) / 2.0,
                ay.max(by) + NODE_H + ROW_GAP * 0.6,
            )
        };
        let _ = write!(
            svg,
            "<g class=\"edge {kind}\" data-from=\"{from}\" data-to=\"{to}\"><title>{from} → {to}</title>\
<path d=\"{path}\" marker-end=\"url(#arrow)\"/>\
<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\">{n} req · {rate:.0}% err</text>\
<text x=\"{lx:.1}\" y=\"{ly2:.1}\" text-anchor=\"middle\">p99 {p99}</text></g>",
            ly2 = ly + 22.0,
            kind = match e.kind {
                EdgeKind::Request => "request",
                EdgeKind::Message => "message",
            },
            from = esc(&e.from),
            to = esc(&e.to),
            n = e.requests,
            rate = e.error_rate * 100.0,
            p99 = duration(e.p99_nano),
        );
    }
    for (i, node) in map.nodes.iter().enumerate() {
        let (x, y) = pos(i);
        let _ = write!(
            svg,
            "<g class=\"node{err}\" data-service=\"{svc}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" \
height=\"{NODE_H}\" rx=\"6\"/><text class=\"svc\" x=\"{cx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\">{svc}</text>\
<text class=\"muted\" x=\"{cx:.1}\" y=\"{ty2:.1}\" text-anchor=\"middle\" fill=\"#57606a\">{spans} spans{errs}</text></g>",
            err = if node.errors > 0 { " has-errors" } else { "" },
            svc = esc(&node.service),
            cx = x + NODE_W / 2.0,
            ty = y + 21.0,
            ty2 = y + 39.0,
            spans = node.spans,
            errs = if node.errors > 0 {
                format!(
                    ", {} error{}",
                    node.errors,
                    if node.errors == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            },
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_components() {
        let p = Params::parse("q=%2Fusers%2F%7Bid%7D&status=error&min_ms=2.5&bad=%zz%&x");
        assert_eq!(p.get("q"), Some("/users/{id}"));
        assert_eq!(p.get("bad"), Some("%zz%"));
        let q = p.trace_query();
        assert_eq!(q.error, Some(true));
        assert_eq!(q.min_duration_nano, Some(2_500_000));
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
