tracewire_macros::objective!(name = "slow", http_route = "/slow", latency = 99% < 300ms);

fn main() {}
