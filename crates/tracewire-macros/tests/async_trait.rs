//! `#[traced]` on methods of `#[async_trait]` impls (the attribute on the method, expanded
//! after `#[async_trait]` rewrote it into a boxed future).

use async_trait::async_trait;
use opentelemetry::trace::Status;
use tracewire_macros::traced;
use tracewire_test::{Capture, SpanDataExt};

#[async_trait]
trait Repository {
    async fn find(&self, id: u64) -> Result<String, std::io::Error>;
    async fn count(&self) -> usize;
}

struct Memory {
    rows: Vec<String>,
}

#[async_trait]
impl Repository for Memory {
    #[traced(fields(id = id))]
    async fn find(&self, id: u64) -> Result<String, std::io::Error> {
        tokio::task::yield_now().await;
        self.rows
            .get(id as usize)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such row"))
    }

    #[traced]
    async fn count(&self) -> usize {
        self.find(0).await.map(|_| self.rows.len()).unwrap_or(0)
    }
}

#[tokio::test]
async fn async_trait_methods_get_spans_and_errors() {
    let capture = Capture::install();
    let repo: Box<dyn Repository + Send + Sync> = Box::new(Memory {
        rows: vec!["a".into()],
    });
    assert_eq!(repo.count().await, 1);
    assert!(repo.find(5).await.is_err());

    let count = capture.span("count");
    let finds = capture.spans_named("find");
    assert_eq!(finds.len(), 2);
    let nested = finds.iter().find(|s| !s.is_error()).unwrap();
    assert_eq!(nested.parent_id(), count.span_id());
    assert_eq!(nested.attr("id"), Some(&opentelemetry::Value::I64(0)));
    let failed = finds.iter().find(|s| s.is_error()).unwrap();
    assert_eq!(failed.status, Status::error("no such row"));
    assert_eq!(
        failed.attr_str("error.type").as_deref(),
        Some("std::io::error::Error")
    );
    assert_eq!(failed.parent_id(), "0000000000000000");
}
