//! Any bytes through the GGUF reader: an error is fine, a panic, abort, hang or
//! huge allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for options in [gguf::ReadOptions::default(), gguf::ReadOptions::full()] {
        if let Ok(g) = gguf::read_bytes(data, &options) {
            let _ = g.check_file_size(data.len() as u64);
            let _ = g.summary();
            let _ = g.memory_estimate(1 << 20);
            let _ = g.memory_estimate(u64::MAX);
        }
    }
});
