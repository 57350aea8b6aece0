#![no_main]
//! See `testkit::fuzz::decode::attributes` for the input format and the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| testkit::fuzz::decode::attributes(data));
