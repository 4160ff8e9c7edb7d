//! Ids and wall-clock time outside the injected clock.

use std::sync::atomic::{AtomicU64, Ordering};

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A random id with a type prefix, e.g. `req_3f9a…`.
pub fn new_id(prefix: &str, bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    format!("{prefix}_{}", hex::encode(buf))
}

/// A request id that sorts by time: `req_` + 12 hex digits of the millisecond + 4 of a
/// per-process counter + 8 random (as long as the random ids before it). Records are keyed by
/// it, so each insert lands at the right edge of the primary-key B-tree instead of at a random
/// page; the counter orders ids within a millisecond, the random part keeps replicas apart.
pub fn request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = u64::try_from(now_ms()).unwrap_or(0) & 0xffff_ffff_ffff;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    let r: u32 = rand::random();
    format!("req_{ms:012x}{n:04x}{r:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_sized_like_random_ones_and_time_ordered() {
        let ids: Vec<String> = (0..1000).map(|_| request_id()).collect();
        assert!(ids
            .iter()
            .all(|id| id.len() == new_id("req", 12).len() && id.starts_with("req_")));
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        // Later ids sort after earlier ones, a millisecond apart or more.
        let a = request_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(request_id() > a);
    }
}
