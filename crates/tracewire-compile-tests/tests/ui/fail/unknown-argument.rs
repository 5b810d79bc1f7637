#[tracewire_macros::traced(level = "info")]
fn f() {}

fn main() {}
