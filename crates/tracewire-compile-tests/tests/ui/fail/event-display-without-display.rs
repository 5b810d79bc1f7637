struct Opaque;

#[derive(tracewire_macros::Event)]
#[event(name = "thing.happened", version = 1)]
struct ThingHappened {
    #[event(display)]
    thing: Opaque,
}

fn main() {}
