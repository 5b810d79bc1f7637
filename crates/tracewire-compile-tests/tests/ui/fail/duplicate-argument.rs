#[tracewire_macros::traced(name = "a", kind = client, name = "b")]
fn f() {}

fn main() {}
