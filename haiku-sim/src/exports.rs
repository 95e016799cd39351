//! The kernel symbols a Haiku add-on imports, implemented over the current [`Environment`].
//!
//! Every `[[import]]` of `spec/haiku_driver.toml` (the generated [`hd::KERNEL_IMPORTS`]) is
//! here: the non-variadic ones as `sim_<name>` Rust functions with the C signature the table
//! gives, the variadic ones (`dprintf`, `kprintf`, `panic`, `snprintf`) in `shim.c`. None is `#[no_mangle]`: the
//! loader binds the add-on's imports by address through [`kernel_symbols`], so the host's own
//! `malloc` or `memcpy` are never interposed.
//!
//! Each function works on the environment that is alive in this process (there is at most
//! one: see [`Environment::new`]): inside an ioctl or a queue interrupt's callback the one
//! the simulator entered the add-on for (`entered`), elsewhere found by lookup. It behaves
//! as Haiku does where the add-on can observe it (status codes, out parameters, NULL
//! handling), with the checks a KDEBUG kernel makes recorded as failures instead of panics. A function called when no environment is alive
//! (an add-on thread that outlived its environment) prints that and fails the call.
//!
//! [`Environment`]: super::Environment
//! [`Environment::new`]: super::Environment::new

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{fence, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use platform::{Kernel, Status};
use spec::haiku_driver::{
    self as hd, area_id, bigtime_t, cpu_status, interrupt_handler, sem_id, ssize_t, status_t,
    team_id, thread_func, thread_id, timer_hook, ModuleInfo, PhysicalEntry, Spinlock, Timer,
};
use spec::kernel_import::{HaikuRelease, SymbolType};

use super::abi::{FnSig, Signed};
use super::heap::FreeError;
use super::meter::{self, Site};
use super::user::{fault_copy, kernel_read_cstr};
use super::{current, with_env, Core};
use sim_kernel::memory::{SimCode, PAGE_SIZE};
use sim_kernel::report::lock;
use sim_kernel::Cpu;

/// The ELF type a kernel symbol has (the loader requires the add-on's reference to match).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymKind {
    Func,
    Object,
}

/// `B_FILE_EXISTS`, which the spec's status list does not carry.
pub(crate) const B_FILE_EXISTS: status_t = hd::B_FILE_ERROR + 2;

/// Longest string the simulator reads through a kernel pointer before giving up.
const MAX_KERNEL_STRING: usize = 64 << 10;

// ---- the C side ----

extern "C" {
    fn sim_haiku_set_sink(sink: unsafe extern "C" fn(c_int, *const c_char, usize));
    fn sim_haiku_dprintf(format: *const c_char, ...);
    fn sim_haiku_kprintf(format: *const c_char, ...);
    fn sim_haiku_panic(format: *const c_char, ...);
    fn sim_haiku_snprintf(buffer: *mut c_char, size: usize, format: *const c_char, ...) -> c_int;
}

/// Registers [`sink`] with the C shim (once per process).
pub(crate) fn install_sink() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: `sink` has the signature the shim expects and lives for the process.
        unsafe { sim_haiku_set_sink(sink) }
    });
}

/// Where the shim's formatted text goes: kind 0 `dprintf`, 1 `kprintf`, 2 `panic`.
unsafe extern "C" fn sink(kind: c_int, text: *const c_char, len: usize) {
    let _sim = SimCode::enter();
    let bytes = if text.is_null() {
        &[][..]
    } else {
        // SAFETY: the shim passes its formatted buffer of `len` bytes.
        unsafe { std::slice::from_raw_parts(text.cast::<u8>(), len) }
    };
    let text = String::from_utf8_lossy(bytes);
    let core = current();
    match kind {
        2 => kernel_panic(core.as_deref(), &text),
        _ => match core {
            Some(core) => core.dprintf(&text, kind == 1),
            None => eprint!("[dprintf, no environment] {text}"),
        },
    }
}

/// Haiku's `panic`: the system would stop in the kernel debugger. The simulator cannot go
/// back into the add-on (the call does not return, and unwinding through its frames is not
/// possible), so it records the message, prints it with everything recorded so far, and
/// aborts the process.
fn kernel_panic(core: Option<&Core>, message: &str) -> ! {
    let message = message.trim_end();
    eprintln!("\nsim: KERNEL PANIC (the add-on called panic): {message}");
    if let Some(core) = core {
        core.record(format!("kernel panic: {message}"));
        for f in core.kernel.failures() {
            eprintln!("  recorded: {f}");
        }
        for line in core.kernel.log_lines().iter().rev().take(20).rev() {
            eprintln!("  log: {line}");
        }
    }
    eprintln!("sim: the simulated kernel stops here (abort)");
    std::process::abort()
}

// ---- the symbol table ----

/// The kernel symbols `release`'s kernel exports: [`kernel_symbols`] without those the
/// table marks as the other release's only (`only_in`). An add-on importing one of those
/// is refused by the loader, as Haiku's refuses it (`B_MISSING_SYMBOL`).
pub fn kernel_symbols_of(release: HaikuRelease) -> Vec<(String, u64, SymKind)> {
    let exported: Vec<&str> = hd::KERNEL_IMPORTS
        .iter()
        .filter(|i| i.exported_by(release))
        .map(|i| i.name)
        .collect();
    kernel_symbols()
        .into_iter()
        .filter(|(name, _, _)| exported.contains(&name.as_str()))
        .collect()
}

/// Every kernel symbol of the import table ([`hd::KERNEL_IMPORTS`], generated from
/// `spec/haiku_driver.toml`), of either release, with the address of its implementation. Panics if the table
/// names a symbol the simulator does not implement, or implements with another ELF type or
/// another C signature: the loader would bind the add-on to nothing, or to a function that
/// reads its arguments wrongly.
pub fn kernel_symbols() -> Vec<(String, u64, SymKind)> {
    install_sink();
    static TABLE: OnceLock<Vec<(String, u64, SymKind)>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let mut missing = Vec::new();
            let mut table = Vec::new();
            for import in hd::KERNEL_IMPORTS {
                let want = match import.elf {
                    SymbolType::Func => SymKind::Func,
                    SymbolType::Object => SymKind::Object,
                };
                match implementation(import.name) {
                    Some(i) if i.kind != want => missing.push(format!(
                        "{} is {want:?} in the table but {:?} in the simulator",
                        import.name, i.kind
                    )),
                    Some(i) => {
                        if let (Some(have), Some(want)) = (&i.signature, FnSig::of(&import.signature)) {
                            for d in have.differences(&want) {
                                missing.push(format!("{} ({}): {d}", import.name, import.c));
                            }
                        }
                        table.push((import.name.to_string(), i.address, i.kind));
                    }
                    None => missing.push(format!("{} has no implementation", import.name)),
                }
            }
            assert!(
                missing.is_empty(),
                "haiku_sim::exports does not cover the import table of spec/haiku_driver.toml:\n  {}",
                missing.join("\n  ")
            );
            table
        })
        .clone()
}

/// The stack protector canary (`__stack_chk_guard`, a C `long`).
static STACK_CHK_GUARD: AtomicI64 = AtomicI64::new(0x5ca1_ab1e_0ddb_a11d);

/// What the simulator has for one kernel symbol.
pub struct Implementation {
    pub address: u64,
    pub kind: SymKind,
    /// A function's C signature, read back from its Rust type.
    pub signature: Option<FnSig>,
}

/// The implementation of kernel symbol `name`. Each function is first coerced to the
/// table's type of its symbol (`hd::kernel_symbol::NAME`), so an implementation whose Rust
/// signature differs from the generated one does not compile. `create_sem` takes
/// `(int32_t count, const char *name)` and returns a `sem_id`:
///
/// ```
/// extern "C" fn right(count: i32, name: *const std::ffi::c_char) -> i32 { 0 }
/// let _: spec::haiku_driver::kernel_symbol::create_sem = right;
/// ```
///
/// ```compile_fail
/// extern "C" fn wrong(count: i64, name: *const std::ffi::c_char) -> i32 { 0 }
/// let _: spec::haiku_driver::kernel_symbol::create_sem = wrong;
/// ```
pub fn implementation(name: &str) -> Option<Implementation> {
    macro_rules! functions {
        ($($symbol:ident => $implementation:expr,)*) => {
            match name {
                $(stringify!($symbol) => {
                    let f: hd::kernel_symbol::$symbol = $implementation;
                    Some(Implementation {
                        address: f as usize as u64,
                        kind: SymKind::Func,
                        signature: Some(<hd::kernel_symbol::$symbol as Signed>::signature()),
                    })
                })*
                "__stack_chk_guard" => {
                    // The canary holds exactly the table's type.
                    let _: fn(hd::kernel_symbol::__stack_chk_guard) -> AtomicI64 = AtomicI64::new;
                    Some(Implementation {
                        address: STACK_CHK_GUARD.as_ptr() as u64,
                        kind: SymKind::Object,
                        signature: None,
                    })
                }
                _ => None,
            }
        };
    }
    functions! {
        create_sem => sim_create_sem,
        delete_sem => sim_delete_sem,
        acquire_sem => sim_acquire_sem,
        acquire_sem_etc => sim_acquire_sem_etc,
        release_sem => sim_release_sem,
        release_sem_etc => sim_release_sem_etc,
        get_sem_count => sim_get_sem_count,
        create_area => sim_create_area,
        delete_area => sim_delete_area,
        area_for => sim_area_for,
        clone_area => sim_clone_area,
        get_memory_map => sim_get_memory_map,
        get_memory_map_etc => sim_get_memory_map_etc,
        map_physical_memory => sim_map_physical_memory,
        lock_memory => sim_lock_memory,
        unlock_memory => sim_unlock_memory,
        user_memcpy => sim_user_memcpy,
        user_memset => sim_user_memset,
        user_strlcpy => sim_user_strlcpy,
        malloc => sim_malloc,
        calloc => sim_calloc,
        realloc => sim_realloc,
        free => sim_free,
        memalign => sim_memalign,
        memcpy => sim_memcpy,
        memmove => sim_memmove,
        memset => sim_memset,
        memcmp => sim_memcmp,
        strlen => sim_strlen,
        strnlen => sim_strnlen,
        strcmp => sim_strcmp,
        strncmp => sim_strncmp,
        strcpy => sim_strcpy,
        strlcpy => sim_strlcpy,
        strlcat => sim_strlcat,
        strerror => sim_strerror,
        ffsl => sim_ffsl,
        snprintf => sim_haiku_snprintf,
        dprintf => sim_haiku_dprintf,
        kprintf => sim_haiku_kprintf,
        panic => sim_haiku_panic,
        kernel_debugger => sim_kernel_debugger,
        system_time => sim_system_time,
        system_time_nsecs => sim_system_time_nsecs,
        real_time_clock_usecs => sim_real_time_clock_usecs,
        snooze => sim_snooze,
        snooze_etc => sim_snooze_etc,
        snooze_until => sim_snooze_until,
        spin => sim_spin,
        add_timer => sim_add_timer,
        cancel_timer => sim_cancel_timer,
        disable_interrupts => sim_disable_interrupts,
        restore_interrupts => sim_restore_interrupts,
        acquire_spinlock => sim_acquire_spinlock,
        try_acquire_spinlock => sim_try_acquire_spinlock,
        release_spinlock => sim_release_spinlock,
        memory_read_barrier => sim_memory_read_barrier,
        memory_write_barrier => sim_memory_write_barrier,
        install_io_interrupt_handler => sim_install_io_interrupt_handler,
        remove_io_interrupt_handler => sim_remove_io_interrupt_handler,
        spawn_kernel_thread => sim_spawn_kernel_thread,
        resume_thread => sim_resume_thread,
        wait_for_thread => sim_wait_for_thread,
        find_thread => sim_find_thread,
        load_driver_settings => sim_load_driver_settings,
        unload_driver_settings => sim_unload_driver_settings,
        get_driver_parameter => sim_get_driver_parameter,
        get_driver_boolean_parameter => sim_get_driver_boolean_parameter,
        get_module => sim_get_module,
        put_module => sim_put_module,
        __stack_chk_fail => sim_stack_chk_fail,
    }
}

// ---- helpers ----

/// Runs `f` on the current environment for the export `site` (counted, see [`meter`]);
/// without one, says so and returns `dead`.
fn with_core<R>(site: Site, dead: R, f: impl FnOnce(&Arc<Core>) -> R) -> R {
    let _sim = SimCode::enter();
    site.count();
    // Inside an ioctl or an interrupt callback the environment is known already; an
    // add-on thread, a timer or a hook looks it up.
    with_env(|core| match core {
        Some(core) => f(core),
        None => {
            let what = site.name();
            eprintln!("sim: the add-on called {what} while no Haiku environment is alive");
            dead
        }
    })
}

/// [`with_core`] for the exports every exchange calls: inside a call into the add-on, `f`
/// runs on the entered environment and this thread's CPU with no guard around it, so it
/// must not allocate on its own path (what records a misuse, waits or allocates is out of
/// line, as the simulator's own code). Elsewhere the environment is entered and `again`
/// makes the same call again ([`crate::with_env_cpu`]), counted then.
#[inline(always)]
fn on_cpu<R>(
    site: Site,
    dead: R,
    again: impl FnOnce() -> R,
    f: impl FnOnce(&Core, Cpu<'_>) -> R,
) -> R {
    crate::with_env_cpu(site, dead, again, |core, cpu| {
        site.count();
        f(core, cpu)
    })
}

fn status(r: Result<(), Status>) -> status_t {
    match r {
        Ok(()) => hd::B_OK,
        Err(s) => s.0,
    }
}

/// A kernel C string argument, copied; `None` for NULL or unreadable memory.
///
/// # Safety
///
/// `p` is NULL or points to readable memory (read fault-safely anyway).
pub(crate) unsafe fn c_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let bytes = kernel_read_cstr(p as u64, MAX_KERNEL_STRING).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

// ---- semaphores ----

/// Creates a semaphore; its name is copied (NULL gives Haiku's "unnamed semaphore").
///
/// # Safety
///
/// `name` is NULL or a NUL-terminated string.
pub unsafe extern "C" fn sim_create_sem(count: i32, name: *const c_char) -> sem_id {
    with_core(
        const { Site::kernel("create_sem") },
        hd::B_NO_MORE_SEMS,
        |core| {
            // SAFETY: the caller's string argument.
            let name = unsafe { c_string(name) }.unwrap_or_else(|| "unnamed semaphore".into());
            match core.kernel.create_sem(count, &name) {
                Ok(s) => s,
                Err(e) => e.0,
            }
        },
    )
}

/// Deletes a semaphore; `B_BAD_SEM_ID` if it does not exist (recorded too).
pub extern "C" fn sim_delete_sem(id: sem_id) -> status_t {
    with_core(
        const { Site::kernel("delete_sem") },
        hd::B_BAD_SEM_ID,
        |core| {
            let exists = core.kernel.sem_count(id).is_some();
            // Deleting a dead one still goes to the kernel, which records the misuse.
            core.kernel.delete_sem(id);
            if exists {
                hd::B_OK
            } else {
                hd::B_BAD_SEM_ID
            }
        },
    )
}

pub extern "C" fn sim_acquire_sem(id: sem_id) -> status_t {
    sim_acquire_sem_etc(id, 1, 0, 0)
}

/// Haiku's `acquire_sem_etc`: `count` units, with a relative or absolute timeout or none;
/// `B_CAN_INTERRUPT` is accepted (nothing interrupts a simulated wait). One unit that is
/// there is taken at once ([`Cpu::take_sem_at_once`]); anything else waits
/// ([`acquire_sem_waiting`]).
pub extern "C" fn sim_acquire_sem_etc(
    id: sem_id,
    count: i32,
    flags: u32,
    timeout: bigtime_t,
) -> status_t {
    on_cpu(
        const { Site::kernel("acquire_sem_etc") },
        hd::B_BAD_SEM_ID,
        move || sim_acquire_sem_etc(id, count, flags, timeout),
        move |core, cpu| {
            if count <= 0 {
                return hd::B_BAD_VALUE;
            }
            let relative = flags & hd::B_RELATIVE_TIMEOUT != 0;
            let absolute = flags & hd::B_ABSOLUTE_TIMEOUT != 0;
            if relative && absolute {
                return hd::B_BAD_VALUE;
            }
            // A relative timeout of zero (or less) is a poll, not a wait.
            let waits = !(relative && timeout <= 0);
            if count == 1 {
                if let Some(r) = cpu.take_sem_at_once(id, waits) {
                    return status(r);
                }
            }
            acquire_sem_waiting(core, id, count, relative, absolute, timeout)
        },
    )
}

/// [`sim_acquire_sem_etc`] past its first look: several units are taken one at a time
/// within the one deadline, and given back if the deadline passes.
#[cold]
#[inline(never)]
fn acquire_sem_waiting(
    core: &Core,
    id: sem_id,
    count: i32,
    relative: bool,
    absolute: bool,
    timeout: bigtime_t,
) -> status_t {
    // The kernel's waiting and releasing paths enter `SimCode` themselves.
    let k = &core.kernel;
    if k.sem_count(id).is_none() {
        return hd::B_BAD_SEM_ID;
    }
    // The deadline in simulated time; None waits forever.
    let now = k.system_time();
    let deadline = if relative {
        if timeout == hd::B_INFINITE_TIMEOUT {
            None
        } else {
            Some(now.saturating_add(timeout.max(0)))
        }
    } else if absolute {
        (timeout != hd::B_INFINITE_TIMEOUT).then_some(timeout)
    } else {
        None
    };
    let mut taken = 0;
    while taken < count {
        let wait = match deadline {
            None => -1,
            Some(d) => (d - k.system_time()).max(0),
        };
        match meter::waiting(|| k.acquire_sem(id, wait)) {
            Ok(()) => taken += 1,
            Err(e) => {
                for _ in 0..taken {
                    k.release_sem(id, true);
                }
                // Only a relative timeout of zero is a poll; a deadline that passed
                // (before the call or while some units were taken) is a timeout.
                if e.0 == hd::B_WOULD_BLOCK && (absolute || (relative && timeout > 0)) {
                    return hd::B_TIMED_OUT;
                }
                return e.0;
            }
        }
    }
    hd::B_OK
}

pub extern "C" fn sim_release_sem(id: sem_id) -> status_t {
    sim_release_sem_etc(id, 1, 0)
}

/// Haiku's `release_sem_etc`. `B_DO_NOT_RESCHEDULE` is what makes it legal with interrupts
/// disabled. `B_RELEASE_ALL` and `B_RELEASE_IF_WAITING_ONLY` depend on the waiter count,
/// which the simulated semaphores do not keep: they are recorded as unsupported.
pub extern "C" fn sim_release_sem_etc(id: sem_id, count: i32, flags: u32) -> status_t {
    on_cpu(
        const { Site::kernel("release_sem_etc") },
        hd::B_BAD_SEM_ID,
        move || sim_release_sem_etc(id, count, flags),
        move |core, cpu| {
            if flags & (hd::B_RELEASE_ALL | hd::B_RELEASE_IF_WAITING_ONLY) != 0 {
                release_not_simulated(core, id, count, flags);
            }
            if count <= 0 && flags & hd::B_RELEASE_ALL == 0 {
                return hd::B_BAD_VALUE;
            }
            let no_resched = flags & hd::B_DO_NOT_RESCHEDULE != 0;
            status(cpu.release_sem_units(id, count.max(1), no_resched))
        },
    )
}

#[cold]
#[inline(never)]
fn release_not_simulated(core: &Core, id: sem_id, count: i32, flags: u32) {
    let _sim = SimCode::enter();
    core.record(format!(
        "release_sem_etc({id}, {count}, {flags:#x}): B_RELEASE_ALL and \
         B_RELEASE_IF_WAITING_ONLY are not simulated"
    ));
}

/// The current count (never negative here: waiters are not counted).
///
/// # Safety
///
/// `thread_count` is NULL or writable.
pub unsafe extern "C" fn sim_get_sem_count(id: sem_id, thread_count: *mut i32) -> status_t {
    with_core(
        const { Site::kernel("get_sem_count") },
        hd::B_BAD_SEM_ID,
        |core| {
            if thread_count.is_null() {
                return hd::B_BAD_VALUE;
            }
            match core.kernel.sem_count(id) {
                Some(c) => {
                    // SAFETY: checked non-NULL; the caller's out parameter.
                    unsafe { *thread_count = c };
                    hd::B_OK
                }
                None => hd::B_BAD_SEM_ID,
            }
        },
    )
}

// ---- areas ----

/// Haiku's `create_area` in the kernel address space. Every area is carved from the
/// simulator's physical arena, so it is always contiguous, resident and below 4 GiB: every
/// lock type is honoured except `B_LOMEM` (below 16 MiB), which is refused. The address
/// specs that choose the address (`B_ANY_*`, `B_RANDOMIZED_ANY_ADDRESS`) are honoured;
/// `B_EXACT_ADDRESS`, `B_BASE_ADDRESS` and `B_CLONE_ADDRESS` cannot be (the arena decides
/// where an area goes) and fail with `B_NO_MEMORY`, recorded as unsupported.
///
/// # Safety
///
/// `name` is NULL or a string; `start_address` is NULL or a readable, writable pointer.
pub unsafe extern "C" fn sim_create_area(
    name: *const c_char,
    start_address: *mut *mut c_void,
    address_spec: u32,
    size: usize,
    lock_type: u32,
    protection: u32,
) -> area_id {
    with_core(
        const { Site::kernel("create_area") },
        hd::B_NO_MEMORY,
        |core| {
            // SAFETY: the caller's string argument.
            let name = unsafe { c_string(name) }.unwrap_or_else(|| "unnamed area".into());
            if start_address.is_null() {
                return hd::B_BAD_VALUE;
            }
            match address_spec {
                hd::B_ANY_ADDRESS
                | hd::B_ANY_KERNEL_ADDRESS
                | hd::B_ANY_KERNEL_BLOCK_ADDRESS
                | hd::B_RANDOMIZED_ANY_ADDRESS => {}
                hd::B_EXACT_ADDRESS
                | hd::B_BASE_ADDRESS
                | hd::B_CLONE_ADDRESS
                | hd::B_RANDOMIZED_BASE_ADDRESS => {
                    core.record(format!(
                        "create_area({name:?}) with address spec {address_spec}: the simulator \
                     cannot place an area at a given address"
                    ));
                    return hd::B_NO_MEMORY;
                }
                _ => return hd::B_BAD_VALUE,
            }
            match lock_type {
                hd::B_NO_LOCK
                | hd::B_LAZY_LOCK
                | hd::B_FULL_LOCK
                | hd::B_CONTIGUOUS
                | hd::B_32_BIT_FULL_LOCK
                | hd::B_32_BIT_CONTIGUOUS => {}
                hd::B_LOMEM => {
                    core.record(format!(
                        "create_area({name:?}, B_LOMEM): the simulated physical memory has no \
                     pages below 16 MiB"
                    ));
                    return hd::B_NO_MEMORY;
                }
                _ => return hd::B_BAD_VALUE,
            }
            let kernel_bits =
                hd::B_KERNEL_READ_AREA | hd::B_KERNEL_WRITE_AREA | hd::B_KERNEL_EXECUTE_AREA;
            // fix_protection: user bits imply the kernel ones when no kernel bit is given.
            let effective = if protection & kernel_bits == 0 {
                protection
                    | if protection & hd::B_READ_AREA != 0 {
                        hd::B_KERNEL_READ_AREA
                    } else {
                        0
                    }
                    | if protection & hd::B_WRITE_AREA != 0 {
                        hd::B_KERNEL_WRITE_AREA
                    } else {
                        0
                    }
            } else {
                protection
            };
            if effective & hd::B_KERNEL_WRITE_AREA != 0
                && effective & (hd::B_KERNEL_EXECUTE_AREA | hd::B_EXECUTE_AREA) != 0
            {
                core.record(format!(
                "create_area({name:?}) writable and executable: Haiku panics on W+X kernel areas"
            ));
                return hd::B_NOT_ALLOWED;
            }
            let user = protection & (hd::B_READ_AREA | hd::B_WRITE_AREA) != 0;
            match core.kernel.create_area(&name, size, user) {
                Ok(area) => {
                    // SAFETY: checked non-NULL; the caller's in/out parameter.
                    unsafe { *start_address = area.addr as usize as *mut c_void };
                    area.id
                }
                Err(e) => e.0,
            }
        },
    )
}

/// Deletes an area by id; `B_BAD_VALUE` (and a recorded misuse) if there is none.
pub extern "C" fn sim_delete_area(id: area_id) -> status_t {
    with_core(
        const { Site::kernel("delete_area") },
        hd::B_BAD_VALUE,
        |core| match core.kernel.areas().into_iter().find(|a| a.id == id) {
            Some(a) => {
                core.kernel.delete_area(&a.to_area());
                hd::B_OK
            }
            None => {
                core.record(format!(
                    "delete_area({id}) of an area that does not exist (deleted twice?)"
                ));
                hd::B_BAD_VALUE
            }
        },
    )
}

/// The area containing `address`, or `B_ERROR`.
pub extern "C" fn sim_area_for(address: *mut c_void) -> area_id {
    with_core(const { Site::kernel("area_for") }, hd::B_ERROR, |core| {
        let a = address as u64;
        core.kernel
            .areas()
            .into_iter()
            .find(|i| a >= i.addr && a - i.addr < i.size as u64)
            .map_or(hd::B_ERROR, |i| i.id)
    })
}

/// Cloning is not simulated: `B_BAD_VALUE` for a source that does not exist, otherwise
/// `B_NOT_SUPPORTED` (a caller must handle clone_area failing anyway).
///
/// # Safety
///
/// No pointer is dereferenced.
pub unsafe extern "C" fn sim_clone_area(
    _name: *const c_char,
    _dest_address: *mut *mut c_void,
    _address_spec: u32,
    _protection: u32,
    source: area_id,
) -> area_id {
    with_core(
        const { Site::kernel("clone_area") },
        hd::B_BAD_VALUE,
        |core| {
            if core.kernel.areas().iter().any(|a| a.id == source) {
                core.log("[sim] clone_area is not simulated: B_NOT_SUPPORTED");
                hd::B_NOT_SUPPORTED
            } else {
                hd::B_BAD_VALUE
            }
        },
    )
}

/// Haiku's `get_memory_map` for a range inside one area (areas are contiguous, so it is
/// always one entry). Memory outside every area (heap blocks, stacks) has no simulated
/// physical address: `B_BAD_ADDRESS`, recorded.
///
/// # Safety
///
/// `table` is NULL or has room for `num_entries` entries.
pub unsafe extern "C" fn sim_get_memory_map(
    address: *const c_void,
    size: usize,
    table: *mut PhysicalEntry,
    num_entries: i32,
) -> i32 {
    with_core(
        const { Site::kernel("get_memory_map") },
        hd::B_BAD_VALUE,
        |core| {
            if table.is_null() || num_entries <= 0 || size == 0 {
                return hd::B_BAD_VALUE;
            }
            let a = address as u64;
            let area = core.kernel.areas().into_iter().find(|i| {
                a >= i.addr
                    && a - i.addr < i.size as u64
                    && (a - i.addr) + size as u64 <= i.size as u64
            });
            let Some(area) = area else {
                core.record(format!(
                    "get_memory_map({a:#x}, {size}) of memory outside every area: the simulator \
                 has physical addresses only for areas"
                ));
                return hd::B_BAD_ADDRESS;
            };
            let entry = PhysicalEntry {
                address: area.phys + (a - area.addr),
                size: size as u64,
            };
            // SAFETY: `table` has at least one entry (checked), and a second when
            // num_entries > 1: Haiku terminates a multi-entry table with an empty entry.
            unsafe {
                *table = entry;
                if num_entries > 1 {
                    *table.add(1) = PhysicalEntry {
                        address: 0,
                        size: 0,
                    };
                }
            }
            hd::B_OK
        },
    )
}

/// `get_memory_map` for the kernel or current team (both are the simulated kernel).
///
/// # Safety
///
/// `num_entries` is NULL or readable and writable; `table` as for `get_memory_map`.
pub unsafe extern "C" fn sim_get_memory_map_etc(
    team: team_id,
    address: *const c_void,
    size: usize,
    table: *mut PhysicalEntry,
    num_entries: *mut u32,
) -> status_t {
    if num_entries.is_null() || !(0..=1).contains(&team) {
        return hd::B_BAD_VALUE;
    }
    // SAFETY: checked non-NULL; the caller's in/out count.
    let n = unsafe { *num_entries };
    // SAFETY: forwarded with the caller's table.
    let r = unsafe { sim_get_memory_map(address, size, table, n.min(i32::MAX as u32) as i32) };
    if r == hd::B_OK {
        // SAFETY: as above.
        unsafe { *num_entries = 1 };
    }
    r
}

/// There are no device registers to map: `B_NOT_SUPPORTED`.
///
/// # Safety
///
/// No pointer is dereferenced.
pub unsafe extern "C" fn sim_map_physical_memory(
    _area_name: *const c_char,
    _physical_address: u64,
    _size: usize,
    _flags: u32,
    _protection: u32,
    _mapped_address: *mut *mut c_void,
) -> area_id {
    with_core(
        const { Site::kernel("map_physical_memory") },
        hd::B_NOT_SUPPORTED,
        |core| {
            core.log("[sim] map_physical_memory: no physical device memory is simulated");
            hd::B_NOT_SUPPORTED
        },
    )
}

/// All simulated memory is resident: locking always succeeds (but may block, so not in
/// interrupt context).
pub extern "C" fn sim_lock_memory(
    _address: *mut c_void,
    _num_bytes: usize,
    _flags: u32,
) -> status_t {
    with_core(const { Site::kernel("lock_memory") }, hd::B_OK, |core| {
        core.kernel.forbid_in_interrupt("lock_memory");
        hd::B_OK
    })
}

pub extern "C" fn sim_unlock_memory(
    _address: *mut c_void,
    _num_bytes: usize,
    _flags: u32,
) -> status_t {
    hd::B_OK
}

// ---- user memory ----

/// Haiku's `user_memcpy` on the simulator: copies `size` bytes from `from` to `to`, each side
/// client memory (which must lie inside one mapping, reached through its host view) or kernel
/// memory (any other host address, copied without faulting: [`fault_copy`]). Both sides are
/// found under one look at the client's address space, held while the bytes move.
#[inline]
fn copy_any(core: &Core, to: u64, from: u64, size: usize) -> Result<(), Status> {
    core.kernel.with_user_memory(|u| {
        let src = u.host(from, size)?;
        let dst = u.host(to, size)?;
        match (dst, src) {
            (Some(d), Some(s)) => {
                // SAFETY: `host` found `size` bytes of client memory at each, valid while
                // the user space is held (it is, until this closure returns); they may
                // overlap (one mapping), which `copy` allows.
                unsafe { std::ptr::copy(s.as_ptr(), d.as_ptr(), size) };
                Ok(())
            }
            (d, s) => {
                let d = d.map_or(to as *mut u8, |p| p.as_ptr());
                let s = s.map_or(from as *const u8, |p| p.as_ptr().cast_const());
                fault_copy(d, s, size).map_err(|()| Status::BAD_ADDRESS)
            }
        }
    })
}

/// Writes `data` to client or kernel memory at `addr`, as [`copy_any`].
fn write_any(core: &Core, addr: u64, data: &[u8]) -> Result<(), Status> {
    core.kernel
        .with_user_memory(|u| match u.host(addr, data.len())? {
            Some(p) => {
                // SAFETY: `data.len()` bytes of client memory at `p`, held while this runs; not
                // `data` (the caller's own buffer is not client memory).
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.as_ptr(), data.len()) };
                Ok(())
            }
            None => fault_copy(addr as *mut u8, data.as_ptr(), data.len())
                .map_err(|()| Status::BAD_ADDRESS),
        })
}

/// Sets `len` bytes of client or kernel memory at `addr` to `value`, as [`write_any`]
/// writes: client memory in place, kernel memory a page of the value at a time through
/// [`fault_copy`]. Nothing is allocated, so the cost does not depend on the heap (a buffer
/// of `len` bytes came from `calloc`, zeroed by the kernel's fresh pages or by a `memset`,
/// whichever the heap's state gave: the bench saw either in the same run).
fn fill_any(core: &Core, addr: u64, value: u8, len: usize) -> Result<(), Status> {
    core.kernel.with_user_memory(|u| match u.host(addr, len)? {
        Some(p) => {
            // SAFETY: `len` bytes of client memory at `p`, held while this runs.
            unsafe { std::ptr::write_bytes(p.as_ptr(), value, len) };
            Ok(())
        }
        None => {
            let page = [value; PAGE_SIZE];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(PAGE_SIZE);
                fault_copy((addr + done as u64) as *mut u8, page.as_ptr(), n)
                    .map_err(|()| Status::BAD_ADDRESS)?;
                done += n;
            }
            Ok(())
        }
    })
}

/// Reads client or kernel memory at `addr` into `out`, as [`copy_any`].
fn read_any(core: &Core, addr: u64, out: &mut [u8]) -> Result<(), Status> {
    core.kernel
        .with_user_memory(|u| match u.host(addr, out.len())? {
            Some(p) => {
                // SAFETY: as in `write_any`, the other way.
                unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), out.as_mut_ptr(), out.len()) };
                Ok(())
            }
            None => fault_copy(out.as_mut_ptr(), addr as *const u8, out.len())
                .map_err(|()| Status::BAD_ADDRESS),
        })
}

/// Haiku's `user_memcpy`: `B_BAD_ADDRESS` for any range that is not wholly mapped (user or
/// kernel), never a fault. User ranges must lie inside one client mapping.
pub extern "C" fn sim_user_memcpy(to: *mut c_void, from: *const c_void, size: usize) -> status_t {
    on_cpu(
        const { Site::kernel("user_memcpy") },
        hd::B_BAD_ADDRESS,
        move || sim_user_memcpy(to, from, size),
        move |core, cpu| {
            let (to, from) = (to as u64, from as u64);
            if to.checked_add(size as u64).is_none() || from.checked_add(size as u64).is_none() {
                return hd::B_BAD_ADDRESS;
            }
            if size == 0 {
                return hd::B_OK;
            }
            cpu.forbid_in_interrupt("user_memcpy");
            meter::user_copied(size);
            status(copy_any(core, to, from, size))
        },
    )
}

/// Haiku's `user_memset`, with `user_memcpy`'s checks.
pub extern "C" fn sim_user_memset(start: *mut c_void, c: c_char, count: usize) -> status_t {
    with_core(
        const { Site::kernel("user_memset") },
        hd::B_BAD_ADDRESS,
        |core| {
            let to = start as u64;
            if to.checked_add(count as u64).is_none() {
                return hd::B_BAD_ADDRESS;
            }
            if count == 0 {
                return hd::B_OK;
            }
            core.kernel.forbid_in_interrupt("user_memset");
            status(fill_any(core, to, c as u8, count))
        },
    )
}

/// Haiku's `user_strlcpy`: copies at most `size - 1` bytes and a NUL, returns the length of
/// the source string (which must be readable to its NUL) or `B_BAD_ADDRESS`.
pub extern "C" fn sim_user_strlcpy(to: *mut c_char, from: *const c_char, size: usize) -> ssize_t {
    with_core(
        const { Site::kernel("user_strlcpy") },
        hd::B_BAD_ADDRESS as ssize_t,
        |core| {
            core.kernel.forbid_in_interrupt("user_strlcpy");
            let from = from as u64;
            // Read the source a byte at a time up to its NUL: a string that ends right before
            // the end of a mapping must work, one that runs past it must fail.
            let mut src = Vec::new();
            loop {
                let mut b = [0u8];
                let at = match from.checked_add(src.len() as u64) {
                    Some(a) => a,
                    None => return hd::B_BAD_ADDRESS as ssize_t,
                };
                if read_any(core, at, &mut b).is_err() {
                    return hd::B_BAD_ADDRESS as ssize_t;
                }
                if b[0] == 0 {
                    break;
                }
                src.push(b[0]);
                if src.len() > MAX_KERNEL_STRING {
                    return hd::B_BAD_ADDRESS as ssize_t;
                }
            }
            if size > 0 {
                let n = src.len().min(size - 1);
                let mut out = src[..n].to_vec();
                out.push(0);
                if write_any(core, to as u64, &out).is_err() {
                    return hd::B_BAD_ADDRESS as ssize_t;
                }
            }
            src.len() as ssize_t
        },
    )
}

// ---- the heap ----

fn heap_misuse(core: &Core, what: &str, p: *mut c_void, e: FreeError) {
    let why = match e {
        FreeError::Double => "that was already freed (double free)",
        FreeError::Unknown => "that the kernel heap never handed out",
    };
    core.record(format!("{what}({:#x}) of a block {why}", p as usize));
}

/// Kernel `malloc`: NULL on failure; allocating in interrupt context is recorded.
pub extern "C" fn sim_malloc(size: usize) -> *mut c_void {
    with_core(
        const { Site::kernel("malloc") },
        std::ptr::null_mut(),
        |core| {
            core.kernel.forbid_in_interrupt("malloc");
            core.heap.alloc(size, 16, false).cast()
        },
    )
}

/// Kernel `calloc`: zeroed, NULL when `count * size` overflows.
pub extern "C" fn sim_calloc(count: usize, size: usize) -> *mut c_void {
    with_core(
        const { Site::kernel("calloc") },
        std::ptr::null_mut(),
        |core| {
            core.kernel.forbid_in_interrupt("calloc");
            match count.checked_mul(size) {
                Some(n) => core.heap.alloc(n, 16, true).cast(),
                None => std::ptr::null_mut(),
            }
        },
    )
}

/// Kernel `realloc`: `realloc(NULL, n)` is `malloc(n)`, `realloc(p, 0)` frees and returns
/// NULL (Haiku's heap does), otherwise a new block with the old contents.
pub extern "C" fn sim_realloc(address: *mut c_void, new_size: usize) -> *mut c_void {
    with_core(
        const { Site::kernel("realloc") },
        std::ptr::null_mut(),
        |core| {
            core.kernel.forbid_in_interrupt("realloc");
            if address.is_null() {
                return core.heap.alloc(new_size, 16, false).cast();
            }
            let old_size = match core.heap.size_of(address.cast()) {
                Ok(s) => s,
                Err(e) => {
                    heap_misuse(core, "realloc", address, e);
                    return std::ptr::null_mut();
                }
            };
            if new_size == 0 {
                let _ = core.heap.free(address.cast());
                return std::ptr::null_mut();
            }
            let new = core.heap.alloc(new_size, 16, false);
            if new.is_null() {
                return std::ptr::null_mut();
            }
            // SAFETY: both are live heap blocks of at least the copied size, and distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(address.cast::<u8>(), new, old_size.min(new_size))
            };
            let _ = core.heap.free(address.cast());
            new.cast()
        },
    )
}

/// Kernel `free`: NULL is ignored; a pointer the heap does not own is a recorded misuse
/// and is left alone.
pub extern "C" fn sim_free(address: *mut c_void) {
    with_core(const { Site::kernel("free") }, (), |core| {
        if address.is_null() {
            return;
        }
        core.kernel.forbid_in_interrupt("free");
        if let Err(e) = core.heap.free(address.cast()) {
            heap_misuse(core, "free", address, e);
        }
    })
}

/// Kernel `memalign`: NULL unless `alignment` is a power of two.
pub extern "C" fn sim_memalign(alignment: usize, size: usize) -> *mut c_void {
    with_core(
        const { Site::kernel("memalign") },
        std::ptr::null_mut(),
        |core| {
            core.kernel.forbid_in_interrupt("memalign");
            if !alignment.is_power_of_two() {
                return std::ptr::null_mut();
            }
            core.heap.alloc(size, alignment, false).cast()
        },
    )
}

// ---- libroot string functions (the host's own, which fault on user memory as Haiku's do
// under SMAP) ----

/// # Safety
///
/// As C `memcpy`.
pub unsafe extern "C" fn sim_memcpy(
    dest: *mut c_void,
    src: *const c_void,
    n: usize,
) -> *mut c_void {
    // SAFETY: the caller's contract is memcpy's.
    unsafe { libc::memcpy(dest, src, n) }
}

/// # Safety
///
/// As C `memmove`.
pub unsafe extern "C" fn sim_memmove(
    dest: *mut c_void,
    src: *const c_void,
    n: usize,
) -> *mut c_void {
    // SAFETY: the caller's contract is memmove's.
    unsafe { libc::memmove(dest, src, n) }
}

/// # Safety
///
/// As C `memset`.
pub unsafe extern "C" fn sim_memset(dest: *mut c_void, value: i32, n: usize) -> *mut c_void {
    // SAFETY: the caller's contract is memset's.
    unsafe { libc::memset(dest, value, n) }
}

/// # Safety
///
/// As C `memcmp`.
pub unsafe extern "C" fn sim_memcmp(a: *const c_void, b: *const c_void, n: usize) -> i32 {
    // SAFETY: the caller's contract is memcmp's.
    unsafe { libc::memcmp(a, b, n) }
}

/// # Safety
///
/// As C `strlen`.
pub unsafe extern "C" fn sim_strlen(s: *const c_char) -> usize {
    // SAFETY: the caller's contract is strlen's.
    unsafe { libc::strlen(s) }
}

/// # Safety
///
/// As C `strnlen`.
pub unsafe extern "C" fn sim_strnlen(s: *const c_char, max: usize) -> usize {
    // SAFETY: the caller's contract is strnlen's.
    unsafe { libc::strnlen(s, max) }
}

/// # Safety
///
/// As C `strcmp`.
pub unsafe extern "C" fn sim_strcmp(a: *const c_char, b: *const c_char) -> i32 {
    // SAFETY: the caller's contract is strcmp's.
    unsafe { libc::strcmp(a, b) }
}

/// # Safety
///
/// As C `strncmp`.
pub unsafe extern "C" fn sim_strncmp(a: *const c_char, b: *const c_char, n: usize) -> i32 {
    // SAFETY: the caller's contract is strncmp's.
    unsafe { libc::strncmp(a, b, n) }
}

/// # Safety
///
/// As C `strcpy`.
pub unsafe extern "C" fn sim_strcpy(dest: *mut c_char, src: *const c_char) -> *mut c_char {
    // SAFETY: the caller's contract is strcpy's.
    unsafe { libc::strcpy(dest, src) }
}

/// BSD `strlcpy` (glibc before 2.38 has none, so it is written out).
///
/// # Safety
///
/// `src` is a string; `dest` has room for `size` bytes.
pub unsafe extern "C" fn sim_strlcpy(dest: *mut c_char, src: *const c_char, size: usize) -> usize {
    // SAFETY: `src` is a NUL-terminated string (the caller's contract).
    let len = unsafe { libc::strlen(src) };
    if size > 0 {
        let n = len.min(size - 1);
        // SAFETY: `dest` has `size > n` bytes; the source has `len >= n` bytes.
        unsafe {
            std::ptr::copy(src, dest, n);
            *dest.add(n) = 0;
        }
    }
    len
}

/// BSD `strlcat`.
///
/// # Safety
///
/// `dest` holds a string within its `size` bytes (or `size` bytes without NUL), `src` is a
/// string.
pub unsafe extern "C" fn sim_strlcat(dest: *mut c_char, src: *const c_char, size: usize) -> usize {
    // SAFETY: `dest` is readable for `size` bytes.
    let dlen = unsafe { libc::strnlen(dest, size) };
    if dlen == size {
        // SAFETY: `src` is a string.
        return size + unsafe { libc::strlen(src) };
    }
    // SAFETY: `dest + dlen` is inside the buffer with `size - dlen` bytes left.
    dlen + unsafe { sim_strlcpy(dest.add(dlen), src, size - dlen) }
}

/// `ffsl` (nightly only): the 1-based index of the lowest set bit, 0 for 0.
pub extern "C" fn sim_ffsl(value: i64) -> i32 {
    if value == 0 {
        0
    } else {
        value.trailing_zeros() as i32 + 1
    }
}

/// A static description of a status code: its Haiku constant name ("B_BAD_ADDRESS"),
/// "No error" for `B_OK`, or "Unknown error (n)".
pub extern "C" fn sim_strerror(error: i32) -> *mut c_char {
    static TEXTS: OnceLock<Mutex<HashMap<i32, &'static CStr>>> = OnceLock::new();
    let _sim = SimCode::enter();
    let mut texts = lock(TEXTS.get_or_init(Default::default));
    let text = texts.entry(error).or_insert_with(|| {
        let s = if error == hd::B_OK {
            "No error".to_owned()
        } else {
            hd::STATUS.iter().find(|c| c.value == error).map_or_else(
                || format!("Unknown error ({error:#x})"),
                |c| c.name.to_owned(),
            )
        };
        Box::leak(CString::new(s).unwrap_or_default().into_boxed_c_str())
    });
    text.as_ptr().cast_mut()
}

/// `kernel_debugger(message)`: like `panic`.
///
/// # Safety
///
/// `message` is NULL or a string.
pub unsafe extern "C" fn sim_kernel_debugger(message: *const c_char) {
    let _sim = SimCode::enter();
    // SAFETY: the caller's string argument.
    let text = unsafe { c_string(message) }.unwrap_or_default();
    kernel_panic(current().as_deref(), &format!("kernel_debugger: {text}"));
}

/// Called by stack-protected code whose canary was overwritten: a panic.
pub extern "C" fn sim_stack_chk_fail() {
    let _sim = SimCode::enter();
    kernel_panic(
        current().as_deref(),
        "stack smashing detected (__stack_chk_fail)",
    );
}

// ---- time ----

/// `system_time`: the simulated clock. A caller that calls it over and over at one instant
/// is spinning on it, and time passes for it (`SimKernel::busy_poll`).
pub extern "C" fn sim_system_time() -> bigtime_t {
    // A driver that spins on the clock lets time pass, as a real CPU would.
    on_cpu(
        const { Site::kernel("system_time") },
        0,
        || sim_system_time(),
        |_, cpu| cpu.poll_clock(),
    )
}

pub extern "C" fn sim_system_time_nsecs() -> bigtime_t {
    sim_system_time().saturating_mul(1000)
}

/// Sleeps in simulated time (not in interrupt context).
pub extern "C" fn sim_snooze(amount: bigtime_t) -> status_t {
    sim_snooze_etc(amount, hd::B_SYSTEM_TIMEBASE, hd::B_RELATIVE_TIMEOUT)
}

/// The simulated machine's real-time clock at boot: 2026-01-01 00:00:00 UTC, in
/// microseconds since the epoch. Fixed, so that runs are reproducible; the clock then
/// moves with the simulated system time and is never set.
pub const REAL_TIME_AT_BOOT: bigtime_t = 1_767_225_600_000_000;

/// `real_time_clock_usecs`: the wall clock, [`REAL_TIME_AT_BOOT`] plus the system time.
pub extern "C" fn sim_real_time_clock_usecs() -> bigtime_t {
    REAL_TIME_AT_BOOT.saturating_add(sim_system_time())
}

/// `snooze_etc` as Haiku's `common_snooze_etc` (src/system/kernel/thread.cpp) takes it:
/// the time base is a POSIX clock id. `CLOCK_REALTIME` adds `B_TIMEOUT_REAL_TIME_BASE` and
/// sleeps like `CLOCK_MONOTONIC` (= `B_SYSTEM_TIMEBASE`); `thread_block_with_timeout` reads
/// that flag only for an absolute timeout, which is then a wall-clock time. A thread-CPU-time
/// clock is `B_BAD_VALUE`, any other clock `ENOTSUP`. Without a timeout flag, or with
/// `B_INFINITE_TIMEOUT`, Haiku's thread never wakes (no timer is set and a kernel sleep
/// takes no signals): the simulator records that and returns at once.
pub extern "C" fn sim_snooze_etc(amount: bigtime_t, time_base: i32, flags: u32) -> status_t {
    let flags = match time_base {
        hd::CLOCK_REALTIME => flags | hd::B_TIMEOUT_REAL_TIME_BASE,
        hd::B_SYSTEM_TIMEBASE => flags,
        hd::CLOCK_THREAD_CPUTIME_ID => return hd::B_BAD_VALUE,
        _ => return hd::ENOTSUP,
    };
    with_core(const { Site::kernel("snooze_etc") }, hd::B_OK, |core| {
        let timed = flags & (hd::B_RELATIVE_TIMEOUT | hd::B_ABSOLUTE_TIMEOUT) != 0;
        if !timed || amount == hd::B_INFINITE_TIMEOUT {
            core.record(format!(
                "snooze_etc({amount}, {time_base}, {flags:#x}) sleeps forever: no timeout \
                 is set, and nothing wakes a snoozing kernel thread"
            ));
            return hd::B_OK;
        }
        let d = if flags & hd::B_RELATIVE_TIMEOUT != 0 {
            amount
        } else if flags & hd::B_TIMEOUT_REAL_TIME_BASE != 0 {
            amount.saturating_sub(sim_real_time_clock_usecs())
        } else {
            amount.saturating_sub(core.kernel.system_time())
        };
        meter::waiting(|| core.kernel.snooze(d));
        hd::B_OK
    })
}

pub extern "C" fn sim_snooze_until(time: bigtime_t, time_base: i32) -> status_t {
    sim_snooze_etc(time, time_base, hd::B_ABSOLUTE_TIMEOUT)
}

/// Busy-waits: simulated time moves (running device events) when interrupts are enabled;
/// with interrupts disabled it cannot (no interrupt could be delivered), so it returns at
/// once.
pub extern "C" fn sim_spin(microseconds: bigtime_t) {
    with_core(const { Site::kernel("spin") }, (), |core| {
        if microseconds > 0 && !core.kernel.interrupts_disabled() {
            meter::waiting(|| core.kernel.clock().advance_by(microseconds));
        }
    })
}

/// Arms a caller-owned timer (see [`super::threads`]).
///
/// # Safety
///
/// `event` is NULL or a `struct timer` that stays valid until it fires or is cancelled.
pub unsafe extern "C" fn sim_add_timer(
    event: *mut Timer,
    hook: timer_hook,
    period: bigtime_t,
    flags: i32,
) -> status_t {
    // SAFETY: forwarded with the caller's contract.
    with_core(
        const { Site::kernel("add_timer") },
        hd::B_NO_INIT,
        |core| unsafe { core.timers.add(core, event, hook, period, flags) },
    )
}

/// Disarms a timer; true if it had already fired.
pub extern "C" fn sim_cancel_timer(event: *mut Timer) -> bool {
    with_core(const { Site::kernel("cancel_timer") }, false, |core| {
        core.timers.cancel(event)
    })
}

// ---- interrupts and spinlocks ----

pub extern "C" fn sim_disable_interrupts() -> cpu_status {
    on_cpu(
        const { Site::kernel("disable_interrupts") },
        0,
        || sim_disable_interrupts(),
        |_, cpu| cpu.disable_interrupts(),
    )
}

pub extern "C" fn sim_restore_interrupts(state: cpu_status) {
    on_cpu(
        const { Site::kernel("restore_interrupts") },
        (),
        move || sim_restore_interrupts(state),
        move |_, cpu| cpu.restore_interrupts(state),
    )
}

#[inline]
fn spinlock_word<'a>(core: &Core, what: &str, lock: *mut Spinlock) -> Option<&'a AtomicI32> {
    if lock.is_null() {
        null_spinlock(core, what);
        return None;
    }
    // SAFETY: a `struct spinlock { int32 lock; }` the caller owns and keeps alive across the
    // call; AtomicI32 has the layout of i32, and the lock word is only used atomically.
    Some(unsafe { AtomicI32::from_ptr(lock.cast::<i32>()) })
}

#[cold]
#[inline(never)]
fn null_spinlock(core: &Core, what: &str) {
    let _sim = SimCode::enter();
    core.record(format!("{what}(NULL)"));
}

pub extern "C" fn sim_acquire_spinlock(lock: *mut Spinlock) {
    on_cpu(
        const { Site::kernel("acquire_spinlock") },
        (),
        move || sim_acquire_spinlock(lock),
        move |core, cpu| {
            if let Some(w) = spinlock_word(core, "acquire_spinlock", lock) {
                cpu.acquire_spinlock(w);
            }
        },
    )
}

pub extern "C" fn sim_try_acquire_spinlock(lock: *mut Spinlock) -> bool {
    with_core(
        const { Site::kernel("try_acquire_spinlock") },
        false,
        |core| {
            spinlock_word(core, "try_acquire_spinlock", lock)
                .is_some_and(|w| core.kernel.try_acquire_spinlock(w))
        },
    )
}

pub extern "C" fn sim_release_spinlock(lock: *mut Spinlock) {
    on_cpu(
        const { Site::kernel("release_spinlock") },
        (),
        move || sim_release_spinlock(lock),
        move |core, cpu| {
            if let Some(w) = spinlock_word(core, "release_spinlock", lock) {
                cpu.release_spinlock(w);
            }
        },
    )
}

pub extern "C" fn sim_memory_read_barrier() {
    fence(Ordering::SeqCst);
}

pub extern "C" fn sim_memory_write_barrier() {
    fence(Ordering::SeqCst);
}

/// There are no I/O interrupt vectors in the simulator: `B_BAD_VALUE`, as for a vector
/// Haiku does not have.
pub extern "C" fn sim_install_io_interrupt_handler(
    interrupt_number: i32,
    _handler: interrupt_handler,
    _data: *mut c_void,
    _flags: u32,
) -> status_t {
    with_core(
        const { Site::kernel("install_io_interrupt_handler") },
        hd::B_BAD_VALUE,
        |core| {
            core.log(&format!(
                "[sim] install_io_interrupt_handler({interrupt_number}): no I/O interrupt lines \
             are simulated"
            ));
            hd::B_BAD_VALUE
        },
    )
}

pub extern "C" fn sim_remove_io_interrupt_handler(
    _interrupt_number: i32,
    _handler: interrupt_handler,
    _data: *mut c_void,
) -> status_t {
    hd::B_BAD_VALUE
}

// ---- threads ----

/// Creates a suspended kernel thread (see [`super::threads`]).
///
/// # Safety
///
/// `name` is NULL or a string; `function` may be called with `arg` on another thread.
pub unsafe extern "C" fn sim_spawn_kernel_thread(
    function: thread_func,
    name: *const c_char,
    _priority: i32,
    arg: *mut c_void,
) -> thread_id {
    with_core(
        const { Site::kernel("spawn_kernel_thread") },
        hd::B_NO_MORE_THREADS,
        |core| {
            // SAFETY: the caller's string argument.
            let name = unsafe { c_string(name) }.unwrap_or_else(|| "unnamed thread".into());
            core.threads.spawn(function, name, arg)
        },
    )
}

pub extern "C" fn sim_resume_thread(thread: thread_id) -> status_t {
    with_core(
        const { Site::kernel("resume_thread") },
        hd::B_BAD_THREAD_ID,
        |core| core.threads.resume(core, thread),
    )
}

/// # Safety
///
/// `return_value` is NULL or writable.
pub unsafe extern "C" fn sim_wait_for_thread(
    thread: thread_id,
    return_value: *mut status_t,
) -> status_t {
    with_core(
        const { Site::kernel("wait_for_thread") },
        hd::B_BAD_THREAD_ID,
        |core| {
            core.kernel.forbid_in_interrupt("wait_for_thread");
            match core.threads.wait(core, thread) {
                Ok(v) => {
                    if !return_value.is_null() {
                        // SAFETY: checked non-NULL; the caller's out parameter.
                        unsafe { *return_value = v };
                    }
                    hd::B_OK
                }
                Err(e) => e,
            }
        },
    )
}

/// # Safety
///
/// `name` is NULL or a string.
pub unsafe extern "C" fn sim_find_thread(name: *const c_char) -> thread_id {
    with_core(
        const { Site::kernel("find_thread") },
        hd::B_NAME_NOT_FOUND,
        |core| {
            // SAFETY: the caller's string argument.
            match unsafe { c_string(name) } {
                None => core.threads.current_id(),
                Some(n) => core.threads.find(&n),
            }
        },
    )
}

// ---- driver settings ----

/// Loads the settings text the test gave for `driver_name` (see
/// [`super::Environment::settings`]); NULL when there is none, it is empty or too large, or
/// it does not parse (as Haiku does for a bad file).
///
/// # Safety
///
/// `driver_name` is NULL or a string.
pub unsafe extern "C" fn sim_load_driver_settings(driver_name: *const c_char) -> *mut c_void {
    with_core(
        const { Site::kernel("load_driver_settings") },
        std::ptr::null_mut(),
        |core| {
            core.kernel.forbid_in_interrupt("load_driver_settings");
            // SAFETY: the caller's string argument.
            let Some(name) = (unsafe { c_string(driver_name) }) else {
                return std::ptr::null_mut();
            };
            core.load_settings(&name)
        },
    )
}

pub extern "C" fn sim_unload_driver_settings(handle: *mut c_void) -> status_t {
    with_core(
        const { Site::kernel("unload_driver_settings") },
        hd::B_BAD_VALUE,
        |core| core.unload_settings(handle),
    )
}

/// The first value of the last parameter called `key`, `unknown_value` if there is none,
/// `noarg_value` if it has no value. The string lives as long as the handle.
///
/// # Safety
///
/// `key` is NULL or a string.
pub unsafe extern "C" fn sim_get_driver_parameter(
    handle: *mut c_void,
    key: *const c_char,
    unknown_value: *const c_char,
    noarg_value: *const c_char,
) -> *const c_char {
    with_core(
        const { Site::kernel("get_driver_parameter") },
        unknown_value,
        |core| {
            // SAFETY: the caller's string argument.
            let Some(key) = (unsafe { c_string(key) }) else {
                return unknown_value;
            };
            core.with_settings(handle, "get_driver_parameter", |h| {
                match h.and_then(|h| h.get(key.as_bytes())) {
                    None => unknown_value,
                    Some(p) => p.values.first().map_or(noarg_value, |v| v.as_ptr()),
                }
            })
        },
    )
}

/// A parameter read as a boolean (Haiku's words), with its defaults.
///
/// # Safety
///
/// `key` is NULL or a string.
pub unsafe extern "C" fn sim_get_driver_boolean_parameter(
    handle: *mut c_void,
    key: *const c_char,
    unknown_value: bool,
    noarg_value: bool,
) -> bool {
    with_core(
        const { Site::kernel("get_driver_boolean_parameter") },
        unknown_value,
        |core| {
            // SAFETY: the caller's string argument.
            let Some(key) = (unsafe { c_string(key) }) else {
                return unknown_value;
            };
            core.with_settings(handle, "get_driver_boolean_parameter", |h| {
                match h.and_then(|h| h.get(key.as_bytes())) {
                    None => unknown_value,
                    Some(p) => match p.values.first() {
                        None => noarg_value,
                        Some(v) => super::settings::boolean(v.as_bytes()).unwrap_or(unknown_value),
                    },
                }
            })
        },
    )
}

// ---- modules ----

/// `get_module`: the device manager, the virtio device interface and the add-on's own
/// modules can be got; anything else is `B_ENTRY_NOT_FOUND` (as Haiku answers for a module
/// it cannot find), NULL arguments `B_BAD_VALUE`.
///
/// # Safety
///
/// `path` is NULL or a string; `info` is NULL or writable.
pub unsafe extern "C" fn sim_get_module(
    path: *const c_char,
    info: *mut *mut ModuleInfo,
) -> status_t {
    with_core(
        const { Site::kernel("get_module") },
        hd::B_ENTRY_NOT_FOUND,
        |core| {
            // SAFETY: the caller's string argument.
            let Some(path) = (unsafe { c_string(path) }) else {
                return hd::B_BAD_VALUE;
            };
            if info.is_null() {
                return hd::B_BAD_VALUE;
            }
            core.kernel.forbid_in_interrupt("get_module");
            match core.get_module(&path) {
                Ok(p) => {
                    // SAFETY: checked non-NULL; the caller's out parameter.
                    unsafe { *info = p.cast_mut() };
                    hd::B_OK
                }
                Err(e) => e,
            }
        },
    )
}

/// # Safety
///
/// `path` is NULL or a string.
pub unsafe extern "C" fn sim_put_module(path: *const c_char) -> status_t {
    with_core(
        const { Site::kernel("put_module") },
        hd::B_BAD_VALUE,
        |core| {
            // SAFETY: the caller's string argument.
            let Some(path) = (unsafe { c_string(path) }) else {
                return hd::B_BAD_VALUE;
            };
            core.put_module(&path)
        },
    )
}

const _: () = assert!(PAGE_SIZE == hd::B_PAGE_SIZE as usize);
