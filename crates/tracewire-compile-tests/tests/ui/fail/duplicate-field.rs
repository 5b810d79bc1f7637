#[tracewire_macros::traced(fields(user.id = 1, user.id = 2))]
fn f() {}

fn main() {}
