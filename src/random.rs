//! The crate's one source of randomness: the operating system's, through
//! `getrandom`.

/// Fills `buf` with random bytes for values that must be unique but need not
/// be secret (message ids). If the OS source fails, which it practically
/// never does, falls back to std's per-process random hash keys mixed with a
/// counter, so uniqueness holds and nothing panics.
pub(crate) fn fill(buf: &mut [u8]) {
    if getrandom::fill(buf).is_ok() {
        return;
    }
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for chunk in buf.chunks_mut(8) {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let word = RandomState::new().hash_one(n).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Fills `buf` with cryptographically secure random bytes (key material).
pub(crate) fn fill_secure(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}
