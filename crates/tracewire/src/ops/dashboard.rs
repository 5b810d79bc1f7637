//! The Grafana dashboard of a service.

use serde_json::{Value, json};

use super::rules::recorded;
use super::sli::{
    BAD_RATIO, FUNCTION_CALLS, FUNCTION_DURATION, HTTP_DURATION, PROCESS_DURATION, Sli,
};
use super::text::{human_duration, json_pretty, num};
use super::{BURN_WINDOWS, Context};

/// Grafana's JSON model version the dashboard is written for.
const SCHEMA_VERSION: u32 = 39;

struct Layout {
    panels: Vec<Value>,
    x: u32,
    y: u32,
    row_height: u32,
    next_id: u32,
}

impl Layout {
    fn row(&mut self, title: &str) {
        self.newline();
        let id = self.id();
        self.panels.push(json!({
            "type": "row",
            "id": id,
            "title": title,
            "collapsed": false,
            "gridPos": { "x": 0, "y": self.y, "w": 24, "h": 1 },
            "panels": [],
        }));
        self.y += 1;
    }

    fn newline(&mut self) {
        if self.x > 0 {
            self.x = 0;
            self.y += self.row_height;
            self.row_height = 0;
        }
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn add(&mut self, width: u32, height: u32, mut panel: Value) {
        if self.x + width > 24 {
            self.newline();
        }
        panel["id"] = json!(self.id());
        panel["gridPos"] = json!({ "x": self.x, "y": self.y, "w": width, "h": height });
        panel["datasource"] = datasource();
        self.x += width;
        self.row_height = self.row_height.max(height);
        self.panels.push(panel);
    }
}

fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": "${datasource}" })
}

fn target(ref_id: char, expr: &str, legend: &str) -> Value {
    json!({
        "refId": ref_id.to_string(),
        "datasource": datasource(),
        "expr": expr,
        "legendFormat": legend,
        "range": true,
    })
}

fn timeseries(title: &str, description: &str, unit: &str, targets: Vec<Value>) -> Value {
    json!({
        "type": "timeseries",
        "title": title,
        "description": description,
        "targets": targets,
        "fieldConfig": {
            "defaults": { "unit": unit, "custom": { "lineWidth": 1, "fillOpacity": 0 } },
            "overrides": [],
        },
        "options": {
            "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true },
            "tooltip": { "mode": "multi", "sort": "desc" },
        },
    })
}

/// A latency panel: exemplars on, linking to the trace when a template is configured.
fn latency(ctx: &Context<'_>, title: &str, description: &str, targets: Vec<Value>) -> Value {
    let targets = targets
        .into_iter()
        .map(|mut t| {
            t["exemplar"] = json!(true);
            t
        })
        .collect();
    let mut panel = timeseries(title, description, "s", targets);
    if let Some(template) = ctx.trace_url_template {
        panel["fieldConfig"]["overrides"] = json!([{
            "matcher": { "id": "byName", "options": "trace_id" },
            "properties": [{
                "id": "links",
                "value": [{ "title": "Open trace", "url": template, "targetBlank": true }],
            }],
        }]);
    }
    panel
}

fn rate(metric: &str, selector: &str) -> String {
    format!("rate({metric}{selector}[$__rate_interval])")
}

/// `{a,b}` plus `extra` matchers.
fn with(selector: &str, extra: &str) -> String {
    let inner = selector.trim_start_matches('{').trim_end_matches('}');
    if inner.is_empty() {
        format!("{{{extra}}}")
    } else {
        format!("{{{inner},{extra}}}")
    }
}

pub(crate) fn render(ctx: &Context<'_>) -> String {
    let mut layout = Layout {
        panels: Vec::new(),
        x: 0,
        y: 0,
        row_height: 0,
        next_id: 0,
    };
    let sel = ctx.service_selector();

    if !ctx.slis.is_empty() {
        layout.row("Objectives");
        for sli in ctx.slis {
            objective_panels(&mut layout, ctx, sli);
        }
    }

    if ctx.has("http") {
        layout.row("HTTP server: rate, errors, duration per route");
        let count = format!("{HTTP_DURATION}_count");
        let errors = with(&sel, "error_type!=\"\"");
        layout.add(
            8,
            8,
            timeseries(
                "Requests per second by route",
                "Every request the ServerLayer served, by `http.route`.",
                "reqps",
                vec![target(
                    'A',
                    &format!("sum by (http_route) ({})", rate(&count, &sel)),
                    "{{http_route}}",
                )],
            ),
        );
        layout.add(
            8,
            8,
            timeseries(
                "Errors per second by route",
                "Requests with `error.type` set: 5xx answers and errors of the service.",
                "reqps",
                vec![target(
                    'A',
                    &format!(
                        "sum by (http_route, error_type) ({})",
                        rate(&count, &errors)
                    ),
                    "{{http_route}} {{error_type}}",
                )],
            ),
        );
        layout.add(
            8,
            8,
            timeseries(
                "Error ratio by route",
                "Share of requests that failed.",
                "percentunit",
                vec![target(
                    'A',
                    &format!(
                        "sum by (http_route) ({})\n/\nsum by (http_route) ({})",
                        rate(&count, &errors),
                        rate(&count, &sel)
                    ),
                    "{{http_route}}",
                )],
            ),
        );
        let bucket = format!("{HTTP_DURATION}_bucket");
        let quantiles: Vec<Value> = [
            ('A', "0.5", "p50"),
            ('B', "0.9", "p90"),
            ('C', "0.99", "p99"),
        ]
        .iter()
        .map(|(id, q, name)| {
            target(
                *id,
                &format!(
                    "histogram_quantile({q}, sum by (le, http_route) ({}))",
                    rate(&bucket, &sel)
                ),
                &format!("{name} {{{{http_route}}}}"),
            )
        })
        .collect();
        layout.add(16, 8, latency(
            ctx,
            "Request duration p50 / p90 / p99 by route",
            "From the http.server.request.duration histogram, measured until the last body byte. Exemplars link to traces.",
            quantiles,
        ));
        layout.add(
            8,
            8,
            timeseries(
                "Requests in flight",
                "http.server.active_requests.",
                "short",
                vec![target(
                    'A',
                    &format!("sum by (http_request_method) (http_server_active_requests{sel})"),
                    "{{http_request_method}}",
                )],
            ),
        );
    }

    if ctx.has("function") {
        layout.row("Functions (#[traced]): rate, errors, duration");
        let errors = with(&sel, "result=\"error\"");
        layout.add(
            8,
            8,
            timeseries(
                "Calls per second by function",
                "Calls of #[traced] functions that returned.",
                "ops",
                vec![target(
                    'A',
                    &format!("sum by (function) ({})", rate(FUNCTION_CALLS, &sel)),
                    "{{function}}",
                )],
            ),
        );
        layout.add(
            8,
            8,
            timeseries(
                "Errors per second by function",
                "Calls that returned `Err` or panicked.",
                "ops",
                vec![target(
                    'A',
                    &format!("sum by (function) ({})", rate(FUNCTION_CALLS, &errors)),
                    "{{function}}",
                )],
            ),
        );
        layout.add(
            8,
            8,
            timeseries(
                "Calls in flight by function",
                "function.calls.concurrent.",
                "short",
                vec![target(
                    'A',
                    &format!("sum by (function) (function_calls_concurrent{sel})"),
                    "{{function}}",
                )],
            ),
        );
        let bucket = format!("{FUNCTION_DURATION}_bucket");
        layout.add(
            24,
            8,
            latency(
                ctx,
                "Call duration p50 / p99 by function",
                "From the function.calls.duration histogram. Exemplars link to traces.",
                vec![
                    target(
                        'A',
                        &format!(
                            "histogram_quantile(0.5, sum by (le, function) ({}))",
                            rate(&bucket, &sel)
                        ),
                        "p50 {{function}}",
                    ),
                    target(
                        'B',
                        &format!(
                            "histogram_quantile(0.99, sum by (le, function) ({}))",
                            rate(&bucket, &sel)
                        ),
                        "p99 {{function}}",
                    ),
                ],
            ),
        );
    }

    if ctx.has("messaging") {
        layout.row("Messaging: throughput, failures, process duration");
        let count = format!("{PROCESS_DURATION}_count");
        let errors = with(&sel, "error_type!=\"\"");
        layout.add(
            8,
            8,
            timeseries(
                "Messages consumed per second",
                "messaging.client.consumed.messages by queue or topic.",
                "ops",
                vec![target(
                    'A',
                    &format!(
                        "sum by (messaging_system, messaging_destination_name) ({})",
                        rate("messaging_client_consumed_messages_total", &sel)
                    ),
                    "{{messaging_system}} {{messaging_destination_name}}",
                )],
            ),
        );
        layout.add(
            8,
            8,
            timeseries(
                "Messages processed and failed per second",
                "messaging.process.duration count; failures have `error.type`.",
                "ops",
                vec![
                    target(
                        'A',
                        &format!(
                            "sum by (messaging_destination_name) ({})",
                            rate(&count, &sel)
                        ),
                        "processed {{messaging_destination_name}}",
                    ),
                    target(
                        'B',
                        &format!(
                            "sum by (messaging_destination_name) ({})",
                            rate(&count, &errors)
                        ),
                        "failed {{messaging_destination_name}}",
                    ),
                ],
            ),
        );
        layout.add(
            8,
            8,
            timeseries(
                "Messages sent per second",
                "messaging.client.sent.messages by destination (publishes, retries included).",
                "ops",
                vec![target(
                    'A',
                    &format!(
                        "sum by (messaging_system, messaging_destination_name) ({})",
                        rate("messaging_client_sent_messages_total", &sel)
                    ),
                    "{{messaging_system}} {{messaging_destination_name}}",
                )],
            ),
        );
        let bucket = format!("{PROCESS_DURATION}_bucket");
        layout.add(24, 8, latency(
            ctx,
            "Process duration p50 / p99 by queue or topic",
            "From the messaging.process.duration histogram (handler plus settlement). Exemplars link to traces.",
            vec![
                target('A', &format!("histogram_quantile(0.5, sum by (le, messaging_destination_name) ({}))", rate(&bucket, &sel)), "p50 {{messaging_destination_name}}"),
                target('B', &format!("histogram_quantile(0.99, sum by (le, messaging_destination_name) ({}))", rate(&bucket, &sel)), "p99 {{messaging_destination_name}}"),
            ],
        ));
    }

    let dashboard = json!({
        "title": ctx.dashboard_title(),
        "uid": uid(ctx.service),
        "description": format!("Generated by tracewire::ops from the objectives of `{}`; regenerate instead of editing.", ctx.service),
        "tags": ["tracewire", "slo", ctx.service],
        "timezone": "utc",
        "editable": true,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": { "from": "now-6h", "to": "now" },
        "annotations": { "list": [] },
        "links": [],
        "templating": { "list": [{
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
        }] },
        "panels": layout.panels,
    });
    json_pretty(&dashboard)
}

/// A stable dashboard uid (Grafana allows 40 characters).
fn uid(service: &str) -> String {
    let mut uid = format!("tracewire-{service}");
    uid.truncate(40);
    uid
}

/// The panel titles of an indicator (also named by the runbook).
pub(crate) fn budget_title(sli: &Sli) -> String {
    format!(
        "{} {}: error budget left ({})",
        sli.objective.name(),
        sli.kind.label(),
        human_duration(sli.objective.window())
    )
}

pub(crate) fn burn_title(sli: &Sli) -> String {
    format!("{} {}: burn rate", sli.objective.name(), sli.kind.label())
}

fn objective_panels(layout: &mut Layout, ctx: &Context<'_>, sli: &Sli) {
    let budget = num(f64::from(sli.target.budget_ppm()) / 1e6);
    let matchers = sli.recorded_matchers(true);
    let legend = format!("{{{{{}}}}}", sli.group);
    let window = sli.objective.window();
    let mut stat = json!({
        "type": "stat",
        "title": budget_title(sli),
        "description": format!(
            "Share of the error budget ({}% of {}) not yet spent over the last {}. Objective: {}.",
            num(f64::from(sli.target.budget_ppm()) / 1e4),
            sli.event_noun(),
            human_duration(window),
            super::rules::promise(sli)
        ),
        "targets": [target('A', &format!("1 - {}{{{matchers}}} / {budget}", recorded(BAD_RATIO, window)), &legend)],
        "fieldConfig": {
            "defaults": {
                "unit": "percentunit",
                "decimals": 1,
                "thresholds": { "mode": "absolute", "steps": [
                    { "color": "red", "value": null },
                    { "color": "orange", "value": 0 },
                    { "color": "green", "value": 0.25 },
                ] },
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false },
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "value_and_name",
        },
    });
    stat["options"]["orientation"] = json!("auto");
    layout.add(6, 6, stat);

    let windows = [
        ('A', std::time::Duration::from_secs(300)),
        ('B', std::time::Duration::from_secs(3600)),
        ('C', std::time::Duration::from_secs(6 * 3600)),
        ('D', std::time::Duration::from_secs(3 * 86_400)),
    ];
    let targets = windows
        .iter()
        .map(|(id, w)| {
            target(
                *id,
                &format!("{}{{{matchers}}} / {budget}", recorded(BAD_RATIO, *w)),
                &format!("{} {legend}", super::text::prom_duration(*w)),
            )
        })
        .collect();
    let mut burn = timeseries(
        &burn_title(sli),
        &format!(
            "How fast the error budget is spent: 1 spends it exactly over {}. The page alert fires above {} (1h and 5m) or {} (6h and 30m), the ticket above {} (3d and 6h). Alert: {}.",
            human_duration(window),
            num(BURN_WINDOWS[0].factor(window)),
            num(BURN_WINDOWS[1].factor(window)),
            num(BURN_WINDOWS[2].factor(window)),
            ctx.alert_name(sli)
        ),
        "short",
        targets,
    );
    burn["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] = json!({ "mode": "line" });
    burn["fieldConfig"]["defaults"]["thresholds"] = json!({ "mode": "absolute", "steps": [
        { "color": "green", "value": null },
        { "color": "orange", "value": BURN_WINDOWS[1].factor(window) },
        { "color": "red", "value": BURN_WINDOWS[0].factor(window) },
    ] });
    layout.add(18, 6, burn);
}
