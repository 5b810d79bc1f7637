#[tracewire_macros::traced(fields(total = 1 +))]
fn f() {}

fn main() {}
