#![deny(unused_must_use)]

fn main() {
    tracewire::builder().service_name("checkout");
}
