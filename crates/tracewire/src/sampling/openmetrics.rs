//! The OpenMetrics text format, with exemplars on histogram buckets, for scrapers that ask
//! for it (`Accept: application/openmetrics-text`). Series names and labels are exactly those
//! of the classic Prometheus text format.

use std::fmt::Write;

use prometheus::proto::{Metric, MetricFamily, MetricType};
use std::time::UNIX_EPOCH;

use super::exemplars;

/// The content type of [`encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics before (or instead of) the classic format.
pub(crate) fn wanted(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let mut params = part.split(';');
        let media = params.next().unwrap_or_default().trim();
        media.eq_ignore_ascii_case("application/openmetrics-text")
            && !params.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            })
    })
}

fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

fn labels(metric: &Metric, extra: Option<(&str, &str)>, out: &mut String) {
    let pairs = metric.get_label();
    if pairs.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for lp in pairs {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(lp.name());
        out.push_str("=\"");
        escape(lp.value(), out);
        out.push('"');
    }
    if let Some((name, value)) = extra {
        if !first {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape(value, out);
        out.push('"');
    }
    out.push('}');
}

fn sample(
    name: &str,
    suffix: &str,
    metric: &Metric,
    extra: Option<(&str, &str)>,
    value: f64,
    out: &mut String,
) {
    out.push_str(name);
    out.push_str(suffix);
    labels(metric, extra, out);
    out.push(' ');
    out.push_str(&number(value));
}

/// Renders `families` in the OpenMetrics text format, ending with `# EOF`.
pub(crate) fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for mf in families {
        let name = mf.name();
        let (family, kind) = match mf.get_field_type() {
            MetricType::COUNTER => match name.strip_suffix("_total") {
                Some(family) => (family, "counter"),
                // A counter without the suffix keeps its series name as an `unknown`.
                None => (name, "unknown"),
            },
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        let _ = writeln!(out, "# TYPE {family} {kind}");
        if !mf.help().is_empty() {
            out.push_str("# HELP ");
            out.push_str(family);
            out.push(' ');
            escape(mf.help(), &mut out);
            out.push('\n');
        }
        for m in mf.get_metric() {
            match mf.get_field_type() {
                MetricType::COUNTER => {
                    sample(name, "", m, None, m.get_counter().get_value(), &mut out);
                    out.push('\n');
                }
                MetricType::GAUGE => {
                    sample(name, "", m, None, m.get_gauge().get_value(), &mut out);
                    out.push('\n');
                }
                // The classic encoder has no untyped samples either; the registry makes none.
                MetricType::UNTYPED => {}
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        let quantile = q.quantile().to_string();
                        sample(
                            name,
                            "",
                            m,
                            Some(("quantile", &quantile)),
                            q.value(),
                            &mut out,
                        );
                        out.push('\n');
                    }
                    sample(name, "_sum", m, None, s.sample_sum(), &mut out);
                    out.push('\n');
                    sample(name, "_count", m, None, s.sample_count() as f64, &mut out);
                    out.push('\n');
                }
                MetricType::HISTOGRAM => histogram(name, m, &mut out),
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn histogram(name: &str, m: &Metric, out: &mut String) {
    let h = m.get_histogram();
    let point = m
        .get_label()
        .iter()
        .filter(|lp| !lp.name().starts_with("otel_scope_"))
        .map(|lp| (lp.name(), lp.value().to_owned()));
    let exemplars = exemplars::for_point(name, point, true);
    let mut buckets: Vec<(String, u64)> = h
        .get_bucket()
        .iter()
        .map(|b| {
            let bound = b.upper_bound();
            let le = if bound.is_infinite() && bound > 0.0 {
                "+Inf".to_owned()
            } else {
                bound.to_string()
            };
            (le, b.cumulative_count())
        })
        .collect();
    if !buckets.iter().any(|(le, _)| le == "+Inf") {
        buckets.push(("+Inf".to_owned(), h.get_sample_count()));
    }
    for (i, (le, count)) in buckets.iter().enumerate() {
        sample(name, "_bucket", m, Some(("le", le)), *count as f64, out);
        // Exemplars follow the tracewire duration buckets, which these histograms use.
        if buckets.len() == exemplars.len()
            && let Some(Some(e)) = exemplars.get(i)
        {
            let seconds = e
                .time
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            let _ = write!(
                out,
                " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {:.3}",
                e.trace_id_hex(),
                e.span_id_hex(),
                number(e.value),
                seconds
            );
        }
        out.push('\n');
    }
    sample(name, "_sum", m, None, h.get_sample_sum(), out);
    out.push('\n');
    sample(name, "_count", m, None, h.get_sample_count() as f64, out);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::wanted;

    #[test]
    fn accept_negotiation() {
        assert!(wanted(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wanted("text/plain;version=0.0.4"));
        assert!(!wanted("application/openmetrics-text;q=0"));
        assert!(!wanted(""));
    }
}
