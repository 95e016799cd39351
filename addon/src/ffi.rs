//! The kernel functions the add-on calls. Every name here is in the kernel import table of
//! `spec/haiku_driver.toml`; the build's audit refuses any other import.
// The heap and panic functions serve only `runtime`, which the unit-test build leaves out
// (std provides both there).
#![cfg_attr(test, allow(dead_code))]

use core::ffi::{c_char, c_void};

use spec::haiku_driver::{
    area_id, bigtime_t, cpu_status, sem_id, status_t, PhysicalEntry, Spinlock,
};

extern "C" {
    pub fn system_time() -> bigtime_t;
    pub fn snooze(amount: bigtime_t) -> status_t;
    pub fn dprintf(format: *const c_char, ...);
    pub fn panic(format: *const c_char, ...) -> !;

    pub fn create_sem(count: i32, name: *const c_char) -> sem_id;
    pub fn delete_sem(id: sem_id) -> status_t;
    pub fn acquire_sem_etc(id: sem_id, count: i32, flags: u32, timeout: bigtime_t) -> status_t;
    pub fn release_sem_etc(id: sem_id, count: i32, flags: u32) -> status_t;

    pub fn disable_interrupts() -> cpu_status;
    pub fn restore_interrupts(status: cpu_status);
    pub fn acquire_spinlock(lock: *mut Spinlock);
    pub fn release_spinlock(lock: *mut Spinlock);

    pub fn create_area(
        name: *const c_char,
        start_address: *mut *mut c_void,
        address_spec: u32,
        size: usize,
        lock: u32,
        protection: u32,
    ) -> area_id;
    pub fn delete_area(id: area_id) -> status_t;
    pub fn get_memory_map(
        address: *const c_void,
        size: usize,
        table: *mut PhysicalEntry,
        num_entries: i32,
    ) -> i32;

    pub fn user_memcpy(to: *mut c_void, from: *const c_void, size: usize) -> status_t;
    pub fn user_memset(start: *mut c_void, c: c_char, count: usize) -> status_t;

    pub fn malloc(size: usize) -> *mut c_void;
    pub fn free(address: *mut c_void);
    pub fn memalign(alignment: usize, size: usize) -> *mut c_void;
    pub fn memcmp(a: *const c_void, b: *const c_void, length: usize) -> i32;

    pub fn load_driver_settings(driver_name: *const c_char) -> *mut c_void;
    pub fn unload_driver_settings(handle: *mut c_void) -> status_t;
    pub fn get_driver_parameter(
        handle: *mut c_void,
        key: *const c_char,
        unknown_value: *const c_char,
        noarg_value: *const c_char,
    ) -> *const c_char;
}
