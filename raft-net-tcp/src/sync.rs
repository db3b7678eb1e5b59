//! The one lock helper of the crate.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, going on with the data if a thread panicked while holding it (every
/// critical section leaves the data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
