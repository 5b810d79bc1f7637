tracewire_macros::objective!(name = "typo", http_route = "/orders", availabilty = 99%);

fn main() {}
