#[tracewire_macros::traced]
struct Order {
    id: u64,
}

fn main() {}
