//! `#[traced]` on synchronous functions, methods, generic functions and `impl Trait` returns.

use std::fmt::Display;

use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use tracewire_macros::traced;
use tracewire_test::{Capture, SpanDataExt};

#[traced]
fn add(a: u32, b: u32) -> u32 {
    nested();
    a + b
}

#[traced]
fn nested() {
    // The caller's span is current here.
    let cx = opentelemetry::Context::current();
    assert!(cx.span().span_context().is_valid());
}

struct Counter {
    n: u64,
    label: String,
}

impl Counter {
    #[traced]
    fn get(&self) -> &str {
        &self.label
    }

    #[traced]
    fn bump(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    #[traced]
    fn into_label(self) -> String {
        self.label
    }

    #[traced]
    async fn bump_async(&mut self) -> u64 {
        tokio::task::yield_now().await;
        self.n += 1;
        self.n
    }
}

#[traced]
fn largest<T: PartialOrd + Copy>(items: &[T]) -> Option<T> {
    let mut it = items.iter().copied();
    let first = it.next()?;
    Some(it.fold(first, |a, b| if b > a { b } else { a }))
}

#[traced]
fn shown(n: u32) -> impl Display {
    format!("#{n}")
}

#[traced]
async fn shown_later(n: u32) -> impl Display {
    n * 2
}

#[traced]
fn early_return(flag: bool) -> &'static str {
    if flag {
        return "early";
    }
    "late"
}

#[test]
fn sync_fn_gets_a_span_and_its_body_runs_inside_it() {
    let capture = Capture::install();
    let tracer = capture.tracer_provider().tracer("test");
    let root = tracer.start("root");
    let cx = opentelemetry::Context::current_with_span(root);
    {
        let _g = cx.clone().attach();
        assert_eq!(add(2, 3), 5);
    }
    cx.span().end();
    let root = capture.span("root");
    let add = capture.span("add");
    let nested = capture.span("nested");
    assert_eq!(add.parent_id(), root.span_id());
    assert_eq!(nested.parent_id(), add.span_id());
    assert_eq!(nested.trace_id(), root.trace_id());
    assert_eq!(
        add.attr_str("code.function.name").as_deref(),
        Some("sync_fn::add")
    );
    // The caller's context is restored afterwards.
    assert!(
        !opentelemetry::Context::current()
            .span()
            .span_context()
            .is_valid()
    );
}

#[tokio::test]
async fn methods_with_every_receiver() {
    let capture = Capture::install();
    let mut c = Counter {
        n: 0,
        label: "c".into(),
    };
    assert_eq!(c.get(), "c");
    assert_eq!(c.bump(), 1);
    assert_eq!(c.bump_async().await, 2);
    assert_eq!(c.into_label(), "c");
    for name in ["get", "bump", "bump_async", "into_label"] {
        let span = capture.span(name);
        assert_eq!(
            span.attr_str("code.function.name"),
            Some(format!("sync_fn::{name}"))
        );
    }
}

#[tokio::test]
async fn generic_and_impl_trait_functions() {
    let capture = Capture::install();
    assert_eq!(largest(&[3, 9, 2]), Some(9));
    assert_eq!(largest::<f64>(&[]), None);
    assert_eq!(shown(4).to_string(), "#4");
    assert_eq!(shown_later(4).await.to_string(), "8");
    assert_eq!(early_return(true), "early");
    assert_eq!(early_return(false), "late");
    assert_eq!(capture.spans_named("largest").len(), 2);
    capture.span("shown");
    capture.span("shown_later");
    assert_eq!(capture.spans_named("early_return").len(), 2);
    // `?` on `None` is not an error: the function does not return a `Result`.
    assert!(capture.spans_named("largest").iter().all(|s| !s.is_error()));
}
