#[tracewire_macros::traced(kind = sender)]
fn f() {}

fn main() {}
