//! A run-scoped typed store: what several states observe once and share (the dpkg database,
//! one `systemctl show` for every managed unit), and what modules register at build time.
//! A module that changes the system invalidates what it changed, so the next plan observes
//! afresh.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;

#[derive(Default)]
pub struct Shared(Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

impl Shared {
    /// The stored `T`, made by `init` on first use.
    pub fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        self.try_get_or_init(|| Ok(init())).expect("infallible")
    }

    /// The stored `T`, made by `init` on first use; an error is returned and nothing stored.
    pub fn try_get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        if let Some(v) = self.0.lock().unwrap().get(&TypeId::of::<T>()) {
            return Ok(v.clone().downcast::<T>().expect("keyed by type"));
        }
        // Not under the lock: `init` may run a child process.
        let v: Arc<T> = Arc::new(init()?);
        self.0.lock().unwrap().insert(TypeId::of::<T>(), v.clone());
        Ok(v)
    }

    /// Forget the stored `T`: the next `get` observes again.
    pub fn invalidate<T: Any>(&self) {
        self.0.lock().unwrap().remove(&TypeId::of::<T>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
