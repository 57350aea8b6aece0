#![no_main]
//! See `testkit::fuzz::ops::run` for the input format and the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| testkit::fuzz::ops::run(data));
