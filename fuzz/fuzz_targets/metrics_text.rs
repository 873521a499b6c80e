#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmkube_operator::fuzz::metrics_text(data));
