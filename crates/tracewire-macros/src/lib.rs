//! Procedural macros of tracewire: `#[traced]` and `#[derive(Event)]`.
//!
//! Use them through the `tracewire` facade (feature `macros`): `#[tracewire::traced]` and
//! `#[derive(tracewire::Event)]`. The expansions refer to `::tracewire::__private`; users who
//! re-export tracewire under another path say so with `crate = path`.

mod attr;
mod event;
mod expand;
mod objective;
mod once;

use proc_macro::TokenStream;

/// Gives a function a span and call metrics.
///
/// ```
/// # use tracewire_macros as tracewire_m;
/// # #[derive(Debug)] struct Order; #[derive(Debug)] struct DbError;
/// # impl std::fmt::Display for DbError {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("db") }
/// # }
/// # async fn fetch(_: u64) -> Result<Order, DbError> { Ok(Order) }
/// #[tracewire_m::traced(fields(order.id = id))]
/// async fn load_order(id: u64) -> Result<Order, DbError> {
///     tracing::info!("loading"); // carries the span's trace id
///     fetch(id).await
/// }
/// ```
///
/// (Through the facade: `#[tracewire::traced]`.)
///
/// # What a call records
///
/// - A span named after the function, a child of the current OpenTelemetry context, with
///   `code.function.name` (`module::function`) and `code.namespace` (the module path). The
///   body runs with the span's context attached (on every poll for async bodies), so nested
///   `#[traced]` calls, spawned work that takes the current context, and `tracing` events inside
///   all belong to it.
/// - When the function returns `Result` (any type named `Result`: `std`, `io::Result`,
///   `anyhow::Result`, …) and the value is an `Err`: span status Error with the error's
///   `Display` text (its `Debug` text when it has no `Display`), `error.type` (the short type
///   name of the error), and an `exception` event with `exception.type` and
///   `exception.message`.
/// - A panic unwinding through the call ends the span with status Error and
///   `error.type = "panic"`. An async call whose future is dropped before completion ends its
///   span with `tracewire.cancelled = true`; nothing leaks.
/// - Metrics named after the autometrics specification: `function.calls` (`function`,
///   `module`, `result` = `ok`|`error`), `function.calls.duration` (seconds) and
///   `function.calls.concurrent` (in flight).
///
/// Arguments are **not** recorded: they often hold personal data. Record chosen values with
/// `fields(...)`.
///
/// # Arguments
///
/// | argument | effect |
/// |---|---|
/// | `name = "..."` | the span name (default: the function's name) |
/// | `fields(key = expr, other.key = expr, param)` | span attributes, evaluated when the call starts and only when the span is sampled; integers, floats, `bool` and strings (`param` alone records that parameter) |
/// | `skip(a, b)`, `skip_all` | accepted for migration from `#[tracing::instrument]` (nothing is recorded by default); `skip` must name parameters |
/// | `kind = client\|server\|producer\|consumer\|internal` | the span kind (default `internal`) |
/// | `metrics = false` | no metrics for this function |
/// | `crate = path` | where tracewire is (default `::tracewire`) |
/// | `objective(availability = 99.9%, latency = 99% < 250ms, window = 30d, name = "...", description = "...")` | a service level objective on this function's calls, registered for `tracewire::ops` (see [`objective!`]); the name defaults to the function's |
///
/// # Where it works
///
/// `async fn` and `fn`, free functions and methods (`self`, `&self`, `&mut self`), generic
/// functions, functions returning `impl Trait`, and methods of `#[async_trait]` impls (put
/// `#[traced]` on the method; `#[async_trait]` on the impl expands first). A plain `fn` that
/// returns a future gets a span around the creation of the future only: make it `async fn`.
/// Spans of async functions start on the first poll, as a child of the context current then.
///
/// The tracer and instruments are taken from the global providers on the first call of each
/// function: set up telemetry before calling instrumented code.
#[proc_macro_attribute]
pub fn traced(args: TokenStream, item: TokenStream) -> TokenStream {
    let item2: proc_macro2::TokenStream = item.clone().into();
    let expanded = syn::parse::<attr::TracedArgs>(args).and_then(|parsed_args| {
        match syn::parse::<syn::Item>(item)? {
            syn::Item::Fn(function) => expand::traced(parsed_args, function),
            other => Err(expand::not_a_function(&other)),
        }
    });
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            // Emit the item unchanged next to the error, so the rest of the crate still
            // compiles and only this error is reported.
            let error = error.into_compile_error();
            quote::quote!(#error #item2).into()
        }
    }
}

/// Derives `tracewire::Event`: a typed, versioned event with a registered schema.
///
/// ```
/// # use tracewire_macros as tracewire_m;
/// # struct OrderStatus;
/// # impl std::fmt::Display for OrderStatus {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("placed") }
/// # }
/// use tracewire::__private::Event as _; // `tracewire::Event` through the facade
///
/// #[derive(tracewire_m::Event)]
/// #[event(name = "order.placed", version = 1)]
/// struct OrderPlaced {
///     order_id: u64,
///     amount: f64,
///     coupon: Option<String>,
///     #[event(display)]
///     status: OrderStatus,           // implements Display
///     #[event(pii)]
///     email: String,                 // always written as "REDACTED"
///     #[event(pii = "hash")]
///     customer_id: String,           // written as a keyed hash
/// }
///
/// OrderPlaced {
///     order_id: 42,
///     amount: 19.5,
///     coupon: None,
///     status: OrderStatus,
///     email: "alice@example.com".into(),
///     customer_id: "c-1".into(),
/// }
/// .emit();
/// ```
///
/// `emit()` writes one JSON log line (target `tracewire::event`: `event.name`,
/// `event.version`, the fields, the trace and span ids) and adds a span event named after the
/// event to the current span. Absent `Option` fields are left out.
///
/// # Attributes
///
/// - On the struct: `#[event(name = "...", version = N)]`, both required; `crate = path`
///   where tracewire is re-exported elsewhere.
/// - On a field: `#[event(display)]` writes a type implementing `Display` as a string;
///   `#[event(pii)]` (or `pii = "redact"`) never writes the value, `#[event(pii = "hash")]`
///   writes a keyed hash of it (HMAC-SHA-256 under the configured key) so equal values can be
///   correlated.
///
/// Field types: integers, `f32`/`f64`, `bool`, `String`, `&str`, `Cow<str>`, `Box<str>`,
/// `Arc<str>`, `Option` of those, or any `Display` type with `#[event(display)]`. Anything
/// else is a compile error naming the field. Field names may not collide with the keys of the
/// log line itself (`timestamp`, `level`, `message`, `target`, `trace_id`, `span_id`,
/// `request_id`).
///
/// Every derived event is registered at link time: `tracewire::schema` lists them, exports one
/// JSON Schema document, and checks it against a committed file in tests (the schema gate).
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    event::derive(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declares a service level objective, registered at link time for `tracewire::ops` (which
/// lists every objective of the program and generates alert rules, a dashboard and runbooks
/// from them).
///
/// ```
/// # use tracewire_macros as tracewire_m;
/// // Next to the router: one route, or every route.
/// tracewire_m::objective!(
///     name = "users",
///     http_route = "/users/{id}",
///     availability = 99.9%,          // 99.9 % of requests succeed…
///     latency = 99% < 250ms,         // …and 99 % take at most 250 ms…
///     window = 30d,                  // …over 30 days (the default)
///     description = "Profile pages load",
/// );
/// tracewire_m::objective!(name = "api", all_http_routes, availability = 99.5%);
/// // Next to a consumer: the messages of a queue or topic.
/// tracewire_m::objective!(name = "orders", amqp_queue = "orders", availability = 99%);
/// tracewire_m::objective!(name = "payments", kafka_topic = "payments", latency = 95% < 1s);
/// // A `#[traced]` function declared elsewhere (or use `#[traced(objective(...))]` on it).
/// tracewire_m::objective!(name = "charge", function = "charge", module = "billing", availability = 99%);
/// ```
///
/// | argument | meaning |
/// |---|---|
/// | `name = "..."` | required; letters, digits, `-`, `_`; unique in the program (it names the alerts) |
/// | `http_route = "..."` | the requests of one route of a `ServerLayer`, as written in the router |
/// | `all_http_routes` | every route, each held to the target on its own |
/// | `function = "..."` (`module = "..."`) | the calls of a `#[traced]` function |
/// | `amqp_queue = "..."`, `kafka_topic = "..."` | the messages processed from a queue or topic |
/// | `availability = P%` | P % of the events succeed (not a 5xx, not an `Err`, not a failed message) |
/// | `latency = P% < D` | P % of the events take at most D (`ms`, `s`); D must be a bucket bound of the duration histograms: 5ms, 10ms, 25ms, 50ms, 75ms, 100ms, 250ms, 500ms, 750ms, 1s, 2.5s, 5s, 7.5s, 10s |
/// | `window = D` | the rolling window (`d`, `h`; at least a day; default `30d`) |
/// | `description = "..."` | a sentence for the runbook |
/// | `crate = path` | where tracewire is (default `::tracewire`) |
///
/// The route, function, queue and topic values may be any `&'static str` constant. Mistakes
/// (a threshold between bucket bounds, a target of 100 %, two things measured, no target) are
/// compile errors pointing at the argument.
#[proc_macro]
pub fn objective(input: TokenStream) -> TokenStream {
    let expanded = syn::parse::<objective::ObjectiveArgs>(input).and_then(|args| {
        args.check(false)?;
        let krate = match &args.krate {
            Some(path) => quote::quote!(#path),
            None => quote::quote!(::tracewire),
        };
        Ok(args.registration(&krate, None, None))
    });
    expanded
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
