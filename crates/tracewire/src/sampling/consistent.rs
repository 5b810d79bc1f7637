//! OpenTelemetry's consistent probability sampling: a 56-bit rejection threshold compared
//! with 56 bits of randomness taken from the trace id (or an explicit `rv`).
//!
//! A span is kept when its randomness `R` is at least the threshold `T`, where
//! `T = (1 - ratio) × 2^56`. Every service that computes `T` the same way from the same
//! trace id reaches the same decision, so a trace kept at ratio `r` is kept by every service
//! sampling at `r` or more. The threshold of a kept span travels in `tracestate` as
//! `ot=th:<hex>` (trailing zeros dropped).

use opentelemetry::trace::{TraceId, TraceState};

/// `2^56`: the threshold and randomness space.
const MAX: u64 = 1 << 56;
const MASK: u64 = MAX - 1;

/// The rejection threshold for `ratio`: `Some(0)` keeps everything, `None` keeps nothing.
pub(crate) fn threshold(ratio: f64) -> Option<u64> {
    if ratio.is_nan() || ratio <= 0.0 {
        return None;
    }
    if ratio >= 1.0 {
        return Some(0);
    }
    // 2^56 − round(ratio × 2^56): the product is exact in f64 for the small end, where
    // (1 − ratio) × 2^56 would lose the low bits.
    let kept = (ratio * MAX as f64).round() as u64;
    if kept == 0 {
        None
    } else {
        Some(MAX - kept.min(MAX))
    }
}

/// The `th` value of `threshold`: 14 hex digits without trailing zeros (`0` for "keep all").
pub(crate) fn encode_threshold(threshold: u64) -> String {
    let full = format!("{:014x}", threshold & MASK);
    let trimmed = full.trim_end_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The 56 bits of randomness of a trace: `rv` from the `ot` entry when valid, else the low
/// 56 bits of the trace id.
pub(crate) fn randomness(trace_id: TraceId, trace_state: &TraceState) -> u64 {
    if let Some(rv) = trace_state.get("ot").and_then(|ot| sub_value(ot, "rv"))
        && rv.len() == 14
        && let Ok(value) = u64::from_str_radix(rv, 16)
    {
        return value & MASK;
    }
    (u128::from_be_bytes(trace_id.to_bytes()) as u64) & MASK
}

/// Whether a trace with this randomness is kept under `threshold`.
pub(crate) fn keeps(threshold: Option<u64>, randomness: u64) -> bool {
    threshold.is_some_and(|t| randomness >= t)
}

fn sub_value<'a>(ot: &'a str, key: &str) -> Option<&'a str> {
    ot.split(';').find_map(|entry| {
        let (k, v) = entry.split_once(':')?;
        (k == key).then_some(v)
    })
}

/// The `th` sub-key with its value, `th:…`: written on every sampled root, so without the
/// formatting machinery.
fn th_entry(th: &str) -> String {
    let mut entry = String::with_capacity(3 + th.len());
    entry.push_str("th:");
    entry.push_str(th);
    entry
}

/// `trace_state` with the `th` sub-key of its `ot` entry set to `th` (or removed when
/// `None`); other `ot` sub-keys (such as `rv`) and other vendors' entries are kept. A state
/// that cannot be rewritten is returned unchanged.
pub(crate) fn with_threshold(trace_state: &TraceState, th: Option<&str>) -> TraceState {
    let Some(existing) = trace_state.get("ot") else {
        // The usual case, a root or a parent without an `ot` entry: one entry to add.
        return match th {
            None => trace_state.clone(),
            Some(th) => trace_state
                .insert("ot", th_entry(th))
                .unwrap_or_else(|_| trace_state.clone()),
        };
    };
    let mut parts: Vec<String> = existing
        .split(';')
        .filter(|e| !e.is_empty() && !e.starts_with("th:"))
        .map(str::to_owned)
        .collect();
    if let Some(th) = th {
        parts.insert(0, th_entry(th));
    }
    let result = if parts.is_empty() {
        trace_state.delete("ot")
    } else {
        trace_state.insert("ot", parts.join(";"))
    };
    result.unwrap_or_else(|_| trace_state.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_reject_the_complement_of_the_ratio() {
        assert_eq!(threshold(1.0).map(encode_threshold).as_deref(), Some("0"));
        assert_eq!(threshold(0.5).map(encode_threshold).as_deref(), Some("8"));
        assert_eq!(threshold(0.25).map(encode_threshold).as_deref(), Some("c"));
        assert_eq!(threshold(0.1), Some(MAX - 7_205_759_403_792_794));
        assert_eq!(threshold(1e-20), None);
        assert_eq!(threshold(0.0), None);
        assert_eq!(threshold(f64::NAN), None);
    }

    #[test]
    fn randomness_comes_from_the_low_56_bits_or_rv() {
        let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(randomness(id, &TraceState::NONE), 0xce929d0e0e4736);
        let ts = TraceState::from_key_value([("ot", "th:8;rv:00000000000001")]).unwrap();
        assert_eq!(randomness(id, &ts), 1);
    }

    #[test]
    fn a_lower_ratio_keeps_a_subset_of_a_higher_one() {
        for i in 0u64..2000 {
            let id = TraceId::from((i as u128).wrapping_mul(0x9e3779b97f4a7c15_f39cc0605cedc835));
            let r = randomness(id, &TraceState::NONE);
            if keeps(threshold(0.25), r) {
                assert!(keeps(threshold(0.5), r));
            }
        }
    }

    #[test]
    fn the_threshold_is_written_into_ot_keeping_other_entries() {
        let ts =
            TraceState::from_key_value([("ot", "rv:00000000000001"), ("vendor", "x")]).unwrap();
        let out = with_threshold(&ts, Some("c"));
        assert_eq!(out.get("ot"), Some("th:c;rv:00000000000001"));
        assert_eq!(out.get("vendor"), Some("x"));
        let cleared = with_threshold(&out, None);
        assert_eq!(cleared.get("ot"), Some("rv:00000000000001"));
        let only = TraceState::from_key_value([("ot", "th:8")]).unwrap();
        assert_eq!(with_threshold(&only, None).get("ot"), None);

        // Without an `ot` entry: one is added in front, the others are kept in their order.
        let vendors = TraceState::from_key_value([("a", "1"), ("b", "2")]).unwrap();
        let out = with_threshold(&vendors, Some("8"));
        assert_eq!(out.header(), "ot=th:8,a=1,b=2");
        assert_eq!(with_threshold(&vendors, None).header(), "a=1,b=2");
        assert_eq!(
            with_threshold(&TraceState::NONE, Some("0")).header(),
            "ot=th:0"
        );
    }
}
