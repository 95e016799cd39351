//! The Haiku kernel add-on `virtio_sound`: module exports, device-manager hooks, and the
//! kernel and virtio bus behind the `platform` traits. This crate is the only one with
//! `extern "C"` and the only one that names Haiku's kernel symbols ([`kernel_imports`], generated from the
//! spec's import table).
//!
//! Life of the driver: `supports_device` claims virtio nodes of type 25; `register_device`
//! adds our node; `init_driver` brings the device up (the engine) and reads the settings
//! file; `register_child_devices` publishes one `audio/hmulti/virtio_sound/<n>` per card;
//! `open` picks the card by path (one opener at a time), `control` is the ioctl table, and
//! `free` stops the card's streams and frees its buffers.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod exported;
/// The kernel symbols the add-on may import (`cargo xtask gen` writes them from the spec's
/// import table).
#[rustfmt::skip]
#[path = "generated/kernel_imports.rs"]
pub mod kernel_imports;
pub mod kernel;
#[cfg(not(test))]
mod runtime;
pub mod settings;
pub mod virtio;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ffi::{c_char, c_void, CStr};
use core::sync::atomic::{AtomicPtr, Ordering};

use spec::haiku_driver::{
    self as hd, status_t, DeviceAttr, DeviceAttrValue, DeviceManagerInfo, DeviceModuleInfo,
    DeviceNode, DriverModuleInfo, ModuleDependency, ModuleInfo, VirtioDeviceInterface,
};

use driver::hmulti::{cards_for, Card};
use driver::virtio::{Engine, Options};
use exported::Exported;
use kernel::HaikuKernel;
use platform::sync::SemMutex;
use platform::{Kernel, LogLevel, Status};
use virtio::HaikuVirtio;

type HaikuEngine = Engine<HaikuKernel, HaikuVirtio>;
type HaikuCard = Card<HaikuKernel, HaikuVirtio>;

/// Filled in by the module loader before any hook runs (see `module_dependencies`).
static DEVICE_MANAGER: AtomicPtr<DeviceManagerInfo> = AtomicPtr::new(core::ptr::null_mut());

fn dm() -> Option<&'static DeviceManagerInfo> {
    // SAFETY: the loader stored a pointer to the device manager's module info, which stays
    // loaded while we are (it is our dependency).
    unsafe { DEVICE_MANAGER.load(Ordering::Acquire).as_ref() }
}

/// The modules this add-on needs the kernel to load first.
#[no_mangle]
// SAFETY: string constants and the address of DEVICE_MANAGER, an atomic the loader stores
// into; nothing else writes the table.
pub static module_dependencies: Exported<[ModuleDependency; 2]> = unsafe {
    Exported::new([
        ModuleDependency {
            name: hd::B_DEVICE_MANAGER_MODULE_NAME.as_ptr(),
            info: DEVICE_MANAGER.as_ptr() as *mut *mut ModuleInfo,
        },
        ModuleDependency {
            name: core::ptr::null(),
            info: core::ptr::null_mut(),
        },
    ])
};

// SAFETY: a string constant and function pointers; never written.
static DRIVER_MODULE: Exported<DriverModuleInfo> = unsafe {
    Exported::new(DriverModuleInfo {
        info: ModuleInfo {
            name: hd::VIRTIO_SOUND_DRIVER_MODULE_NAME.as_ptr(),
            flags: 0,
            std_ops: None,
        },
        supports_device: Some(supports_device),
        register_device: Some(register_device),
        init_driver: Some(init_driver),
        uninit_driver: Some(uninit_driver),
        register_child_devices: Some(register_child_devices),
        rescan_child_devices: None,
        device_removed: Some(device_removed),
        suspend: None,
        resume: None,
    })
};

// SAFETY: a string constant and function pointers; never written.
static DEVICE_MODULE: Exported<DeviceModuleInfo> = unsafe {
    Exported::new(DeviceModuleInfo {
        info: ModuleInfo {
            name: hd::VIRTIO_SOUND_DEVICE_MODULE_NAME.as_ptr(),
            flags: 0,
            std_ops: None,
        },
        init_device: Some(init_device),
        uninit_device: Some(uninit_device),
        device_removed: Some(device_removed_dev),
        open: Some(open),
        close: Some(close),
        free: Some(free),
        read: None,
        write: None,
        io: None,
        control: Some(control),
        select: None,
        deselect: None,
    })
};

/// The module list the kernel looks up by name: NULL-terminated.
#[no_mangle]
// SAFETY: pointers to the two module tables above, which are never written.
pub static modules: Exported<[*const ModuleInfo; 3]> = unsafe {
    Exported::new([
        &DRIVER_MODULE.get().info as *const ModuleInfo,
        &DEVICE_MODULE.get().info as *const ModuleInfo,
        core::ptr::null(),
    ])
};

/// One published device.
struct Slot {
    path: String,
    id: i32,
    streams: (Option<u32>, Option<u32>),
    card: Option<Arc<HaikuCard>>,
}

/// The driver cookie: one per virtio sound device.
struct Driver {
    node: *mut DeviceNode,
    engine: Arc<HaikuEngine>,
    settings: settings::DriverSettings,
    slots: SemMutex<Vec<Slot>>,
}

/// The live driver cookies, so that `device_removed` finds its driver whatever it is
/// given: nightly passes the driver cookie, R1/beta5 the `device_node` (the note on the
/// hook in `spec/haiku_driver.toml`, from Haiku's device_manager.cpp).
static DRIVERS: [AtomicPtr<Driver>; 8] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 8];

/// The per-open cookie.
struct OpenCard {
    card: Arc<HaikuCard>,
    slot: usize,
    driver: *const Driver,
}

fn status(r: Result<(), Status>) -> status_t {
    match r {
        Ok(()) => hd::B_OK,
        Err(s) => s.0,
    }
}

unsafe extern "C" fn supports_device(parent: *mut DeviceNode) -> f32 {
    let Some(dm) = dm() else { return -1.0 };
    let (Some(get_string), Some(get_u16)) = (dm.get_attr_string, dm.get_attr_uint16) else {
        return -1.0;
    };
    let mut bus: *const c_char = core::ptr::null();
    // SAFETY: device manager calls with the node we were given and out pointers to locals.
    if unsafe { get_string(parent, hd::B_DEVICE_BUS.as_ptr(), &mut bus, false) } != hd::B_OK
        || bus.is_null()
    {
        return 0.0;
    }
    // SAFETY: a successful get_attr_string returns a NUL-terminated string owned by the node.
    if unsafe { CStr::from_ptr(bus) }.to_bytes() != b"virtio" {
        return 0.0;
    }
    let mut ty: u16 = 0;
    // SAFETY: as above.
    if unsafe { get_u16(parent, hd::VIRTIO_DEVICE_TYPE_ITEM.as_ptr(), &mut ty, true) } != hd::B_OK {
        return 0.0;
    }
    if ty == spec::virtio_snd::VIRTIO_ID_SOUND {
        0.6
    } else {
        0.0
    }
}

unsafe extern "C" fn register_device(parent: *mut DeviceNode) -> status_t {
    let Some(dm) = dm() else { return hd::B_NO_INIT };
    let Some(register) = dm.register_node else {
        return hd::B_NO_INIT;
    };
    let attrs = [
        DeviceAttr {
            name: hd::B_DEVICE_PRETTY_NAME.as_ptr(),
            r#type: hd::B_STRING_TYPE,
            value: DeviceAttrValue {
                string: c"Virtio Sound".as_ptr(),
            },
        },
        DeviceAttr {
            name: core::ptr::null(),
            r#type: 0,
            value: DeviceAttrValue { ui64: 0 },
        },
    ];
    // SAFETY: a NULL-terminated attribute list that lives across the call (copied by the
    // device manager); no I/O resources, no node wanted back.
    unsafe {
        register(
            parent,
            hd::VIRTIO_SOUND_DRIVER_MODULE_NAME.as_ptr(),
            attrs.as_ptr(),
            core::ptr::null(),
            core::ptr::null_mut(),
        )
    }
}

unsafe extern "C" fn init_driver(node: *mut DeviceNode, cookie: *mut *mut c_void) -> status_t {
    let k = HaikuKernel;
    let Some(dm) = dm() else { return hd::B_NO_INIT };
    let (Some(parent_of), Some(get_driver), Some(put_node)) =
        (dm.get_parent_node, dm.get_driver, dm.put_node)
    else {
        return hd::B_NO_INIT;
    };
    let s = settings::DriverSettings::load();
    kernel::LOG_LEVEL.store(s.log_level as u8, Ordering::Relaxed);
    // SAFETY: our own node; the parent reference is put back below.
    let parent = unsafe { parent_of(node) };
    let mut iface: *mut DriverModuleInfo = core::ptr::null_mut();
    let mut dev: *mut c_void = core::ptr::null_mut();
    // SAFETY: out pointers to locals; the parent node is the virtio device node.
    let r = unsafe { get_driver(parent, &mut iface, &mut dev) };
    // SAFETY: the reference get_parent_node took.
    unsafe { put_node(parent) };
    if r != hd::B_OK || iface.is_null() {
        return if r != hd::B_OK { r } else { hd::B_ERROR };
    }
    // SAFETY: the virtio bus manager's device module is a `virtio_device_interface`, whose
    // first member is the driver_module_info get_driver returned; it and `dev` live as long
    // as our node.
    let virtio = Arc::new(unsafe { HaikuVirtio::new(iface as *const VirtioDeviceInterface, dev) });
    let engine = match Engine::start(Arc::new(k), virtio, Options::default()) {
        Ok(e) => e,
        Err(e) => {
            k.log(LogLevel::Error, format_args!("device init failed: {e}"));
            return e.0;
        }
    };
    let slots = cards_for(&engine)
        .into_iter()
        .map(|streams| Slot {
            path: String::new(),
            id: -1,
            streams,
            card: None,
        })
        .collect();
    let slots = match SemMutex::new(&k, "virtio_sound slots", slots) {
        Ok(s) => s,
        Err(e) => {
            Engine::shutdown(engine);
            return e.0;
        }
    };
    let driver = Box::new(Driver {
        node,
        engine,
        settings: s,
        slots,
    });
    let driver = Box::into_raw(driver);
    if !DRIVERS.iter().any(|d| {
        d.compare_exchange(
            core::ptr::null_mut(),
            driver,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    }) {
        k.log(
            LogLevel::Warn,
            format_args!(
                "more than {} devices: removal of this one is not seen",
                DRIVERS.len()
            ),
        );
    }
    // SAFETY: `cookie` is the device manager's out pointer.
    unsafe { *cookie = driver.cast() };
    hd::B_OK
}

unsafe extern "C" fn uninit_driver(cookie: *mut c_void) {
    if cookie.is_null() {
        return;
    }
    for d in &DRIVERS {
        let _ = d.compare_exchange(
            cookie.cast(),
            core::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
    // SAFETY: the Box made in init_driver; the device manager calls this once, after every
    // published device is closed and freed.
    let driver = unsafe { Box::from_raw(cookie as *mut Driver) };
    let k = HaikuKernel;
    let slots = driver.slots.destroy(&k);
    if let Some(dm) = dm() {
        for s in &slots {
            if s.id >= 0 {
                if let Some(free_id) = dm.free_id {
                    // SAFETY: the generator name is a static C string; the id is ours.
                    unsafe { free_id(hd::VIRTIO_SOUND_DEVICE_ID_GEN.as_ptr(), s.id as u32) };
                }
            }
        }
    }
    drop(slots);
    Engine::shutdown(driver.engine);
}

unsafe extern "C" fn register_child_devices(cookie: *mut c_void) -> status_t {
    // SAFETY: the driver cookie from init_driver, alive until uninit_driver.
    let Some(driver) = (unsafe { (cookie as *const Driver).as_ref() }) else {
        return hd::B_BAD_VALUE;
    };
    let Some(dm) = dm() else { return hd::B_NO_INIT };
    let (Some(create_id), Some(publish)) = (dm.create_id, dm.publish_device) else {
        return hd::B_NO_INIT;
    };
    let k = HaikuKernel;
    let Ok(mut slots) = driver.slots.lock(&k, 5_000_000) else {
        return hd::B_BUSY;
    };
    let total = slots.len();
    for (n, slot) in slots.iter_mut().enumerate() {
        // SAFETY: a static C string.
        let id = unsafe { create_id(hd::VIRTIO_SOUND_DEVICE_ID_GEN.as_ptr()) };
        if id < 0 {
            if n == 0 {
                return id;
            }
            // Haiku's id generator has 64 ids; a device with more streams than that keeps
            // the cards that got one.
            k.log(
                LogLevel::Warn,
                format_args!(
                    "no device id left ({id:#x}) for cards {} to {total}; not published",
                    n + 1
                ),
            );
            break;
        }
        slot.id = id;
        slot.path = format!("audio/hmulti/virtio_sound/{}\0", id + 1);
        // SAFETY: `path` is NUL-terminated and copied by publish_device; the module name is
        // one of our `modules`.
        let r = unsafe {
            publish(
                driver.node,
                slot.path.as_ptr().cast(),
                hd::VIRTIO_SOUND_DEVICE_MODULE_NAME.as_ptr(),
            )
        };
        if r != hd::B_OK {
            return r;
        }
        k.log(
            LogLevel::Info,
            format_args!("published /dev/{}", slot.path.trim_end_matches('\0')),
        );
    }
    hd::B_OK
}

/// The device has gone: the driver cookie on nightly, the `device_node` on R1/beta5. The
/// engine stops waiting for a device that cannot answer (see `Engine::device_removed`);
/// `uninit_driver` follows once none of its devices is open.
unsafe extern "C" fn device_removed(arg: *mut c_void) {
    HaikuKernel.log(LogLevel::Info, format_args!("device removed"));
    for d in &DRIVERS {
        let p = d.load(Ordering::Acquire);
        // SAFETY: a registered driver is alive: the device manager runs this hook and
        // uninit_driver (which unregisters it before freeing it) under its lock, never at
        // once.
        if let Some(driver) = unsafe { p.as_ref() } {
            if p.cast() == arg || driver.node.cast() == arg {
                driver.engine.device_removed();
            }
        }
    }
}

unsafe extern "C" fn init_device(
    driver_cookie: *mut c_void,
    device_cookie: *mut *mut c_void,
) -> status_t {
    // SAFETY: the device manager's out pointer; every device of the node shares the driver.
    unsafe { *device_cookie = driver_cookie };
    hd::B_OK
}

unsafe extern "C" fn uninit_device(_cookie: *mut c_void) {}

/// The device module's `device_removed`, with the device cookie (the driver: see
/// `init_device`) on every release.
unsafe extern "C" fn device_removed_dev(cookie: *mut c_void) {
    // SAFETY: the driver cookie init_device handed out; the driver outlives its devices.
    if let Some(driver) = unsafe { (cookie as *const Driver).as_ref() } {
        driver.engine.device_removed();
    }
}

unsafe extern "C" fn open(
    device_cookie: *mut c_void,
    path: *const c_char,
    _mode: i32,
    cookie: *mut *mut c_void,
) -> status_t {
    // SAFETY: the driver cookie (see init_device).
    let Some(driver) = (unsafe { (device_cookie as *const Driver).as_ref() }) else {
        return hd::B_BAD_VALUE;
    };
    if path.is_null() {
        return hd::B_BAD_VALUE;
    }
    // SAFETY: devfs passes the NUL-terminated path it published.
    let path = unsafe { CStr::from_ptr(path) }.to_bytes();
    let k = HaikuKernel;
    let Ok(mut slots) = driver.slots.lock(&k, 5_000_000) else {
        return hd::B_BUSY;
    };
    let Some(index) = slots
        .iter()
        .position(|s| s.path.as_bytes().strip_suffix(b"\0") == Some(path))
    else {
        return hd::B_ENTRY_NOT_FOUND;
    };
    let slot = &mut slots[index];
    if slot.card.is_some() {
        return hd::B_BUSY;
    }
    let card = match Card::new(
        driver.engine.clone(),
        slot.streams.0,
        slot.streams.1,
        driver.settings.card,
    ) {
        Ok(c) => Arc::new(c),
        Err(e) => return e.0,
    };
    slot.card = Some(card.clone());
    let open = Box::new(OpenCard {
        card,
        slot: index,
        driver,
    });
    // SAFETY: devfs's out pointer.
    unsafe { *cookie = Box::into_raw(open).cast() };
    hd::B_OK
}

unsafe extern "C" fn close(_cookie: *mut c_void) -> status_t {
    hd::B_OK
}

unsafe extern "C" fn free(cookie: *mut c_void) -> status_t {
    if cookie.is_null() {
        return hd::B_BAD_VALUE;
    }
    // SAFETY: the Box made in `open`; devfs calls free once, after the last I/O.
    let open = unsafe { Box::from_raw(cookie as *mut OpenCard) };
    // SAFETY: the driver outlives its open devices.
    let driver = unsafe { &*open.driver };
    let k = HaikuKernel;
    if let Ok(mut slots) = driver.slots.lock(&k, 5_000_000) {
        if let Some(s) = slots.get_mut(open.slot) {
            s.card = None;
        }
    }
    match Arc::try_unwrap(open.card) {
        Ok(card) => card.shutdown(),
        Err(_) => k.log(LogLevel::Error, format_args!("card still in use at free")),
    }
    hd::B_OK
}

unsafe extern "C" fn control(
    cookie: *mut c_void,
    op: u32,
    buffer: *mut c_void,
    length: u64,
) -> status_t {
    // SAFETY: the per-open cookie from `open`, alive until `free`.
    let Some(open) = (unsafe { (cookie as *const OpenCard).as_ref() }) else {
        return hd::B_BAD_VALUE;
    };
    status(
        open.card
            .dispatch(op, buffer as usize as u64, length as usize),
    )
}
