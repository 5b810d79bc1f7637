//! Compile-time behaviour of the guard: a `Telemetry` or `Builder` left unused is a warning
//! (an error under `#![deny(unused_must_use)]`), messages pinned in `tests/ui/fail/*.stderr`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
