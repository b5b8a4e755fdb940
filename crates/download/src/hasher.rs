//! sha256 of the partial file, computed on a thread of its own as the contiguous
//! prefix on disk grows: the bytes are read back while still in the page cache,
//! so verification costs no second read from disk and never slows the receivers.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

pub(crate) struct Hasher {
    tx: Option<mpsc::Sender<u64>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<(String, u64)>>>,
}

impl Hasher {
    /// A hasher that hashes nothing.
    pub(crate) fn off() -> Self {
        Self {
            tx: None,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    /// Starts hashing `file` from byte 0, up to each watermark it is sent.
    pub(crate) fn start(file: Arc<File>) -> Self {
        let (tx, rx) = mpsc::channel::<u64>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut sha = Sha256::new();
                let mut at = 0u64;
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(mut mark) = rx.recv() {
                    // take the newest watermark
                    while let Ok(m) = rx.try_recv() {
                        mark = mark.max(m);
                    }
                    while at < mark {
                        if stop2.load(Ordering::Relaxed) {
                            return Err(std::io::Error::other("stopped"));
                        }
                        let n =
                            usize::try_from((mark - at).min(buf.len() as u64)).unwrap_or(buf.len());
                        file.read_exact_at(&mut buf[..n], at)?;
                        sha.update(&buf[..n]);
                        at += n as u64;
                    }
                }
                Ok((hex::encode(sha.finalize()), at))
            })
            .ok();
        Self {
            tx: Some(tx),
            stop,
            thread,
        }
    }

    /// The bytes `[0, mark)` are on disk.
    pub(crate) fn advance(&self, mark: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(mark);
        }
    }

    /// Waits for the hash of everything sent so far: (hex, bytes hashed); `None`
    /// for a hasher that is off.
    pub(crate) fn finish(mut self) -> std::io::Result<Option<(String, u64)>> {
        let on = self.tx.take().is_some();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("hasher panicked")))
                .map(Some),
            None if on => Err(std::io::Error::other("could not start the hasher thread")),
            None => Ok(None),
        }
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx.take();
    }
}
