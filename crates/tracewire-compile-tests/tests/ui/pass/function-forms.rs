use std::fmt::Display;

use tracewire_macros::traced;

#[traced]
async fn async_fn(a: u32) -> u32 {
    a
}

#[traced]
fn sync_fn() {}

#[inline]
#[traced(name = "renamed", kind = client, metrics = false)]
#[must_use]
fn with_other_attributes(x: &str) -> &str {
    x
}

#[traced(skip(password), fields(user = user.len()))]
pub async fn login(user: &str, password: &str) -> Result<(), std::io::Error> {
    let _ = password;
    Ok(())
}

#[traced(skip_all)]
pub(crate) fn generic<T: Clone + Send, const N: usize>(items: [T; N]) -> Vec<T> {
    items.to_vec()
}

#[traced]
fn returns_impl(n: u8) -> impl Display + use<> {
    n
}

#[traced]
async fn async_returns_impl() -> impl Display {
    "x"
}

#[traced]
fn pattern_arguments((a, b): (u8, u8), Wrapper(c): Wrapper) -> u8 {
    a + b + c
}

struct Wrapper(u8);

struct Service {
    calls: u64,
}

impl Service {
    #[traced]
    fn by_ref(&self) -> u64 {
        self.calls
    }

    #[traced]
    fn by_mut(&mut self) {
        self.calls += 1;
    }

    #[traced]
    async fn by_value(self) -> u64 {
        self.calls
    }

    #[traced]
    fn with_lifetime<'a>(&'a self, s: &'a str) -> &'a str {
        let _ = self;
        s
    }
}

#[async_trait::async_trait]
trait Store {
    async fn get(&self, key: &str) -> Option<String>;
}

#[async_trait::async_trait]
impl Store for Service {
    #[traced(fields(key = key))]
    async fn get(&self, key: &str) -> Option<String> {
        Some(format!("{key}{}", self.calls))
    }
}

mod reexported {
    pub use tracewire as observability;
}

#[traced(crate = reexported::observability)]
fn through_reexport() {}

#[traced]
#[tokio::main(flavor = "current_thread")]
async fn traced_outside_tokio_main() -> u8 {
    async_fn(1).await as u8
}

#[tokio::main(flavor = "current_thread")]
#[traced]
async fn traced_inside_tokio_main() -> Result<(), std::io::Error> {
    login("a", "b").await
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    assert_send(async_fn(1));
    assert_send(login("a", "b"));
    let _ = with_other_attributes("x");
    sync_fn();
    let _ = generic([1, 2]);
    let _ = returns_impl(1);
    let _ = async_returns_impl();
    let _ = pattern_arguments((1, 2), Wrapper(3));
    let mut s = Service { calls: 0 };
    s.by_mut();
    let _ = s.by_ref();
    let _ = s.with_lifetime("x");
    let _ = s.get("k");
    let _ = s.by_value();
    through_reexport();
    let _ = traced_outside_tokio_main();
    let _ = traced_inside_tokio_main();
}
