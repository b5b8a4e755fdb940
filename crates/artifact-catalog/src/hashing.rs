//! The sha256 of an artifact's bytes, read once: of a file where it lies, or of bytes
//! on their way to a copy.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

const BLOCK: usize = 4 << 20;

/// The sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs_err::File::open(path)?;
    let (_, sha) = copy_hashing(&mut file, &mut std::io::sink(), &mut |_| {})?;
    Ok(sha)
}

/// Copies `src` to `dst` to the end, hashing on the way; `progress` hears the bytes
/// copied so far after each block. The size and the sha256 (lowercase hex).
pub fn copy_hashing(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<(u64, String)> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut done = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        done += n as u64;
        progress(done);
    }
    Ok((done, hex::encode(sha.finalize())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hash_of_known_bytes() {
        let mut out = Vec::new();
        let mut seen = 0;
        let (size, sha) =
            super::copy_hashing(&mut &b"abc"[..], &mut out, &mut |n| seen = n).unwrap();
        assert_eq!((size, seen, out.as_slice()), (3, 3, &b"abc"[..]));
        // FIPS 180-2's example
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
