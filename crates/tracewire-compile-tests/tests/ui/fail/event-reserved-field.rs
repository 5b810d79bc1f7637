#[derive(tracewire_macros::Event)]
#[event(name = "note.added", version = 1)]
struct NoteAdded {
    message: String,
}

fn main() {}
