//! What a `no_std` Rust add-on needs from its environment: a heap over the kernel's malloc,
//! a panic handler that calls the kernel's `panic`, and the few symbols the precompiled
//! `core` refers to that the kernel does not export.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_void, CStr};

use super::kernel_imports as ki;

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
                ki::malloc(layout.size()).cast()
            } else {
                ki::memalign(layout.align(), layout.size()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above.
        unsafe { ki::free(ptr.cast()) }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap;

#[panic_handler]
fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let line =
        super::kernel::format_line("virtio_sound: ", format_args!("{}", info.message()), false);
    let message = CStr::from_bytes_until_nul(&line).unwrap_or(c"virtio_sound: panic");
    kernel_panic(message)
}

/// Stops in the kernel debugger with `message`. Haiku's `panic` returns when the user
/// continues from the debugger (`spec/haiku_driver.toml`), but the Rust code that panicked
/// cannot go on, so it stops there again.
fn kernel_panic(message: &CStr) -> ! {
    loop {
        // SAFETY: the kernel's panic with a literal "%s" format and a NUL-terminated
        // message that lives across the call.
        unsafe { ki::panic(c"%s".as_ptr(), message.as_ptr()) }
    }
}

/// The precompiled `core` was built for unwinding and names this; with panic=abort it is
/// never called. The kernel does not export it, so the add-on defines it.
#[no_mangle]
pub extern "C" fn rust_eh_personality() -> ! {
    kernel_panic(c"virtio_sound: rust_eh_personality called")
}

/// Referenced by the precompiled `core`'s unwinding paths; never reached with panic=abort.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    kernel_panic(c"virtio_sound: _Unwind_Resume called")
}

/// LLVM emits `bcmp` for byte comparisons on this target; the kernel exports only `memcmp`.
///
/// # Safety
///
/// `a` and `b` are valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const c_void, b: *const c_void, n: usize) -> i32 {
    // SAFETY: the caller's contract is memcmp's.
    unsafe { ki::memcmp(a, b, n) }
}
