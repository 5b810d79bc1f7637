#[derive(tracewire_macros::Event)]
#[event(version = 1)]
struct Nameless {
    id: u64,
}

fn main() {}
