#[tracewire_macros::traced(objective(latency = 99% < 200ms))]
fn place_order() {}

fn main() {}
