use std::borrow::Cow;
use std::sync::Arc;

use tracewire::__private::Event as _;
use tracewire_macros::Event;

struct Money(u64);

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[derive(Event)]
#[event(name = "payment.captured", version = 3)]
pub struct PaymentCaptured<'a> {
    id: u128,
    small: i8,
    size: usize,
    rate: f32,
    ok: bool,
    borrowed: &'a str,
    owned: String,
    cow: Cow<'static, str>,
    boxed: Box<str>,
    shared: Arc<str>,
    maybe: Option<u32>,
    maybe_text: Option<&'a str>,
    #[event(display)]
    amount: Money,
    #[event(display)]
    refund: Option<Money>,
    #[event(pii = "redact")]
    card: String,
    #[event(pii = "hash", display)]
    account: Money,
}

#[derive(Event)]
#[event(version = 1, name = "empty")]
struct Empty {}

fn main() {
    PaymentCaptured {
        id: 1,
        small: -1,
        size: 2,
        rate: 0.5,
        ok: true,
        borrowed: "b",
        owned: "o".into(),
        cow: Cow::Borrowed("c"),
        boxed: "x".into(),
        shared: Arc::from("s"),
        maybe: None,
        maybe_text: Some("t"),
        amount: Money(1050),
        refund: None,
        card: "4111".into(),
        account: Money(1),
    }
    .emit();
    Empty {}.emit();
}
