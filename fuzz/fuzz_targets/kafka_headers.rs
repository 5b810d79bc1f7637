#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tracewire_fuzz::kafka_headers(data));
