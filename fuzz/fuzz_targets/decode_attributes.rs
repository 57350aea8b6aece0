#![no_main]
//! See `lanelog_fuzz::decode::attributes` for the input format and the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lanelog_fuzz::decode::attributes(data));
