//! Generates the gRPC code of `proto/greeter.proto` with the `protoc` that the
//! `protoc-bin-vendored` crate ships, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_with_config(config, &["proto/greeter.proto"], &["proto"])?;
    Ok(())
}
