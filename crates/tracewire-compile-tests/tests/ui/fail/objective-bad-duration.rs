tracewire_macros::objective!(name = "window", http_route = "/orders", availability = 99%, window = 30 days);

fn main() {}
