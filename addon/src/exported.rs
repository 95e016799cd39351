//! Statics the kernel reads through raw pointers: module tables and their dependency list.

/// A static holding raw pointers, which the kernel reads: shared, never mutated by Rust.
///
/// Raw pointers are not `Sync`, so a static of them needs a wrapper that asserts it; only
/// [`Exported::new`], whose contract is exactly that assertion, makes one (the field is
/// private to this module).
#[repr(transparent)]
pub struct Exported<T>(T);

// SAFETY: `new` is the only constructor, and its caller guarantees the value may be read
// from any thread.
unsafe impl<T> Sync for Exported<T> {}

impl<T> Exported<T> {
    /// # Safety
    ///
    /// Nothing writes `value` after it is built (it holds no interior mutability that Rust
    /// code uses), and every pointer in it leads to data that is immutable or synchronised
    /// (atomics) and lives as long as the add-on: then any thread may read it.
    pub const unsafe fn new(value: T) -> Self {
        Exported(value)
    }

    pub const fn get(&self) -> &T {
        &self.0
    }
}
