//! The crate's one poison-tolerant lock helper.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, using the data of a poisoned lock too. Every lock in this crate guards
/// state that is kept consistent at each point where a panic can escape (no invariant
/// is broken across a call that may panic), so a panic in one task does not leave the
/// others unable to proceed.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
