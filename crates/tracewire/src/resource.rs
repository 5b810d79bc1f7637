//! The resource every span, metric and log line of the process is attributed to.

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_semantic_conventions::resource as keys;

/// Builds the resource: `service.name` (explicit, else `OTEL_SERVICE_NAME` /
/// `OTEL_RESOURCE_ATTRIBUTES`, else the executable's name), `service.version`,
/// `service.instance.id`, `host.name`, `process.pid`, and whatever `OTEL_RESOURCE_ATTRIBUTES`
/// adds. Explicit values win over the environment; the environment wins over detected defaults.
pub(crate) fn build(
    service_name: Option<&str>,
    service_version: Option<&str>,
    extra: &[KeyValue],
) -> Resource {
    let from_env = Resource::builder().build();
    let env_has = |key: &str| {
        from_env
            .get(&opentelemetry::Key::from(key.to_owned()))
            .is_some()
    };
    let env_name = from_env
        .get(&opentelemetry::Key::from_static_str(keys::SERVICE_NAME))
        .map(|v| v.to_string())
        .filter(|n| !n.starts_with("unknown_service"));

    let name = service_name
        .map(str::to_owned)
        .or(env_name)
        .unwrap_or_else(executable_name);

    let mut defaults = Vec::new();
    if !env_has(keys::SERVICE_INSTANCE_ID) {
        defaults.push(KeyValue::new(
            keys::SERVICE_INSTANCE_ID,
            format!("{:032x}", rand::random::<u128>()),
        ));
    }
    if !env_has(keys::HOST_NAME)
        && let Some(host) = host_name()
    {
        defaults.push(KeyValue::new(keys::HOST_NAME, host));
    }
    defaults.push(KeyValue::new(
        keys::PROCESS_PID,
        i64::from(std::process::id()),
    ));
    let version = service_version.map(str::to_owned).or_else(|| {
        if env_has(keys::SERVICE_VERSION) {
            None
        } else {
            // Set by `cargo run`; absent in deployed binaries, where the builder or
            // OTEL_RESOURCE_ATTRIBUTES should provide it.
            std::env::var("CARGO_PKG_VERSION").ok()
        }
    });

    let mut builder = Resource::builder_empty().with_attributes(defaults);
    // The environment (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME) overrides defaults…
    builder = builder.with_attributes(
        from_env
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    // …and explicit settings override the environment.
    builder = builder.with_service_name(name);
    if let Some(version) = version {
        builder = builder.with_attribute(KeyValue::new(keys::SERVICE_VERSION, version));
    }
    builder.with_attributes(extra.iter().cloned()).build()
}

fn executable_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown_service".to_owned())
}

fn host_name() -> Option<String> {
    if let Ok(name) = std::env::var("HOSTNAME")
        && !name.trim().is_empty()
    {
        return Some(name.trim().to_owned());
    }
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
