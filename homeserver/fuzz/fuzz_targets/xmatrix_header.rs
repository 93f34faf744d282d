#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confab_fuzz::xmatrix_header(data));
