#[tracewire_macros::traced(metrics = false, objective(availability = 99%))]
fn place_order() {}

fn main() {}
