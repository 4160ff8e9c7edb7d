//! One integration-test binary (faster to link than one per file); modules by topic.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod credits;
mod durability;
mod helpers;
mod proxy;
mod refused;
mod usage;
