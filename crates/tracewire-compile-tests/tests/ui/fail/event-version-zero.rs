#[derive(tracewire_macros::Event)]
#[event(name = "order.placed", version = 0)]
struct OrderPlaced {
    id: u64,
}

fn main() {}
