//! See `logbus::fuzzing::decode_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logbus::fuzzing::decode_config(data));
