//! The registry of derived events, its JSON Schema export, and the schema gate for CI.
//!
//! Every `#[derive(tracewire::Event)]` type linked into the program is listed by [`events`].
//! [`export`] renders them as one JSON Schema (draft 2020-12) document: one definition per
//! event name and version under `$defs` (keyed `<name>.v<version>`), describing the event keys
//! of its log line (`event.name`, `event.version` and the fields; the log line's own keys such
//! as `timestamp` and `trace_id` are documented in `docs/conventions.md`).
//!
//! # The schema gate
//!
//! Commit the export next to your code and check it in a test:
//!
//! ```no_run
//! #[test]
//! fn telemetry_schema_is_committed() {
//!     tracewire_core::event::schema::assert_file(
//!         concat!(env!("CARGO_MANIFEST_DIR"), "/events.schema.json"),
//!     );
//! }
//! ```
//!
//! The test fails with a readable list of differences when:
//! - a field of an event was added, removed or retyped (type, optionality or PII treatment)
//!   without a version bump — consumers of that version would break; bump
//!   `#[event(version = ...)]`;
//! - an event or version exists in the code but not in the file, or the other way round —
//!   the committed file is out of date.
//!
//! Run the test with [`UPDATE_ENV`]`=1` to rewrite the file. That never records a changed
//! event under an unchanged version: those stay failures until the version is bumped.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::{EventSchema, FieldSchema, Pii, Registration};

/// Set this environment variable to `1` to let [`check_file`] / [`assert_file`] rewrite the
/// committed file (new events and versions only; see the [module docs](self)).
pub const UPDATE_ENV: &str = "TRACEWIRE_UPDATE_SCHEMA";

const SCHEMA_DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";
const PII_KEYWORD: &str = "x-tracewire-pii";

/// Every event schema registered in this program, sorted by name then version.
pub fn events() -> Vec<&'static EventSchema> {
    let mut all: Vec<&'static EventSchema> = inventory::iter::<Registration>
        .into_iter()
        .map(|r| (r.0)())
        .collect();
    all.sort_by(|a, b| (a.name, a.version, a.type_name).cmp(&(b.name, b.version, b.type_name)));
    all
}

/// The JSON Schema document of every registered event, pretty-printed with a final newline
/// (the format of the committed file).
pub fn export() -> String {
    export_events(&events())
}

/// The JSON Schema document of `events`.
pub fn export_events(events: &[&EventSchema]) -> String {
    let mut defs = Map::new();
    let mut refs = Vec::new();
    for event in events {
        let key = def_key(event.name, event.version);
        refs.push(json!({ "$ref": format!("#/$defs/{key}") }));
        defs.insert(key, event_definition(event));
    }
    let doc = json!({
        "$schema": SCHEMA_DIALECT,
        "title": "tracewire events",
        "description": "Event keys of the log lines written by Event::emit, one definition per event name and version.",
        "oneOf": refs,
        "$defs": defs,
    });
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

fn def_key(name: &str, version: u32) -> String {
    format!("{name}.v{version}")
}

fn event_definition(event: &EventSchema) -> Value {
    let mut properties = Map::new();
    properties.insert("event.name".into(), json!({ "const": event.name }));
    properties.insert("event.version".into(), json!({ "const": event.version }));
    let mut required = vec![json!("event.name"), json!("event.version")];
    for field in event.fields {
        properties.insert(field.name.into(), field_definition(field));
        if !field.optional {
            required.push(json!(field.name));
        }
    }
    json!({
        "title": event.name,
        "type": "object",
        "properties": properties,
        "required": required,
    })
}

fn field_definition(field: &FieldSchema) -> Value {
    match field.pii {
        Pii::None => json!({ "type": field.ty.as_str() }),
        Pii::Redact => json!({
            "type": "string",
            "const": crate::redact::REDACTED,
            "x-tracewire-type": field.ty.as_str(),
            PII_KEYWORD: "redact",
        }),
        Pii::Hash => json!({
            "type": "string",
            "pattern": "^([0-9a-f]{32}|REDACTED)$",
            "x-tracewire-type": field.ty.as_str(),
            PII_KEYWORD: "hash",
        }),
    }
}

/// The shape of one field, as compared by the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    ty: String,
    optional: bool,
    pii: String,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.ty)?;
        if self.optional {
            f.write_str(", optional")?;
        }
        if self.pii != "none" {
            write!(f, ", pii = {}", self.pii)?;
        }
        Ok(())
    }
}

type Model = BTreeMap<(String, u64), BTreeMap<String, Shape>>;

/// Reads a document written by [`export`] back into name/version → field → shape.
fn parse(doc: &str) -> Result<Model, String> {
    let doc: Value = serde_json::from_str(doc).map_err(|e| format!("not valid JSON: {e}"))?;
    let defs = doc
        .get("$defs")
        .and_then(Value::as_object)
        .ok_or("no `$defs` object")?;
    let mut model = Model::new();
    for (key, def) in defs {
        let bad = |what: &str| format!("definition `{key}`: {what}");
        let properties = def
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no `properties` object"))?;
        let name = properties
            .get("event.name")
            .and_then(|p| p.get("const"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no `event.name` constant"))?;
        let version = properties
            .get("event.version")
            .and_then(|p| p.get("const"))
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no `event.version` constant"))?;
        let required: Vec<&str> = def
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut fields = BTreeMap::new();
        for (field, prop) in properties {
            if field == "event.name" || field == "event.version" {
                continue;
            }
            let pii = prop
                .get(PII_KEYWORD)
                .and_then(Value::as_str)
                .unwrap_or("none");
            let ty = if pii == "none" {
                prop.get("type")
            } else {
                prop.get("x-tracewire-type")
            }
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("field `{field}` has no type")))?;
            fields.insert(
                field.clone(),
                Shape {
                    ty: ty.to_owned(),
                    optional: !required.contains(&field.as_str()),
                    pii: pii.to_owned(),
                },
            );
        }
        if model.insert((name.to_owned(), version), fields).is_some() {
            return Err(format!("{name} v{version} is defined twice"));
        }
    }
    Ok(model)
}

/// One difference between the committed schema and the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A field appeared in an event whose version did not change.
    FieldAdded {
        /// Event name.
        event: String,
        /// Event version.
        version: u64,
        /// Field name.
        field: String,
        /// Its shape in the code.
        shape: String,
    },
    /// A field disappeared from an event whose version did not change.
    FieldRemoved {
        /// Event name.
        event: String,
        /// Event version.
        version: u64,
        /// Field name.
        field: String,
        /// Its shape in the committed file.
        shape: String,
    },
    /// A field's type, optionality or PII treatment changed under the same version.
    FieldRetyped {
        /// Event name.
        event: String,
        /// Event version.
        version: u64,
        /// Field name.
        field: String,
        /// Its shape in the committed file.
        from: String,
        /// Its shape in the code.
        to: String,
    },
    /// An event name and version in the code that the committed file does not have.
    EventAdded {
        /// Event name.
        event: String,
        /// Event version.
        version: u64,
    },
    /// An event name and version in the committed file that the code no longer has.
    EventRemoved {
        /// Event name.
        event: String,
        /// Event version.
        version: u64,
    },
    /// Two Rust types declare the same event name and version.
    Duplicate {
        /// Event name.
        event: String,
        /// Event version.
        version: u64,
        /// The Rust types.
        types: Vec<String>,
    },
}

impl Change {
    /// Whether this change breaks consumers of an existing event version (fixed only by
    /// bumping the version, never by updating the committed file).
    pub fn is_breaking(&self) -> bool {
        matches!(
            self,
            Change::FieldAdded { .. }
                | Change::FieldRemoved { .. }
                | Change::FieldRetyped { .. }
                | Change::Duplicate { .. }
        )
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::FieldAdded {
                event,
                version,
                field,
                shape,
            } => write!(
                f,
                "{event} v{version}: field `{field}` ({shape}) was added without a version bump"
            ),
            Change::FieldRemoved {
                event,
                version,
                field,
                shape,
            } => write!(
                f,
                "{event} v{version}: field `{field}` ({shape}) was removed without a version bump"
            ),
            Change::FieldRetyped {
                event,
                version,
                field,
                from,
                to,
            } => write!(
                f,
                "{event} v{version}: field `{field}` changed from ({from}) to ({to}) without a version bump"
            ),
            Change::EventAdded { event, version } => {
                write!(f, "{event} v{version}: new, not in the committed schema")
            }
            Change::EventRemoved { event, version } => write!(
                f,
                "{event} v{version}: in the committed schema, no longer in the code"
            ),
            Change::Duplicate {
                event,
                version,
                types,
            } => write!(
                f,
                "{event} v{version}: declared by more than one type ({})",
                types.join(", ")
            ),
        }
    }
}

/// Why the gate failed: the differences between the committed schema and the code, or a file
/// that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaDrift {
    /// Where the committed schema lives (as given).
    pub path: String,
    /// The differences, breaking ones first.
    pub changes: Vec<Change>,
    /// Set when the committed file could not be read or parsed.
    pub unreadable: Option<String>,
}

impl fmt::Display for SchemaDrift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(reason) = &self.unreadable {
            return write!(
                f,
                "the committed event schema {} cannot be used: {reason}\n\
                 run the test with {UPDATE_ENV}=1 to write it",
                self.path
            );
        }
        writeln!(
            f,
            "the events in the code differ from the committed schema {}:",
            self.path
        )?;
        for change in &self.changes {
            writeln!(f, "  - {change}")?;
        }
        if self.changes.iter().any(Change::is_breaking) {
            write!(
                f,
                "bump `#[event(version = ...)]` of every event changed without a version bump \
                 (its consumers rely on the old shape), then run the test with {UPDATE_ENV}=1 \
                 to record the new version"
            )
        } else {
            write!(
                f,
                "run the test with {UPDATE_ENV}=1 to update the committed schema"
            )
        }
    }
}

impl std::error::Error for SchemaDrift {}

fn duplicates(events: &[&EventSchema]) -> Vec<Change> {
    let mut by_key: BTreeMap<(&str, u32), Vec<&str>> = BTreeMap::new();
    for event in events {
        by_key
            .entry((event.name, event.version))
            .or_default()
            .push(event.type_name);
    }
    by_key
        .into_iter()
        .filter(|(_, types)| types.len() > 1)
        .map(|((event, version), types)| Change::Duplicate {
            event: event.to_owned(),
            version: u64::from(version),
            types: types.into_iter().map(str::to_owned).collect(),
        })
        .collect()
}

/// The differences between a committed document and `events`; empty when they match.
pub fn diff(committed: &str, events: &[&EventSchema]) -> Result<Vec<Change>, String> {
    let old = parse(committed)?;
    let mut changes = duplicates(events);
    let new = parse(&export_events(events))?;
    let mut additions = Vec::new();
    for (key, new_fields) in &new {
        let (event, version) = (key.0.clone(), key.1);
        let Some(old_fields) = old.get(key) else {
            additions.push(Change::EventAdded { event, version });
            continue;
        };
        for (field, shape) in new_fields {
            match old_fields.get(field) {
                None => changes.push(Change::FieldAdded {
                    event: event.clone(),
                    version,
                    field: field.clone(),
                    shape: shape.to_string(),
                }),
                Some(old_shape) if old_shape != shape => changes.push(Change::FieldRetyped {
                    event: event.clone(),
                    version,
                    field: field.clone(),
                    from: old_shape.to_string(),
                    to: shape.to_string(),
                }),
                Some(_) => {}
            }
        }
        for (field, shape) in old_fields {
            if !new_fields.contains_key(field) {
                changes.push(Change::FieldRemoved {
                    event: event.clone(),
                    version,
                    field: field.clone(),
                    shape: shape.to_string(),
                });
            }
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            additions.push(Change::EventRemoved {
                event: key.0.clone(),
                version: key.1,
            });
        }
    }
    changes.extend(additions);
    Ok(changes)
}

/// Compares `events` with the committed document at `path`. With [`UPDATE_ENV`]`=1` in the
/// environment, behaves like [`update_events`].
pub fn check_events(path: impl AsRef<Path>, events: &[&EventSchema]) -> Result<(), SchemaDrift> {
    let update = std::env::var(UPDATE_ENV).is_ok_and(|v| v == "1");
    gate(path.as_ref(), events, update)
}

/// Rewrites the committed document at `path` from `events`, unless an event changed under an
/// unchanged version (then fails like [`check_events`] and leaves the file alone).
pub fn update_events(path: impl AsRef<Path>, events: &[&EventSchema]) -> Result<(), SchemaDrift> {
    gate(path.as_ref(), events, true)
}

fn gate(path: &Path, events: &[&EventSchema], update: bool) -> Result<(), SchemaDrift> {
    let shown = path.display().to_string();
    let drift = |changes: Vec<Change>, unreadable: Option<String>| SchemaDrift {
        path: shown.clone(),
        changes,
        unreadable,
    };
    let write = || {
        std::fs::write(path, export_events(events))
            .map_err(|e| drift(Vec::new(), Some(format!("cannot write it: {e}"))))
    };
    let committed = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(_) if update => return write(),
        Err(e) => return Err(drift(Vec::new(), Some(e.to_string()))),
    };
    let changes = match diff(&committed, events) {
        Ok(changes) => changes,
        Err(_) if update => return write(),
        Err(reason) => return Err(drift(Vec::new(), Some(reason))),
    };
    if changes.is_empty() {
        return Ok(());
    }
    if update && !changes.iter().any(Change::is_breaking) {
        return write();
    }
    Err(drift(changes, None))
}

/// [`check_events`] with every registered event.
pub fn check_file(path: impl AsRef<Path>) -> Result<(), SchemaDrift> {
    check_events(path, &events())
}

/// [`update_events`] with every registered event.
pub fn update_file(path: impl AsRef<Path>) -> Result<(), SchemaDrift> {
    update_events(path, &events())
}

/// [`check_file`] for tests: panics with the readable list of differences.
#[track_caller]
pub fn assert_file(path: impl AsRef<Path>) {
    if let Err(drift) = check_file(path) {
        panic!("{drift}");
    }
}
