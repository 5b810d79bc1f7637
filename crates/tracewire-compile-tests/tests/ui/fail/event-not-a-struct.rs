#[derive(tracewire_macros::Event)]
#[event(name = "state.changed", version = 1)]
enum StateChanged {
    On,
    Off,
}

fn main() {}
