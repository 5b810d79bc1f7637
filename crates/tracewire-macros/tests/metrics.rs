//! Function metrics: `function.calls`, `function.calls.duration`, `function.calls.concurrent`,
//! with the autometrics attribute names; `metrics = false` turns them off.

use tracewire_macros::traced;
use tracewire_test::{Capture, PointValue};

#[traced]
async fn checkout(fail: bool) -> Result<(), String> {
    if fail { Err("declined".into()) } else { Ok(()) }
}

#[traced(metrics = false)]
fn quiet() {}

#[traced]
async fn observe_in_flight(capture: &Capture) -> f64 {
    capture
        .metric("function.calls.concurrent")
        .iter()
        .find(|p| p.attr("function") == Some("observe_in_flight"))
        .map(|p| p.count_or_value())
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn calls_duration_and_in_flight_with_their_attributes() {
    let capture = Capture::install();
    for fail in [false, false, true] {
        let _ = checkout(fail).await;
    }
    quiet();
    assert_eq!(observe_in_flight(&capture).await, 1.0);

    let calls = capture.metric("function.calls");
    let mine: Vec<_> = calls
        .iter()
        .filter(|p| p.attr("function") == Some("checkout"))
        .collect();
    assert_eq!(mine.len(), 2);
    for p in &mine {
        assert_eq!(p.attr("module"), Some("metrics"));
        assert_eq!(p.attributes.len(), 3, "{:?}", p.attributes);
        assert_eq!(p.unit, "{call}");
    }
    let by_result = |r: &str| {
        mine.iter()
            .find(|p| p.attr("result") == Some(r))
            .map(|p| p.count_or_value())
    };
    assert_eq!(by_result("ok"), Some(2.0));
    assert_eq!(by_result("error"), Some(1.0));

    let duration = capture.metric("function.calls.duration");
    let d = duration
        .iter()
        .find(|p| p.attr("function") == Some("checkout"))
        .expect("duration point");
    assert_eq!(d.unit, "s");
    assert_eq!(d.attr("module"), Some("metrics"));
    match &d.value {
        PointValue::Histogram { count, bounds, .. } => {
            assert_eq!(*count, 3);
            assert_eq!(
                bounds,
                &tracewire_core::metrics::DURATION_BOUNDARIES_SECONDS.to_vec()
            );
        }
        other => panic!("expected a histogram, got {other:?}"),
    }

    let concurrent = capture.metric("function.calls.concurrent");
    let c = concurrent
        .iter()
        .find(|p| p.attr("function") == Some("checkout"))
        .expect("in-flight point");
    assert_eq!(c.count_or_value(), 0.0);
    assert_eq!(c.attributes.len(), 2);

    // `metrics = false`: the span exists, the metrics do not.
    capture.span("quiet");
    for name in [
        "function.calls",
        "function.calls.duration",
        "function.calls.concurrent",
    ] {
        assert!(
            capture
                .metric(name)
                .iter()
                .all(|p| p.attr("function") != Some("quiet")),
            "{name} has a point for `quiet`"
        );
    }
}
