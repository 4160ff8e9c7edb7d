//! Ids and wall-clock time outside the injected clock.

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
