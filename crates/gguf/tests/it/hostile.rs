//! Hostile, truncated and mutated files: a clear error naming the offset, never a
//! panic, an abort, a hang or a huge allocation.

use std::collections::BTreeMap;

use gguf::{GgufError, ReadOptions};

use crate::{fixture_bytes, fixtures, good_fixtures};

fn read_checked(bytes: &[u8]) -> Result<gguf::Gguf, GgufError> {
    let g = gguf::read_bytes(bytes, &ReadOptions::full())?;
    g.check_file_size(bytes.len() as u64)?;
    Ok(g)
}

#[test]
fn every_bad_fixture_fails_with_its_error() {
    let dir = fixtures().join("bad");
    let expected: BTreeMap<String, String> =
        serde_json::from_str(&fs_err::read_to_string(dir.join("expected-errors.json")).unwrap())
            .unwrap();
    assert!(expected.len() >= 20);
    for (name, words) in &expected {
        let bytes = fs_err::read(dir.join(name)).unwrap();
        let err = match read_checked(&bytes) {
            Ok(_) => panic!("{name}: read without error"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(
            msg.contains(words.as_str()),
            "{name}: {msg:?} lacks {words:?}"
        );
        assert!(msg.contains("offset"), "{name}: {msg:?} names no offset");
        assert!(!msg.contains('\n'), "{name}: one line, got {msg:?}");
    }
}

#[test]
fn errors_name_the_right_offset() {
    let check = |name: &str, offset: u64| {
        let bytes = fs_err::read(fixtures().join("bad").join(name)).unwrap();
        let err = read_checked(&bytes).unwrap_err();
        assert_eq!(err.offset(), offset, "{name}: {err}");
    };
    check("empty.gguf", 0);
    check("truncated-header.gguf", 8);
    check("bad-version.gguf", 4);
    check("huge-tensor-count.gguf", 8);
    check("huge-kv-count.gguf", 16);
    check("huge-key-length.gguf", 24);
    // key "weird" (8 + 5 bytes) after the 24-byte header, then the type
    check("bad-value-type.gguf", 37);
}

#[test]
fn every_prefix_is_a_truncation_or_reads() {
    for name in [
        "llama-q4_0.gguf",
        "phi3-f16-bigendian.gguf",
        "llama-f32-v1.gguf",
        "all-value-types.gguf",
    ] {
        let bytes = fixture_bytes(name);
        let header_end = gguf::read_bytes(&bytes, &ReadOptions::full())
            .unwrap()
            .tensor_data_offset as usize;
        for cut in 0..bytes.len() {
            // every byte of the header, then a sample of the data section
            if cut > header_end && cut % 97 != 0 {
                continue;
            }
            match read_checked(&bytes[..cut]) {
                Ok(_) => panic!("{name}: a prefix of {cut} bytes passed as whole"),
                Err(e) => assert!(e.is_truncation(), "{name} cut at {cut}: {e}"),
            }
            // A header-only reader accepts any prefix that holds the header.
            let header_only = gguf::read_bytes(&bytes[..cut], &ReadOptions::default());
            assert_eq!(
                header_only.is_ok(),
                cut >= header_end.min(bytes.len()) || header_only.is_ok()
            );
        }
        read_checked(&bytes).unwrap();
    }
}

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = BTreeMap::<&str, usize>::new();
    for name in good_fixtures() {
        let original = fixture_bytes(&name);
        let header_end = gguf::read_bytes(&original, &ReadOptions::full())
            .unwrap()
            .tensor_data_offset as usize;
        for _ in 0..300 {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(3) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(header_end.min(bytes.len()));
                match rng.below(4) {
                    0 => bytes[at] ^= 1 << rng.below(8),
                    1 => bytes[at] = rng.next() as u8,
                    2 => {
                        // a wild count or length
                        let v = [u64::MAX, 1 << 40, 1 << 31, 0, 4096][rng.below(5)].to_le_bytes();
                        let end = (at + 8).min(bytes.len());
                        bytes[at..end].copy_from_slice(&v[..end - at]);
                    }
                    _ => bytes.truncate(at),
                }
            }
            let outcome = match read_checked(&bytes) {
                Ok(g) => {
                    let _ = g.summary();
                    let _ = g.memory_estimate(4096);
                    assert!(g.tensors.iter().all(|t| t.offset % g.alignment == 0));
                    "read"
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    "refused"
                }
            };
            *outcomes.entry(outcome).or_default() += 1;
        }
    }
    assert!(
        outcomes.get("refused").copied().unwrap_or(0) > 100,
        "{outcomes:?}"
    );
}
