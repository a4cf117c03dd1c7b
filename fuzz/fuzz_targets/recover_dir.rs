//! See `logbus::fuzzing::recover_dir` (run without `strict`: a fuzzer can
//! learn a CRC and forge a valid batch).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logbus::fuzzing::recover_dir(data, false));
