//! Objectives declared with `tracewire::objective!` and `#[traced(objective(...))]` are
//! registered at link time with exactly the targets written.

use std::time::Duration;

use tracewire::ops::{Objective, Percent, Subject, objectives};

const QUEUE: &str = "orders.created";

tracewire::objective!(
    name = "checkout",
    http_route = "/checkout",
    availability = 99.95%,
    latency = 99% < 2.5s,
    window = 28d,
    description = "Customers can pay."
);
tracewire::objective!(name = "api", all_http_routes, availability = 99.5%);
tracewire::objective!(name = "orders", amqp_queue = QUEUE, availability = 99%);
tracewire::objective!(name = "payments", kafka_topic = "payments", latency = 95% <= 1000ms);
tracewire::objective!(
    name = "elsewhere",
    function = "refund",
    module = "billing::refunds",
    availability = 99.9999%
);

#[derive(Debug)]
struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("declined")
    }
}

#[tracewire::traced(objective(availability = 99%, latency = 99% < 100ms))]
async fn charge(ok: bool) -> Result<(), Declined> {
    if ok { Ok(()) } else { Err(Declined) }
}

struct Cart;

impl Cart {
    #[tracewire::traced(objective(name = "cart-total", availability = 90%, window = 7d))]
    fn total(&self) -> u64 {
        3
    }
}

/// The objectives of the `bounds` module below.
fn is_bound_probe(name: &str) -> bool {
    name.starts_with('b') && name[1..].starts_with(|c: char| c.is_ascii_digit())
}

fn find(name: &str) -> Objective {
    objectives()
        .into_iter()
        .find(|o| o.name() == name)
        .unwrap_or_else(|| panic!("objective {name} is not registered"))
}

#[test]
fn every_declaration_is_listed_once_in_name_order() {
    // The functions exist in the binary (their registrations are inside them).
    let _ = (charge(true), Cart.total());
    let names: Vec<&str> = objectives()
        .iter()
        .map(|o| o.name())
        .filter(|name| !is_bound_probe(name))
        .collect();
    assert_eq!(
        names,
        [
            "api",
            "cart-total",
            "charge",
            "checkout",
            "elsewhere",
            "orders",
            "payments"
        ]
    );
}

#[test]
fn targets_are_exact() {
    let checkout = find("checkout");
    assert_eq!(checkout.subject(), Subject::HttpRoute("/checkout"));
    assert_eq!(checkout.availability(), Some(Percent::from_ppm(999_500)));
    let latency = checkout.latency().unwrap();
    assert_eq!(latency.percent, Percent::from_ppm(990_000));
    assert_eq!(latency.threshold, Duration::from_millis(2500));
    assert_eq!(checkout.window(), Duration::from_secs(28 * 86_400));
    assert_eq!(checkout.description(), "Customers can pay.");
    let place = checkout.location().unwrap();
    assert!(
        place.starts_with("crates/tracewire-macros/tests/objective.rs:"),
        "{place}"
    );

    assert_eq!(find("api").subject(), Subject::AllHttpRoutes);
    assert_eq!(find("api").window(), Duration::from_secs(30 * 86_400));
    assert_eq!(
        find("orders").subject(),
        Subject::AmqpQueue("orders.created")
    );
    assert_eq!(find("payments").subject(), Subject::KafkaTopic("payments"));
    assert_eq!(
        find("payments").latency().unwrap().threshold,
        Duration::from_secs(1)
    );
    assert_eq!(find("payments").availability(), None);
    assert_eq!(
        find("elsewhere").subject(),
        Subject::Function {
            name: "refund",
            module: Some("billing::refunds")
        }
    );
    assert_eq!(
        find("elsewhere").availability().unwrap().to_string(),
        "99.9999%"
    );
}

#[test]
fn a_traced_objective_measures_its_function() {
    let charge = find("charge");
    assert_eq!(
        charge.subject(),
        Subject::Function {
            name: "charge",
            module: Some("objective")
        }
    );
    assert_eq!(charge.availability(), Some(Percent::from_ppm(990_000)));
    assert_eq!(
        charge.latency().unwrap().threshold,
        Duration::from_millis(100)
    );
    let total = find("cart-total");
    assert_eq!(
        total.subject(),
        Subject::Function {
            name: "total",
            module: Some("objective")
        }
    );
    assert_eq!(total.window(), Duration::from_secs(7 * 86_400));
}

#[test]
fn the_registered_objectives_generate() {
    let files = tracewire::ops::Generator::new("shop").files().unwrap();
    let rules = files.get("shop.rules.yml").unwrap();
    assert!(rules.contains("function_calls_total{job=\"shop\",function=\"charge\",module=\"objective\",result=\"error\"}"));
    assert!(rules.contains("- alert: ShopCartTotalAvailabilityBudgetBurn"));
}

/// Every bucket bound the macro accepts is one of the histograms' bounds, and all of them are
/// accepted.
mod bounds {
    tracewire::objective!(name = "b5ms", http_route = "/", latency = 99% < 5ms);
    tracewire::objective!(name = "b10ms", http_route = "/", latency = 99% < 10ms);
    tracewire::objective!(name = "b25ms", http_route = "/", latency = 99% < 25ms);
    tracewire::objective!(name = "b50ms", http_route = "/", latency = 99% < 50ms);
    tracewire::objective!(name = "b75ms", http_route = "/", latency = 99% < 75ms);
    tracewire::objective!(name = "b100ms", http_route = "/", latency = 99% < 0.1s);
    tracewire::objective!(name = "b250ms", http_route = "/", latency = 99% < 250ms);
    tracewire::objective!(name = "b500ms", http_route = "/", latency = 99% < 500ms);
    tracewire::objective!(name = "b750ms", http_route = "/", latency = 99% < 750ms);
    tracewire::objective!(name = "b1s", http_route = "/", latency = 99% < 1s);
    tracewire::objective!(name = "b2500ms", http_route = "/", latency = 99% < 2.5s);
    tracewire::objective!(name = "b5s", http_route = "/", latency = 99% < 5s);
    tracewire::objective!(name = "b7500ms", http_route = "/", latency = 99% < 7500ms);
    tracewire::objective!(name = "b10s", http_route = "/", latency = 99% < 10s);
}

#[test]
fn every_bucket_bound_is_accepted() {
    let mut thresholds: Vec<f64> = tracewire::ops::objectives()
        .iter()
        .filter(|o| is_bound_probe(o.name()))
        .map(|o| o.latency().unwrap().threshold.as_secs_f64())
        .collect();
    thresholds.sort_by(f64::total_cmp);
    assert_eq!(
        thresholds,
        tracewire_core::metrics::DURATION_BOUNDARIES_SECONDS.to_vec()
    );
}
