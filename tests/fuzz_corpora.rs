//! The fuzz targets' committed corpora (`fuzz/corpus/<target>`), replayed through the same
//! target functions the fuzzer runs (`fuzz/src/lib.rs`), so every test run checks them without
//! a fuzzer build. `scripts/fuzz` does the coverage-guided runs.

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        inputs += 1;
    }
    assert!(
        inputs >= 5,
        "{target}: only {inputs} corpus inputs in {}",
        dir.display()
    );
}

#[test]
fn json_log_corpus() {
    replay("json_log", targets::json_log);
}

#[test]
fn http_headers_corpus() {
    replay("http_headers", targets::http_headers);
}

#[test]
fn amqp_headers_corpus() {
    replay("amqp_headers", targets::amqp_headers);
}

#[test]
fn kafka_headers_corpus() {
    replay("kafka_headers", targets::kafka_headers);
}
