#[derive(tracewire_macros::Event)]
#[event(name = "file.uploaded", version = 1)]
struct FileUploaded {
    name: String,
    payload: Vec<u8>,
}

fn main() {}
