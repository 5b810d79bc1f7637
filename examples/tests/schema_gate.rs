//! The telemetry gate: the events the examples emit must match the committed schema, or carry a
//! version bump. Record a new event or version with
//! `TRACEWIRE_UPDATE_SCHEMA=1 cargo nextest run -p tracewire-examples`.

#[test]
fn events_match_the_committed_schema() {
    // Name the event type so the linker keeps its registration.
    let names: Vec<_> = tracewire::schema::events().iter().map(|e| e.name).collect();
    let _ = std::hint::black_box(std::mem::size_of::<tracewire_examples::UserViewed>());
    assert!(
        names.contains(&"user.viewed"),
        "registered events: {names:?}"
    );
    tracewire::schema::assert_file(concat!(env!("CARGO_MANIFEST_DIR"), "/events.schema.json"));
}
