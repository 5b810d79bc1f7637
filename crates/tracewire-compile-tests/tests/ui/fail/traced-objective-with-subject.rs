#[tracewire_macros::traced(objective(http_route = "/orders", availability = 99%))]
fn place_order() {}

fn main() {}
