#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tracewire_fuzz::amqp_headers(data));
