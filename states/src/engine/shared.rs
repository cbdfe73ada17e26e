//! A run-scoped typed store: what several states observe once and share (the dpkg database,
//! one `systemctl show` for every managed unit), and what modules register at build time.
//! A module that changes the system invalidates what it changed, so the next plan observes
//! afresh. Plans run concurrently: askers of one `T` wait for the first one's answer rather
//! than each running the same child process.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;

type Value = Arc<dyn Any + Send + Sync>;
/// One `T`'s place: held while its value is being made.
type Slot = Arc<Mutex<Option<Value>>>;

#[derive(Default)]
pub struct Shared(Mutex<HashMap<TypeId, Slot>>);

/// A panic in another state's observation must not take the store down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// The stored `T`, made by `init` on first use.
    pub fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        self.try_get_or_init(|| Ok(init())).expect("infallible")
    }

    /// The stored `T`, made by `init` on first use; an error is returned and nothing stored
    /// (the next asker tries again). `init` may ask for other types, never for `T` itself.
    pub fn try_get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let slot = lock(&self.0).entry(TypeId::of::<T>()).or_default().clone();
        // Only this type's slot stays locked while `init` runs (a child process, a request).
        let mut value = lock(&slot);
        if let Some(v) = value.as_ref() {
            return Ok(v.clone().downcast::<T>().expect("keyed by type"));
        }
        let v: Arc<T> = Arc::new(init()?);
        *value = Some(v.clone());
        Ok(v)
    }

    /// Forget the stored `T`: the next `get` observes again.
    pub fn invalidate<T: Any>(&self) {
        lock(&self.0).remove(&TypeId::of::<T>());
    }
}

/// How many times this run has changed the system so far (the engine counts each apply and
/// each notification), so an observation can tell whether it may be out of date.
#[derive(Default)]
pub struct Changes(AtomicU64);

impl Changes {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// The run's count of changes made so far.
    pub fn changes(&self) -> Arc<Changes> {
        self.get_or_init(Changes::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn caches_until_invalidated() {
        let s = Shared::default();
        let mut calls = 0;
        assert_eq!(
            *s.get_or_init(|| {
                calls += 1;
                7u32
            }),
            7
        );
        assert_eq!(*s.get_or_init(|| 8u32), 7);
        s.invalidate::<u32>();
        assert_eq!(*s.get_or_init(|| 9u32), 9);
        assert!(s.try_get_or_init::<String>(|| anyhow::bail!("no")).is_err());
        assert_eq!(*s.get_or_init(|| String::from("ok")), "ok");
        assert_eq!(calls, 1);
    }

    #[test]
    fn concurrent_askers_share_one_observation() {
        let s = Shared::default();
        let calls = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let v = s.get_or_init(|| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        5u64
                    });
                    assert_eq!(*v, 5);
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
