tracewire_macros::objective!(name = "route", http_route = "orders", availability = 99%);

fn main() {}
