//! See `logbus::fuzzing::load_index`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logbus::fuzzing::load_index(data));
