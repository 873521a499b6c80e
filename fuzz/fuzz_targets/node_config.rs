#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmkube_contract::fuzz::node_config(data));
