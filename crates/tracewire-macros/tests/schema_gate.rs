//! The schema gate: the export of every derived event compared with a committed file, failing
//! with a readable list when an event drifted without a version bump.

use tracewire_core::event::schema::{self, Change};
use tracewire_macros::Event;

#[allow(dead_code)]
#[derive(Event)]
#[event(name = "order.placed", version = 1)]
struct OrderPlaced {
    order_id: u64,
    amount: f64,
    coupon: Option<String>,
    #[event(pii = "hash")]
    customer_id: String,
}

#[allow(dead_code)]
#[derive(Event)]
#[event(name = "order.shipped", version = 1)]
struct OrderShipped {
    order_id: u64,
    carrier: String,
}

fn committed() -> String {
    format!(
        "{}/tests/schema/events.schema.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn fixture(name: &str) -> String {
    format!("{}/tests/schema/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn temp_copy(from: Option<&str>) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tracewire-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.schema.json");
    let _ = std::fs::remove_file(&path);
    if let Some(from) = from {
        std::fs::copy(fixture(from), &path).unwrap();
    }
    path
}

#[test]
fn the_committed_schema_matches_the_code() {
    schema::assert_file(committed());
}

#[test]
fn the_export_is_one_json_schema_document() {
    let doc: serde_json::Value = serde_json::from_str(&schema::export()).unwrap();
    assert_eq!(
        doc["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let def = &doc["$defs"]["order.placed.v1"];
    assert_eq!(def["type"], "object");
    assert_eq!(def["properties"]["event.name"]["const"], "order.placed");
    assert_eq!(def["properties"]["event.version"]["const"], 1);
    assert_eq!(def["properties"]["order_id"]["type"], "integer");
    assert_eq!(def["properties"]["amount"]["type"], "number");
    assert_eq!(def["properties"]["customer_id"]["x-tracewire-pii"], "hash");
    let required: Vec<&str> = def["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        [
            "event.name",
            "event.version",
            "order_id",
            "amount",
            "customer_id"
        ]
    );
    assert_eq!(doc["oneOf"].as_array().unwrap().len(), 2);
}

#[test]
fn a_drifted_event_fails_with_a_readable_list() {
    // The fixture is order.placed v1 as it was before `coupon` was added, `amount` changed
    // from integer to float and `channel` was removed — all without a version bump.
    let err = schema::check_file(fixture("drifted.schema.json")).unwrap_err();
    let text = err.to_string();
    let expected = [
        "order.placed v1: field `coupon` (string, optional) was added without a version bump",
        "order.placed v1: field `amount` changed from (integer) to (number) without a version bump",
        "order.placed v1: field `channel` (string) was removed without a version bump",
        "order.shipped v1: new, not in the committed schema",
    ];
    for line in expected {
        assert!(
            text.contains(&format!("  - {line}\n")),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("bump `#[event(version = ...)]`"), "{text}");
    assert_eq!(err.changes.len(), 4);
    assert!(err.changes[..3].iter().all(Change::is_breaking));
    assert!(!err.changes[3].is_breaking());
}

#[test]
fn update_mode_never_records_a_drift_under_the_same_version() {
    let path = temp_copy(Some("drifted.schema.json"));
    let before = std::fs::read_to_string(&path).unwrap();
    assert!(schema::update_file(&path).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
}

#[test]
fn update_mode_records_new_events_and_versions() {
    let path = temp_copy(Some("only-placed.schema.json"));
    let err = schema::check_file(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("TRACEWIRE_UPDATE_SCHEMA=1 to update"),
        "{err}"
    );
    schema::update_file(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), schema::export());
}

#[test]
fn a_missing_file_says_how_to_create_it() {
    let path = temp_copy(None);
    let err = schema::check_file(&path).unwrap_err();
    assert!(
        err.to_string().contains("TRACEWIRE_UPDATE_SCHEMA=1"),
        "{err}"
    );
    schema::update_file(&path).unwrap();
    schema::assert_file(&path);
}
