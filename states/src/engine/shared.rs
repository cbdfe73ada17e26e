//! A run-scoped typed store: what several states observe once and share (the dpkg database,
//! one `systemctl show` for every managed unit), and what modules register at build time.
//! A module that changes the system invalidates what it changed, so the next plan observes
//! afresh. Plans run concurrently: askers of one `T` wait for the first one's answer rather
//! than each running the same child process.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;

type Value = Arc<dyn Any + Send + Sync>;
/// One `T`'s place: its value and the run's count of changes when it was made; held while the
/// value is being made.
type Slot = Arc<Mutex<Option<(Value, u64)>>>;

#[derive(Default)]
pub struct Shared {
    slots: Mutex<HashMap<TypeId, Slot>>,
    /// How many times this run has changed the system so far (the engine counts each apply and
    /// each notification).
    changes: AtomicU64,
    /// A dry run (`--check`): what a plan may keep for later runs (a password check that
    /// passed) is not written.
    check: AtomicBool,
}

/// A panic in another state's observation must not take the store down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// The stored `T`, made by `init` on first use: for what modules register and keep for the
    /// whole run.
    pub fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        self.cached(false, || Ok(init())).expect("infallible")
    }

    /// An observation of the system shared by the states of a run: made by `init` on first use
    /// and made again once the run has changed anything since (every plan is first made before
    /// anything changes, so an observation may predate a package install, a new user, a
    /// started unit). An error is returned and nothing stored (the next asker tries again).
    /// `init` may ask for other types, never for `T` itself.
    pub fn observe<T: Any + Send + Sync>(&self, init: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        self.cached(true, init)
    }

    fn cached<T: Any + Send + Sync>(&self, fresh: bool, init: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let slot = lock(&self.slots).entry(TypeId::of::<T>()).or_default().clone();
        // Only this type's slot stays locked while `init` runs (a child process, a request):
        // concurrent askers of one `T` wait for the first one's answer.
        let mut value = lock(&slot);
        let now = self.changes();
        if let Some((v, made_at)) = value.as_ref() {
            if !fresh || *made_at == now {
                return Ok(v.clone().downcast::<T>().expect("keyed by type"));
            }
        }
        let v: Arc<T> = Arc::new(init()?);
        *value = Some((v.clone(), now));
        Ok(v)
    }

    /// Forget the stored `T`: the next `get` observes again.
    pub fn invalidate<T: Any>(&self) {
        lock(&self.slots).remove(&TypeId::of::<T>());
    }

    /// Set by the engine as a run starts.
    pub fn set_check(&self, check: bool) {
        self.check.store(check, Ordering::SeqCst);
    }

    pub fn is_check(&self) -> bool {
        self.check.load(Ordering::SeqCst)
    }

    /// The run's count of changes so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Called by the engine before each apply and notification: every observation is made
    /// again when next asked for.
    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
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
        assert!(s.observe::<String>(|| anyhow::bail!("no")).is_err());
        assert_eq!(*s.observe(|| Ok(String::from("ok"))).unwrap(), "ok");
        assert_eq!(calls, 1);
    }

    #[test]
    fn observations_are_made_again_after_a_change_registrations_are_kept() {
        let s = Shared::default();
        assert_eq!(*s.get_or_init(|| 1u32), 1);
        assert_eq!(*s.observe(|| Ok(String::from("before"))).unwrap(), "before");
        assert_eq!(*s.observe(|| Ok(String::from("again"))).unwrap(), "before");
        s.changed();
        assert_eq!(*s.observe(|| Ok(String::from("after"))).unwrap(), "after");
        assert_eq!(*s.get_or_init(|| 2u32), 1);
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
