#[derive(tracewire_macros::Event)]
#[event(name = "order.placed", version = 1)]
struct OrderPlaced {
    #[event(secret)]
    id: u64,
}

fn main() {}
