//! Typed, versioned business events: the runtime side of `#[derive(tracewire::Event)]`.
//!
//! A derived event has a name and a version fixed at compile time and a flat set of typed
//! fields. [`Event::emit`] writes it twice, both stamped with the current trace:
//!
//! - one JSON log line through `tracing` (target [`TARGET`], level INFO, message = the event
//!   name) carrying `event.name`, `event.version` and the fields;
//! - one span event on the current span (when it is recorded), named after the event, with
//!   the same keys as attributes.
//!
//! Fields marked `#[event(pii)]` are never written in clear: their value is replaced by
//! [`REDACTED`], or, with `#[event(pii = "hash")]`, by a keyed hash
//! ([`pii_hash`]: HMAC-SHA-256 under the key given to [`set_pii_hash_key`], truncated to 128
//! bits, 32 hex digits) so equal values can still be correlated without being readable. With
//! no key configured, hashed fields are redacted: an unkeyed hash of an e-mail address can be
//! reversed by guessing.
//!
//! Every derived event registers its [`EventSchema`] at link time; [`schema`] lists them,
//! exports one JSON Schema document and checks it against a committed file in CI.

pub mod schema;

use std::fmt::{self, Write as _};
use std::sync::RwLock;

use hmac::{Hmac, Mac};
use opentelemetry::trace::{SpanRef, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use sha2::Sha256;

#[doc(hidden)]
pub use inventory;

/// The `tracing` target of event log lines.
pub const TARGET: &str = "tracewire::event";

/// Key of the event name, on log lines and span events.
pub const EVENT_NAME: &str = "event.name";

/// Key of the event version, on log lines and span events.
pub const EVENT_VERSION: &str = "event.version";

/// Environment variable read for the PII hash key when [`set_pii_hash_key`] was not called.
pub const PII_HASH_KEY_ENV: &str = "TRACEWIRE_PII_HASH_KEY";

/// Field names an event may not use: the log line already has keys of these names.
pub const RESERVED_FIELD_NAMES: [&str; 7] = crate::logs::RESERVED_KEYS;

/// A typed, versioned event. Implement it with `#[derive(tracewire::Event)]`.
pub trait Event {
    /// The event name, e.g. `order.placed`.
    const NAME: &'static str;
    /// The schema version; bump it whenever a field is added, removed or retyped.
    const VERSION: u32;

    /// The event's schema (also registered for [`schema::events`]).
    fn schema() -> &'static EventSchema;

    /// Writes the event: one JSON log line and one span event on the current span.
    fn emit(&self);
}

/// The schema of one event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSchema {
    /// The event name.
    pub name: &'static str,
    /// The schema version.
    pub version: u32,
    /// The Rust type the event is derived on (for messages).
    pub type_name: &'static str,
    /// The fields, in declaration order.
    pub fields: &'static [FieldSchema],
}

/// One field of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSchema {
    /// The key on log lines and span events.
    pub name: &'static str,
    /// The JSON type of the value.
    pub ty: FieldType,
    /// Whether the field may be absent (an `Option`).
    pub optional: bool,
    /// How personal data in the field is protected.
    pub pii: Pii,
}

/// The JSON type of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldType {
    /// Integers of any width.
    Integer,
    /// `f32`/`f64`.
    Number,
    /// `bool`.
    Boolean,
    /// Strings, and types written with `Display` (`#[event(display)]`).
    String,
}

impl FieldType {
    /// The JSON Schema type name.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::String => "string",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a field holding personal data is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pii {
    /// Not personal data: written as is.
    None,
    /// `#[event(pii)]`: always written as `REDACTED`.
    Redact,
    /// `#[event(pii = "hash")]`: written as a keyed hash (see [`pii_hash`]).
    Hash,
}

impl Pii {
    /// `none`, `redact` or `hash`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pii::None => "none",
            Pii::Redact => "redact",
            Pii::Hash => "hash",
        }
    }
}

/// A registered event schema (one per derived type), collected at link time.
#[derive(Debug)]
pub struct Registration(pub fn() -> &'static EventSchema);

inventory::collect!(Registration);

type HmacSha256 = Hmac<Sha256>;

enum KeyState {
    Unset,
    Key(Box<HmacSha256>),
    Disabled,
}

static PII_KEY: RwLock<KeyState> = RwLock::new(KeyState::Unset);

/// Sets the key of [`pii_hash`] (from configuration: a secret shared by the services whose
/// hashes must be comparable). An empty key disables hashing: hashed fields are redacted.
pub fn set_pii_hash_key(key: impl AsRef<[u8]>) {
    let state = match key.as_ref() {
        [] => KeyState::Disabled,
        key => match HmacSha256::new_from_slice(key) {
            Ok(mac) => KeyState::Key(Box::new(mac)),
            Err(_) => KeyState::Disabled,
        },
    };
    match PII_KEY.write() {
        Ok(mut guard) => *guard = state,
        Err(poisoned) => *poisoned.into_inner() = state,
    }
}

fn with_key<T>(f: impl FnOnce(Option<&HmacSha256>) -> T) -> T {
    {
        let guard = PII_KEY.read().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            KeyState::Key(mac) => return f(Some(mac)),
            KeyState::Disabled => return f(None),
            KeyState::Unset => {}
        }
    }
    // First use without configuration: take the key from the environment, once.
    let mut guard = PII_KEY.write().unwrap_or_else(|p| p.into_inner());
    if matches!(*guard, KeyState::Unset) {
        *guard = std::env::var_os(PII_HASH_KEY_ENV)
            .filter(|key| !key.is_empty())
            .and_then(|key| HmacSha256::new_from_slice(key.as_encoded_bytes()).ok())
            .map_or(KeyState::Disabled, |mac| KeyState::Key(Box::new(mac)));
    }
    match &*guard {
        KeyState::Key(mac) => f(Some(mac)),
        _ => f(None),
    }
}

/// The keyed hash written for a `#[event(pii = "hash")]` field: HMAC-SHA-256 of the value's
/// text under the configured key, first 128 bits as 32 lowercase hex digits;
/// [`REDACTED`] when no key is configured.
///
/// ```
/// use tracewire_core::event::{pii_hash, set_pii_hash_key};
/// set_pii_hash_key("k");
/// let a = pii_hash(&"alice@example.com");
/// assert_eq!(a.len(), 32);
/// assert_eq!(a, pii_hash(&"alice@example.com"));
/// assert_ne!(a, pii_hash(&"bob@example.com"));
///
/// // Known answer (RFC 4231, test case 2): any HMAC-SHA-256 implementation given the same key
/// // and text yields the same first 128 bits, so hashes can be joined across services.
/// set_pii_hash_key("Jefe");
/// assert_eq!(pii_hash("what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c7");
/// ```
pub fn pii_hash<T: fmt::Display + ?Sized>(value: &T) -> String {
    with_key(|key| {
        let Some(key) = key else {
            return crate::redact::REDACTED.to_owned();
        };
        let mut mac = key.clone();
        let mut text = String::new();
        let _ = write!(text, "{value}");
        mac.update(text.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(32);
        for byte in &digest[..16] {
            let _ = write!(out, "{byte:02x}");
        }
        out
    })
}

/// Calls `f` with the current span when it is being recorded (for the span event of
/// [`Event::emit`]); the attributes are only built then.
pub fn with_recording_span(f: impl FnOnce(&SpanRef<'_>)) {
    Context::map_current(|cx| {
        let span = cx.span();
        if span.is_recording() {
            f(&span);
        }
    });
}

/// The attributes every event's span event starts with.
pub fn header_attributes(name: &'static str, version: u32) -> Vec<KeyValue> {
    vec![
        KeyValue::new(EVENT_NAME, name),
        KeyValue::new(EVENT_VERSION, i64::from(version)),
    ]
}

/// The value written for a field of a `Display` type.
pub fn display_value<T: fmt::Display + ?Sized>(value: &T) -> opentelemetry::Value {
    opentelemetry::Value::from(value.to_string())
}

#[doc(hidden)]
pub use crate::redact::REDACTED;

/// The text of a string field (`String`, `&str`, `Cow<str>`, `Box<str>`, `Arc<str>`).
#[doc(hidden)]
pub fn as_str<T: AsRef<str> + ?Sized>(value: &T) -> &str {
    value.as_ref()
}

/// The text of an optional string field.
#[doc(hidden)]
pub fn opt_str<T: AsRef<str>>(value: &Option<T>) -> Option<&str> {
    value.as_ref().map(AsRef::as_ref)
}

/// A `Display` field, for the log line.
#[doc(hidden)]
pub fn display<T: fmt::Display + ?Sized>(value: &T) -> tracing::field::DisplayValue<&T> {
    tracing::field::display(value)
}

/// An optional `Display` field, written only when present.
#[doc(hidden)]
pub fn opt_display<T: fmt::Display>(value: &Option<T>) -> Option<tracing::field::DisplayValue<&T>> {
    value.as_ref().map(tracing::field::display)
}
