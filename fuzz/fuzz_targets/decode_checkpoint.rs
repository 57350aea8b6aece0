#![no_main]
//! See `testkit::fuzz::decode::checkpoint_and_scan` for the input format and the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| testkit::fuzz::decode::checkpoint_and_scan(data));
