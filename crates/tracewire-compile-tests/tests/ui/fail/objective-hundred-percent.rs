tracewire_macros::objective!(name = "perfect", http_route = "/orders", availability = 100%);

fn main() {}
