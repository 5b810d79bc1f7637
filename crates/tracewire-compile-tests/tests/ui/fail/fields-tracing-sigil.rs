#[tracewire_macros::traced(fields(user = %user))]
fn f(user: &str) {
    let _ = user;
}

fn main() {}
