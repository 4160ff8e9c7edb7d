//! One integration-test binary (faster to link than one per file); modules by topic.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attribution;
mod authz;
mod boundary;
mod bounds;
mod credits;
mod dashboard;
mod durability;
mod files;
mod grants;
mod helpers;
mod holds;
mod org_usage;
mod outage;
mod pg;
mod proxy;
mod refused;
mod replicas;
mod reprice;
mod responses;
mod retention;
mod stale;
mod store_copy;
mod upstream_limits;
mod usage;
mod webhooks;
