#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmkube_oci::fuzz::manifest(data));
