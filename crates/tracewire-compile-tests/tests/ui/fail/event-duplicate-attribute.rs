#[derive(tracewire_macros::Event)]
#[event(name = "user.signed_up", version = 1)]
struct SignedUp {
    #[event(pii, pii = "hash")]
    email: String,
}

fn main() {}
