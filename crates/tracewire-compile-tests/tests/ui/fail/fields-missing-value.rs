#[tracewire_macros::traced(fields(total = ))]
fn f() {}

fn main() {}
