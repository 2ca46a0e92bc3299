//! The `Store` conformance suite against `MemoryStore`.
#![cfg(feature = "test-support")]

use hookway::store::MemoryStore;

hookway::store_conformance!(async { MemoryStore::new() });

#[tokio::test]
async fn run_all_passes_on_memory() {
    hookway::store::conformance::run_all(|| async { MemoryStore::new() }).await;
}
