#![deny(unused_must_use)]

fn main() -> Result<(), tracewire::InitError> {
    let telemetry = tracewire::builder().without_otlp().init()?;
    drop(telemetry);
    Ok(())
}
