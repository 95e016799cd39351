//! What a `no_std` Rust add-on needs from its environment: a heap over the kernel's malloc,
//! a panic handler that calls the kernel's `panic`, and the few symbols the precompiled
//! `core` refers to that the kernel does not export.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use super::ffi;

/// The kernel heap. Blocks may sleep: never allocate with interrupts disabled (the engine's
/// interrupt path does not allocate).
pub struct KernelHeap;

// SAFETY: malloc/memalign return blocks of at least the requested size and alignment (or
// NULL), and `free` releases exactly what they returned.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain value arguments; NULL is a valid failure answer for GlobalAlloc.
        unsafe {
            if layout.align() <= 8 {
                ffi::malloc(layout.size()).cast()
            } else {
                ffi::memalign(layout.align(), layout.size()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above.
        unsafe { ffi::free(ptr.cast()) }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap;

#[panic_handler]
fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let line =
        super::kernel::format_line("virtio_sound: ", format_args!("{}", info.message()), false);
    // SAFETY: the kernel's panic with a literal "%s" format and a NUL-terminated message;
    // it does not return.
    unsafe { ffi::panic(c"%s".as_ptr(), line.as_ptr()) }
}

/// The precompiled `core` was built for unwinding and names this; with panic=abort it is
/// never called. The kernel does not export it, so the add-on defines it.
#[no_mangle]
pub extern "C" fn rust_eh_personality() -> ! {
    // SAFETY: as in `on_panic`.
    unsafe { ffi::panic(c"virtio_sound: rust_eh_personality called".as_ptr()) }
}

/// Referenced by the precompiled `core`'s unwinding paths; never reached with panic=abort.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    // SAFETY: as in `on_panic`.
    unsafe { ffi::panic(c"virtio_sound: _Unwind_Resume called".as_ptr()) }
}

/// LLVM emits `bcmp` for byte comparisons on this target; the kernel exports only `memcmp`.
///
/// # Safety
///
/// `a` and `b` are valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const c_void, b: *const c_void, n: usize) -> i32 {
    // SAFETY: the caller's contract is memcmp's.
    unsafe { ffi::memcmp(a, b, n) }
}
