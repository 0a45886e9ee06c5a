//! One write at a time per cache key, inside this process. An add-only upload checks that
//! the key is absent and then writes it; two such uploads of different bytes racing on a
//! new key would both pass the check, and the second would replace the first. Holding the
//! key's lock across check and write closes that within one server. Across replicas the
//! registry offers no compare-and-swap on tags (docs/security.md says what that leaves).
//!
//! Entries exist only while a write holds or waits for them, so the table is bounded by
//! the writes in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct WriteLocks {
    held: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holds one key's lock; dropping it lets the next write of that key go on.
#[derive(Debug)]
pub struct WriteGuard {
    key: String,
    lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    held: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl WriteLocks {
    pub async fn lock(&self, key: String) -> WriteGuard {
        let mutex = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.entry(key.clone()).or_default().clone()
        };
        let lock = mutex.lock_owned().await;
        WriteGuard {
            key,
            lock: Some(lock),
            held: self.held.clone(),
        }
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.lock.take());
        // Nobody else holds or waits for it (the table's own reference is the only one).
        if held
            .get(&self.key)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            held.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_key_is_written_by_one_at_a_time_and_the_table_empties() {
        let locks = Arc::new(WriteLocks::default());
        let first = locks.lock("k".into()).await;
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock("k".into()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second write waits");
        let other = locks.lock("other".into()).await;
        drop(first);
        let second = waiting.await.unwrap();
        drop((second, other));
        assert!(locks.held.lock().unwrap().is_empty());
    }
}
