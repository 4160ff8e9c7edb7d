//! One integration-test binary (faster to link than one per file); modules by topic.

mod durability;
mod helpers;
mod proxy;
