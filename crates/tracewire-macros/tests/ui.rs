//! Compile-time behaviour: accepted forms compile, every misuse is an error pointing at the
//! offending token (messages pinned in `tests/ui/fail/*.stderr`).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
