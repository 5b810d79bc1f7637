#![deny(unused_must_use)]

fn main() -> Result<(), tracewire::InitError> {
    tracewire::init()?;
    Ok(())
}
