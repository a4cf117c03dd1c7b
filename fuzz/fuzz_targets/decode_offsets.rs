//! See `logbus::fuzzing::decode_offsets`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logbus::fuzzing::decode_offsets(data));
