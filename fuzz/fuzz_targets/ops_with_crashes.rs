#![no_main]
//! See `lanelog_fuzz::ops::run` for the input format and the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lanelog_fuzz::ops::run(data));
