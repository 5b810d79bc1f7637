tracewire_macros::objective!(name = "nothing", http_route = "/orders");

fn main() {}
