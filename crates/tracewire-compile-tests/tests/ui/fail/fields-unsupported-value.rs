#[tracewire_macros::traced(fields(items = items))]
fn f(items: Vec<u8>) {
    let _ = items;
}

fn main() {}
