//! The simulated Haiku kernel (`haiku_sim`) driven by a tiny fake add-on written here in
//! Rust: module tables with `extern "C"` hooks that call the kernel exports and the device
//! manager exactly as a C add-on would. It probes the virtio device, registers its node,
//! brings the device up (features, queues, interrupts, one control request answered by
//! the model through a queue interrupt), publishes a device and serves one ioctl with
//! `user_memcpy`.

use std::ffi::{c_char, c_void, CStr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicPtr, AtomicU32, Ordering};
use std::sync::Arc;

use haiku_sim::exports::*;
use haiku_sim::{EnvConfig, Environment, HaikuRelease, SymKind};
use sim_kernel::SimKernel;
use snd_model::SndModel;
use spec::haiku_driver::{
    self as hd, DeviceAttr, DeviceAttrValue, DeviceManagerInfo, DeviceModuleInfo, DeviceNode,
    DriverModuleInfo, ModuleDependency, ModuleInfo, PhysicalEntry, Spinlock, Timer,
    VirtioDeviceInterface,
};
use spec::virtio_snd as vs;

// ---- the fake add-on ----

static DM: AtomicPtr<DeviceManagerInfo> = AtomicPtr::new(std::ptr::null_mut());

fn dm() -> &'static DeviceManagerInfo {
    // SAFETY: filled by attach from module_dependencies; the device manager outlives us.
    unsafe { &*DM.load(Ordering::SeqCst) }
}

const DRIVER: &CStr = c"drivers/audio/hmulti/fake/driver_v1";
const DEVICE: &CStr = c"drivers/audio/hmulti/fake/device_v1";
const ID_GEN: &CStr = c"fake/device_id";

/// Knobs the tests turn (one environment, hence one test, at a time).
static SUPPORTS_CALLS: AtomicU32 = AtomicU32::new(0);
static LEAK_IN_UNINIT: AtomicBool = AtomicBool::new(false);
static KEEP_PARENT_REF: AtomicBool = AtomicBool::new(false);
static INITS: AtomicI32 = AtomicI32::new(0);
static IRQS: AtomicU32 = AtomicU32::new(0);
/// init_driver waits for its control request by spinning on `queue_dequeue` (queue 0 gets
/// no callback), as the 2024 C++ driver does, instead of sleeping on a semaphore.
static BUSY_POLL: AtomicBool = AtomicBool::new(false);
/// The driver cookie init_driver made last.
static FAKE: AtomicPtr<Fake> = AtomicPtr::new(std::ptr::null_mut());

fn reset_knobs() {
    BUSY_POLL.store(false, Ordering::SeqCst);
    SUPPORTS_CALLS.store(0, Ordering::SeqCst);
    LEAK_IN_UNINIT.store(false, Ordering::SeqCst);
    KEEP_PARENT_REF.store(false, Ordering::SeqCst);
    INITS.store(0, Ordering::SeqCst);
    IRQS.store(0, Ordering::SeqCst);
}

/// The driver cookie, in kernel heap memory.
#[repr(C)]
struct Fake {
    node: *mut DeviceNode,
    virtio: *const VirtioDeviceInterface,
    dev: *mut c_void,
    queues: [*mut c_void; 4],
    sem: i32,
    lock: Spinlock,
    id: i32,
    area: i32,
    dma: *mut u8,
    phys: u64,
    last_status: u32,
}

struct Table<T>(T);
// SAFETY: immutable tables of static pointers.
unsafe impl<T> Sync for Table<T> {}

static DEPENDENCIES: Table<[ModuleDependency; 2]> = Table([
    ModuleDependency {
        name: hd::B_DEVICE_MANAGER_MODULE_NAME.as_ptr(),
        info: DM.as_ptr() as *mut *mut ModuleInfo,
    },
    ModuleDependency {
        name: std::ptr::null(),
        info: std::ptr::null_mut(),
    },
]);

static DRIVER_MODULE: Table<DriverModuleInfo> = Table(DriverModuleInfo {
    info: ModuleInfo {
        name: DRIVER.as_ptr(),
        flags: 0,
        std_ops: None,
    },
    supports_device: Some(supports_device),
    register_device: Some(register_device),
    init_driver: Some(init_driver),
    uninit_driver: Some(uninit_driver),
    register_child_devices: Some(register_child_devices),
    rescan_child_devices: None,
    device_removed: None,
    suspend: None,
    resume: None,
});

static DEVICE_MODULE: Table<DeviceModuleInfo> = Table(DeviceModuleInfo {
    info: ModuleInfo {
        name: DEVICE.as_ptr(),
        flags: 0,
        std_ops: None,
    },
    init_device: Some(init_device),
    uninit_device: Some(uninit_device),
    device_removed: None,
    open: Some(open),
    close: Some(close),
    free: Some(free_hook),
    read: None,
    write: None,
    io: None,
    control: Some(control),
    select: None,
    deselect: None,
});

static MODULES: Table<[*const ModuleInfo; 3]> = Table([
    &DRIVER_MODULE.0.info as *const ModuleInfo,
    &DEVICE_MODULE.0.info as *const ModuleInfo,
    std::ptr::null(),
]);

unsafe extern "C" fn supports_device(parent: *mut DeviceNode) -> f32 {
    SUPPORTS_CALLS.fetch_add(1, Ordering::SeqCst);
    let mut bus: *const c_char = std::ptr::null();
    let mut ty = 0u16;
    // SAFETY: the device manager's calls with our node and out pointers to locals.
    unsafe {
        if dm().get_attr_string.unwrap()(parent, hd::B_DEVICE_BUS.as_ptr(), &mut bus, false)
            != hd::B_OK
            || CStr::from_ptr(bus) != c"virtio"
            || dm().get_attr_uint16.unwrap()(
                parent,
                hd::VIRTIO_DEVICE_TYPE_ITEM.as_ptr(),
                &mut ty,
                true,
            ) != hd::B_OK
        {
            return 0.0;
        }
    }
    if ty == vs::VIRTIO_ID_SOUND {
        0.6
    } else {
        0.0
    }
}

unsafe extern "C" fn register_device(parent: *mut DeviceNode) -> hd::status_t {
    let attrs = [
        DeviceAttr {
            name: hd::B_DEVICE_PRETTY_NAME.as_ptr(),
            r#type: hd::B_STRING_TYPE,
            value: DeviceAttrValue {
                string: c"Fake Sound".as_ptr(),
            },
        },
        DeviceAttr {
            name: std::ptr::null(),
            r#type: 0,
            value: DeviceAttrValue { ui64: 0 },
        },
    ];
    // SAFETY: a terminated attribute array that outlives the call.
    unsafe {
        dm().register_node.unwrap()(
            parent,
            DRIVER.as_ptr(),
            attrs.as_ptr(),
            std::ptr::null(),
            std::ptr::null_mut(),
        )
    }
}

unsafe extern "C" fn feature_name(_feature: u64) -> *const c_char {
    std::ptr::null()
}

/// Queue interrupt: drain the control queue under the spinlock, wake the waiter.
unsafe extern "C" fn queue_callback(driver: *mut c_void, queue: *mut c_void) {
    IRQS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the cookie given to setup_interrupt.
    let f = unsafe { &mut *(driver as *mut Fake) };
    // SAFETY: the virtio table from get_driver; the queue is ours.
    unsafe {
        let v = &*f.virtio;
        let q = f.queues[queue as usize];
        let st = sim_disable_interrupts();
        sim_acquire_spinlock(&mut f.lock);
        let mut cookie = std::ptr::null_mut();
        let mut len = 0u32;
        while v.queue_dequeue.unwrap()(q, &mut cookie, &mut len) {
            sim_release_sem_etc(f.sem, 1, hd::B_DO_NOT_RESCHEDULE);
        }
        sim_release_spinlock(&mut f.lock);
        sim_restore_interrupts(st);
    }
}

unsafe extern "C" fn init_driver(node: *mut DeviceNode, cookie: *mut *mut c_void) -> hd::status_t {
    INITS.fetch_add(1, Ordering::SeqCst);
    let f = sim_calloc(1, std::mem::size_of::<Fake>()) as *mut Fake;
    if f.is_null() {
        return hd::B_NO_MEMORY;
    }
    // SAFETY: a zeroed heap block the size of Fake (all fields valid when zero).
    let f = unsafe { &mut *f };
    f.node = node;
    // SAFETY: the device manager's calls, as every virtio driver makes them.
    unsafe {
        let parent = dm().get_parent_node.unwrap()(node);
        let mut iface: *mut DriverModuleInfo = std::ptr::null_mut();
        let r = dm().get_driver.unwrap()(parent, &mut iface, &mut f.dev);
        if !KEEP_PARENT_REF.load(Ordering::SeqCst) {
            dm().put_node.unwrap()(parent);
        }
        if r != hd::B_OK {
            return r;
        }
        f.virtio = iface as *const VirtioDeviceInterface;
        let v = &*f.virtio;
        let mut features = 0u64;
        let r = v.negotiate_features.unwrap()(
            f.dev,
            hd::VIRTIO_FEATURE_VERSION_1,
            &mut features,
            Some(feature_name),
        );
        assert_eq!(r, hd::B_OK);
        let mut config = [0u32; 3];
        assert_eq!(
            v.read_device_config.unwrap()(f.dev, 0, config.as_mut_ptr().cast(), 12),
            hd::B_OK
        );
        assert!(config[1] > 0, "streams in the config: {config:?}");
        assert_eq!(
            v.alloc_queues.unwrap()(f.dev, 4, f.queues.as_mut_ptr(), std::ptr::null_mut()),
            hd::B_OK
        );
        assert_eq!(
            v.setup_interrupt.unwrap()(f.dev, None, f as *mut Fake as *mut c_void),
            hd::B_OK
        );
        let busy = BUSY_POLL.load(Ordering::SeqCst);
        for q in usize::from(busy)..4 {
            v.queue_setup_interrupt.unwrap()(f.queues[q], Some(queue_callback), q as *mut c_void);
        }
        f.sem = sim_create_sem(0, c"fake completion".as_ptr());
        let mut addr: *mut c_void = std::ptr::null_mut();
        f.area = sim_create_area(
            c"fake dma".as_ptr(),
            &mut addr,
            hd::B_ANY_KERNEL_ADDRESS,
            4096,
            hd::B_CONTIGUOUS,
            hd::B_KERNEL_READ_AREA | hd::B_KERNEL_WRITE_AREA,
        );
        assert!(f.area > 0);
        f.dma = addr.cast();
        let mut pe = PhysicalEntry {
            address: 0,
            size: 0,
        };
        assert_eq!(sim_get_memory_map(addr, 4096, &mut pe, 1), hd::B_OK);
        f.phys = pe.address;
        // One control request: PCM_INFO for stream 0, answered through an interrupt.
        let req = f.dma.cast::<u32>();
        *req = vs::VIRTIO_SND_R_PCM_INFO;
        *req.add(1) = 0;
        *req.add(2) = 1;
        *req.add(3) = 32;
        let chain = [
            PhysicalEntry {
                address: f.phys,
                size: 16,
            },
            PhysicalEntry {
                address: f.phys + 64,
                size: 4 + 32,
            },
        ];
        let st = sim_disable_interrupts();
        sim_acquire_spinlock(&mut f.lock);
        let r = v.queue_request_v.unwrap()(f.queues[0], chain.as_ptr(), 1, 1, 7 as *mut c_void);
        sim_release_spinlock(&mut f.lock);
        sim_restore_interrupts(st);
        assert_eq!(r, hd::B_OK);
        if busy {
            let (mut c, mut len) = (std::ptr::null_mut(), 0u32);
            while !v.queue_dequeue.unwrap()(f.queues[0], &mut c, &mut len) {}
            assert_eq!(
                (c as usize, len),
                (7, 4 + 32),
                "the control request completed"
            );
        } else {
            let r = sim_acquire_sem_etc(
                f.sem,
                1,
                hd::B_RELATIVE_TIMEOUT | hd::B_CAN_INTERRUPT,
                1_000_000,
            );
            assert_eq!(r, hd::B_OK, "the control request completed");
        }
        f.last_status = *f.dma.add(64).cast::<u32>();
        *cookie = f as *mut Fake as *mut c_void;
        FAKE.store(f, Ordering::SeqCst);
    }
    hd::B_OK
}

unsafe extern "C" fn uninit_driver(cookie: *mut c_void) {
    // SAFETY: our cookie.
    let f = unsafe { &mut *(cookie as *mut Fake) };
    // SAFETY: the bus calls with our device, in Haiku's teardown order.
    unsafe {
        let v = &*f.virtio;
        v.free_interrupts.unwrap()(f.dev);
        v.free_queues.unwrap()(f.dev);
        dm().free_id.unwrap()(ID_GEN.as_ptr(), f.id as u32);
    }
    sim_delete_sem(f.sem);
    sim_delete_area(f.area);
    if !LEAK_IN_UNINIT.load(Ordering::SeqCst) {
        sim_free(cookie);
    }
}

unsafe extern "C" fn register_child_devices(cookie: *mut c_void) -> hd::status_t {
    // SAFETY: our cookie.
    let f = unsafe { &mut *(cookie as *mut Fake) };
    // SAFETY: the device manager's calls with static strings and our node.
    unsafe {
        f.id = dm().create_id.unwrap()(ID_GEN.as_ptr());
        let path = format!("audio/hmulti/fake/{}\0", f.id + 1);
        dm().publish_device.unwrap()(f.node, path.as_ptr().cast(), DEVICE.as_ptr())
    }
}

unsafe extern "C" fn init_device(driver: *mut c_void, device: *mut *mut c_void) -> hd::status_t {
    // SAFETY: devfs's out pointer.
    unsafe { *device = driver };
    hd::B_OK
}

unsafe extern "C" fn uninit_device(_device: *mut c_void) {}

unsafe extern "C" fn open(
    device: *mut c_void,
    _path: *const c_char,
    _mode: i32,
    cookie: *mut *mut c_void,
) -> hd::status_t {
    let c = sim_malloc(16);
    if c.is_null() {
        return hd::B_NO_MEMORY;
    }
    // SAFETY: a fresh 16-byte block and devfs's out pointer.
    unsafe {
        *(c as *mut *mut c_void) = device;
        *cookie = c;
    }
    hd::B_OK
}

unsafe extern "C" fn close(_cookie: *mut c_void) -> hd::status_t {
    hd::B_OK
}

unsafe extern "C" fn free_hook(cookie: *mut c_void) -> hd::status_t {
    sim_free(cookie);
    hd::B_OK
}

/// ioctl 1: read a u32 from the caller, write back the value + 1 and the status of the
/// control request init_driver made. Anything else: B_DEV_INVALID_IOCTL.
unsafe extern "C" fn control(
    cookie: *mut c_void,
    op: u32,
    buffer: *mut c_void,
    length: u64,
) -> hd::status_t {
    if op != 1 {
        return hd::B_DEV_INVALID_IOCTL;
    }
    if length < 8 {
        return hd::B_BAD_VALUE;
    }
    // SAFETY: our handle cookie holds the driver cookie.
    let f = unsafe { &*(*(cookie as *mut *mut Fake)) };
    let mut v = [0u32; 2];
    let r = sim_user_memcpy(v.as_mut_ptr().cast(), buffer, 4);
    if r != hd::B_OK {
        return r;
    }
    v[0] += 1;
    v[1] = f.last_status;
    sim_user_memcpy(buffer, v.as_ptr().cast(), 8)
}

// ---- helpers ----

fn env_with(config: EnvConfig) -> (Arc<Environment>, SimKernel) {
    let kernel = SimKernel::new();
    let model = SndModel::qemu(&kernel);
    let env = Environment::with_config(kernel.clone(), model, config);
    reset_knobs();
    DM.store(std::ptr::null_mut(), Ordering::SeqCst);
    (env, kernel)
}

fn env() -> (Arc<Environment>, SimKernel) {
    env_with(EnvConfig::default())
}

fn attach(env: &Environment) -> Result<Vec<String>, String> {
    // SAFETY: the fake add-on's tables are statics.
    unsafe {
        env.attach(
            MODULES.0.as_ptr(),
            DEPENDENCIES.0.as_ptr() as *mut ModuleDependency,
        )
    }
}

fn detach(env: &Environment) {
    // SAFETY: the fake add-on is static, so always mapped.
    unsafe { env.detach() }
}

fn symbol(name: &str) -> u64 {
    kernel_symbols()
        .into_iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no symbol {name}"))
        .1
}

// ---- tests ----

#[test]
fn every_import_of_the_table_has_an_implementation() {
    let syms = kernel_symbols();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../spec/haiku_driver.toml"
    ))
    .unwrap();
    let imports = text.matches("[[import]]").count();
    assert_eq!(syms.len(), imports);
    let mut names: Vec<&str> = syms.iter().map(|s| s.0.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), syms.len(), "no duplicates");
    for (name, addr, kind) in &syms {
        assert_ne!(*addr, 0, "{name}");
        let want = if name == "__stack_chk_guard" {
            SymKind::Object
        } else {
            SymKind::Func
        };
        assert_eq!(*kind, want, "{name}");
    }
    for n in [
        "kprintf", "strcmp", "snprintf", "dprintf", "panic", "memalign", "strlcat",
    ] {
        assert!(names.contains(&n), "{n}");
    }
}

#[test]
fn probe_publish_open_ioctl_close_detach() {
    let (env, kernel) = env();
    let published = attach(&env).expect("attach");
    assert_eq!(published, ["audio/hmulti/fake/1"]);
    assert_eq!(SUPPORTS_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(
        INITS.load(Ordering::SeqCst),
        1,
        "init_driver once, during register_node"
    );
    assert!(
        IRQS.load(Ordering::SeqCst) >= 1,
        "the completion came by interrupt"
    );
    assert!(
        kernel.log_contains("publish device"),
        "{:#?}",
        kernel.log_lines()
    );

    let dev = env.open("/dev/audio/hmulti/fake/1", 2).expect("open");
    let buf = env.user_alloc(8);
    env.user_write(buf, &41u32.to_le_bytes());
    assert_eq!(dev.ioctl(1, buf, 8), hd::B_OK);
    let back = env.user_read(buf, 8);
    assert_eq!(u32::from_le_bytes(back[..4].try_into().unwrap()), 42);
    assert_eq!(
        u32::from_le_bytes(back[4..].try_into().unwrap()),
        vs::VIRTIO_SND_S_OK
    );
    // Bad user pointers: B_BAD_ADDRESS from user_memcpy, never a fault.
    let (start, end) = env.user_range().expect("user range reserved");
    assert_eq!(
        dev.ioctl(1, end - 0x10_0000, 8),
        hd::B_BAD_ADDRESS,
        "unmapped user page"
    );
    assert_eq!(
        dev.ioctl(1, buf + 4096 - 2, 8),
        hd::B_BAD_ADDRESS,
        "straddles the end"
    );
    assert_eq!(dev.ioctl(1, 0, 8), hd::B_BAD_ADDRESS);
    assert_eq!(
        dev.ioctl(1, 0xffff_ff00_0000_1000, 8),
        hd::B_BAD_ADDRESS,
        "kernel range"
    );
    assert!(start >= hd::USER_BASE && end <= hd::USER_TOP);
    assert_eq!(dev.ioctl(99, buf, 8), hd::B_DEV_INVALID_IOCTL);
    assert_eq!(
        env.open("audio/hmulti/fake/2", 2).err(),
        Some(hd::B_ENTRY_NOT_FOUND),
        "no such device"
    );
    assert_eq!(dev.close(), hd::B_OK);
    env.user_free(buf);

    detach(&env);
    assert!(env.published().is_empty(), "devices go with their node");
    env.assert_clean();
}

#[test]
fn a_device_of_another_type_is_refused() {
    let (env, _kernel) = env_with(EnvConfig {
        virtio_device_type: hd::VIRTIO_DEVICE_ID_INPUT,
        ..EnvConfig::default()
    });
    assert_eq!(attach(&env).expect("attach"), Vec::<String>::new());
    assert_eq!(SUPPORTS_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(INITS.load(Ordering::SeqCst), 0);
    assert_eq!(
        env.open("audio/hmulti/fake/1", 2).unwrap_err(),
        hd::B_ENTRY_NOT_FOUND
    );
    detach(&env);
    env.assert_clean();
}

#[test]
fn leaks_are_reported() {
    let (env, _kernel) = env();
    LEAK_IN_UNINIT.store(true, Ordering::SeqCst);
    KEEP_PARENT_REF.store(true, Ordering::SeqCst);
    attach(&env).expect("attach");
    let dev = env.open("audio/hmulti/fake/1", 2).expect("open");
    detach(&env); // with the device still open
    assert_eq!(dev.close(), hd::B_FILE_ERROR, "detach closed it");
    let report = env.check_clean().unwrap_err();
    let has = |s: &str| report.iter().any(|l| l.contains(s));
    assert!(has("was never freed"), "{report:#?}");
    assert!(has("still open at detach"), "{report:#?}");
    assert!(
        has("reference(s) from get_*_node were never put"),
        "{report:#?}"
    );
    assert_eq!(env.heap_blocks().len(), 1, "the driver cookie");
}

#[test]
fn heap_misuse_is_recorded() {
    let (env, kernel) = env();
    let p = sim_malloc(32);
    assert!(!p.is_null());
    // SAFETY: a 32-byte block.
    let first = unsafe { *(p as *const u8) };
    assert_eq!(first, 0xCC, "fresh blocks are filled");
    let q = sim_realloc(p, 64);
    assert!(!q.is_null());
    sim_free(q);
    sim_free(q);
    sim_free(0x1234 as *mut c_void);
    assert!(sim_memalign(3, 8).is_null());
    let a = sim_memalign(4096, 100);
    assert_eq!(a as usize % 4096, 0);
    assert!(sim_calloc(usize::MAX, 2).is_null());
    env.fail_malloc_after(0);
    assert!(sim_malloc(1).is_null());
    let st = sim_disable_interrupts();
    let b = sim_malloc(8);
    sim_restore_interrupts(st);
    let f = kernel.take_failures();
    assert!(f[0].contains("double free"), "{f:#?}");
    assert!(f[1].contains("never handed out"), "{f:#?}");
    assert!(f[2].contains("malloc with interrupts disabled"), "{f:#?}");
    assert_eq!(env.heap_blocks().len(), 2);
    sim_free(a);
    sim_free(b);
    env.assert_clean();
}

#[test]
fn driver_settings_are_parsed_like_haiku() {
    let (env, kernel) = env();
    env.settings(
        "# comment\nframes_per_buffer 480\nflag on\nempty\nkey = \"a b\"\nframes_per_buffer 512\n",
    );
    // SAFETY: NUL-terminated literals; the handle from load_driver_settings.
    unsafe {
        assert!(sim_load_driver_settings(c"other".as_ptr()).is_null());
        let h = sim_load_driver_settings(c"virtio_sound".as_ptr());
        assert!(!h.is_null());
        let get = |k: &CStr| {
            let v = sim_get_driver_parameter(h, k.as_ptr(), c"unknown".as_ptr(), c"noarg".as_ptr());
            CStr::from_ptr(v).to_str().unwrap().to_owned()
        };
        assert_eq!(get(c"frames_per_buffer"), "512", "the last one wins");
        assert_eq!(get(c"key"), "a b");
        assert_eq!(get(c"empty"), "noarg");
        assert_eq!(get(c"missing"), "unknown");
        assert!(sim_get_driver_boolean_parameter(
            h,
            c"flag".as_ptr(),
            false,
            false
        ));
        assert!(sim_get_driver_boolean_parameter(
            h,
            c"empty".as_ptr(),
            false,
            true
        ));
        assert!(!sim_get_driver_boolean_parameter(
            h,
            c"key".as_ptr(),
            false,
            true
        ));
        assert_eq!(sim_unload_driver_settings(h), hd::B_OK);
        assert_eq!(sim_unload_driver_settings(h), hd::B_BAD_VALUE);
        assert_eq!(kernel.take_failures().len(), 1);
        // A file that does not parse gives no handle, as on Haiku.
        env.settings("name \"unterminated\n");
        assert!(sim_load_driver_settings(c"virtio_sound".as_ptr()).is_null());
        // A handle never unloaded is a leak.
        env.settings("a 1\n");
        let _leaked = sim_load_driver_settings(c"virtio_sound".as_ptr());
    }
    let report = env.check_clean().unwrap_err();
    assert!(
        report[0].contains("driver settings \"virtio_sound\" are still loaded"),
        "{report:#?}"
    );
}

#[test]
fn user_memory_copies_check_every_address() {
    let (env, _kernel) = env();
    let u = env.user_alloc(100);
    let (start, end) = env.user_range().unwrap();
    assert!((start..end).contains(&u));
    env.user_write(u, b"hello\0");
    let mut k = [0u8; 8];
    let kp = k.as_mut_ptr() as *mut c_void;
    assert_eq!(sim_user_memcpy(kp, u as *const c_void, 6), hd::B_OK);
    assert_eq!(&k[..6], b"hello\0");
    assert_eq!(sim_user_memcpy((u + 10) as *mut c_void, kp, 5), hd::B_OK);
    assert_eq!(env.user_read(u + 10, 5), b"hello");
    // Bad addresses on either side.
    let page = 4096;
    assert_eq!(
        sim_user_memcpy(kp, (u + page - 4) as *const c_void, 8),
        hd::B_BAD_ADDRESS
    );
    assert_eq!(
        sim_user_memcpy(kp, (end - page) as *const c_void, 1),
        hd::B_BAD_ADDRESS
    );
    assert_eq!(
        sim_user_memcpy(kp, 8 as *const c_void, 1),
        hd::B_BAD_ADDRESS
    );
    assert_eq!(
        sim_user_memcpy(u as *mut c_void, 8 as *const c_void, 1),
        hd::B_BAD_ADDRESS
    );
    assert_eq!(
        sim_user_memcpy(u64::MAX as *mut c_void, kp, 2),
        hd::B_BAD_ADDRESS
    );
    assert_eq!(sim_user_memcpy(kp, kp, 0), hd::B_OK);
    assert_eq!(
        sim_user_memset(u as *mut c_void, b'x' as c_char, 3),
        hd::B_OK
    );
    assert_eq!(env.user_read(u, 4), b"xxxl");
    assert_eq!(
        sim_user_memset((end - page) as *mut c_void, 0, 1),
        hd::B_BAD_ADDRESS
    );
    // Kernel memory, over more than a page: every byte, none past the end.
    let mut big = vec![0u8; 3 * page as usize + 6];
    let bp = big.as_mut_ptr() as *mut c_void;
    assert_eq!(sim_user_memset(bp, 0x5a, 3 * page as usize + 5), hd::B_OK);
    assert!(big[..3 * page as usize + 5].iter().all(|&b| b == 0x5a));
    assert_eq!(big[3 * page as usize + 5], 0);
    // Kernel memory that runs into a page nobody may touch: B_BAD_ADDRESS, no fault.
    // SAFETY: a fresh anonymous mapping of two pages, the second made inaccessible; only
    // this test knows it, and it is unmapped below.
    let two = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            2 * page as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(
            libc::mprotect(
                (p as usize + page as usize) as *mut c_void,
                page as usize,
                libc::PROT_NONE
            ),
            0
        );
        p
    };
    assert_eq!(
        sim_user_memset((two as usize + 100) as *mut c_void, 1, page as usize),
        hd::B_BAD_ADDRESS
    );
    // SAFETY: the mapping made above, used by nothing else.
    assert_eq!(unsafe { libc::munmap(two, 2 * page as usize) }, 0);
    let mut s = [0xffu8; 4];
    let sp = s.as_mut_ptr() as *mut c_char;
    assert_eq!(
        sim_user_strlcpy(sp, u as *const c_char, 4),
        5,
        "source length"
    );
    assert_eq!(&s, b"xxx\0");
    env.user_write(u + page - 2, b"ab");
    assert_eq!(
        sim_user_strlcpy(sp, (u + page - 2) as *const c_char, 4),
        hd::B_BAD_ADDRESS as hd::ssize_t,
        "no NUL before the end"
    );
    // Interrupt context forbids it.
    let st = sim_disable_interrupts();
    sim_user_memcpy(kp, u as *const c_void, 1);
    sim_restore_interrupts(st);
    assert_eq!(env.kernel().take_failures().len(), 1);
    env.user_free(u);
    env.assert_clean();
}

#[test]
fn semaphores_areas_and_spinlocks() {
    let (env, kernel) = env();
    // SAFETY: a NUL-terminated name.
    let s = unsafe { sim_create_sem(0, c"s".as_ptr()) };
    assert!(s > 0);
    let t0 = sim_system_time();
    assert_eq!(
        sim_acquire_sem_etc(s, 1, hd::B_RELATIVE_TIMEOUT, 0),
        hd::B_WOULD_BLOCK
    );
    assert_eq!(
        sim_acquire_sem_etc(s, 1, hd::B_RELATIVE_TIMEOUT, 500),
        hd::B_TIMED_OUT
    );
    assert_eq!(sim_system_time(), t0 + 500 + 1);
    assert_eq!(
        sim_acquire_sem_etc(s, 1, hd::B_ABSOLUTE_TIMEOUT, sim_system_time() + 100),
        hd::B_TIMED_OUT
    );
    assert_eq!(sim_release_sem_etc(s, 3, 0), hd::B_OK);
    let mut count = 0;
    // SAFETY: an out pointer to a local.
    assert_eq!(unsafe { sim_get_sem_count(s, &mut count) }, hd::B_OK);
    assert_eq!(count, 3);
    assert_eq!(sim_acquire_sem_etc(s, 2, 0, 0), hd::B_OK);
    assert_eq!(
        sim_acquire_sem_etc(s, 2, hd::B_RELATIVE_TIMEOUT, 10),
        hd::B_TIMED_OUT
    );
    // SAFETY: as above.
    unsafe { sim_get_sem_count(s, &mut count) };
    assert_eq!(
        count, 1,
        "a failed multi-unit acquire gives back what it took"
    );
    assert_eq!(sim_acquire_sem_etc(s, 0, 0, 0), hd::B_BAD_VALUE);
    assert_eq!(sim_release_sem_etc(s, 0, 0), hd::B_BAD_VALUE);
    assert_eq!(sim_delete_sem(s), hd::B_OK);
    assert_eq!(sim_acquire_sem(s), hd::B_BAD_SEM_ID);
    assert_eq!(sim_release_sem(s), hd::B_BAD_SEM_ID);

    let mut addr: *mut c_void = std::ptr::null_mut();
    // SAFETY: NUL-terminated names and an out pointer to a local.
    let area = unsafe {
        sim_create_area(
            c"a".as_ptr(),
            &mut addr,
            hd::B_ANY_KERNEL_ADDRESS,
            8192,
            hd::B_FULL_LOCK,
            hd::B_READ_AREA | hd::B_WRITE_AREA,
        )
    };
    assert!(area > 0);
    assert_eq!(sim_area_for((addr as usize + 5000) as *mut c_void), area);
    let mut table = [PhysicalEntry {
        address: 1,
        size: 1,
    }; 2];
    // SAFETY: a two-entry table.
    let r = unsafe { sim_get_memory_map(addr.cast_const(), 8192, table.as_mut_ptr(), 2) };
    assert_eq!(r, hd::B_OK);
    assert_eq!(table[0].size, 8192);
    assert_eq!((table[1].address, table[1].size), (0, 0), "terminated");
    let info = kernel.areas();
    assert_eq!(table[0].address, info[0].phys);
    assert!(info[0].user);
    // SAFETY: as above (the call fails before touching anything).
    unsafe {
        assert_eq!(
            sim_create_area(
                c"odd".as_ptr(),
                &mut addr,
                hd::B_ANY_KERNEL_ADDRESS,
                100,
                hd::B_CONTIGUOUS,
                hd::B_KERNEL_READ_AREA
            ),
            hd::B_BAD_VALUE
        );
        assert_eq!(
            sim_create_area(
                c"x".as_ptr(),
                &mut addr,
                hd::B_EXACT_ADDRESS,
                4096,
                hd::B_CONTIGUOUS,
                hd::B_KERNEL_READ_AREA
            ),
            hd::B_NO_MEMORY
        );
        let k = [0u8; 16];
        assert_eq!(
            sim_get_memory_map(k.as_ptr().cast(), 16, table.as_mut_ptr(), 1),
            hd::B_BAD_ADDRESS
        );
    }
    assert_eq!(
        kernel.take_failures().len(),
        2,
        "unsupported address spec, memory outside areas"
    );
    assert_eq!(sim_delete_area(area), hd::B_OK);
    assert_eq!(sim_delete_area(area), hd::B_BAD_VALUE);
    assert_eq!(kernel.take_failures().len(), 1);

    let mut lock = Spinlock { lock: 0 };
    let st = sim_disable_interrupts();
    assert!(sim_try_acquire_spinlock(&mut lock));
    assert!(!sim_try_acquire_spinlock(&mut lock));
    sim_release_spinlock(&mut lock);
    sim_acquire_spinlock(&mut lock);
    sim_release_spinlock(&mut lock);
    sim_restore_interrupts(st);
    sim_acquire_spinlock(&mut lock); // interrupts on: misuse
    sim_release_spinlock(&mut lock);
    assert_eq!(kernel.take_failures().len(), 1);
    env.assert_clean();
}

#[test]
fn device_manager_attributes_ids_and_references() {
    let (env, kernel) = env();
    attach(&env).expect("attach");
    let dm = dm();
    // SAFETY: the device manager's calls with its own nodes and out pointers to locals.
    unsafe {
        let root = dm.get_root_node.unwrap()();
        let mut child: *mut DeviceNode = std::ptr::null_mut();
        // A NULL attribute list matches nothing (Haiku's CompareTo).
        assert_eq!(
            dm.get_next_child_node.unwrap()(root, std::ptr::null(), &mut child),
            hd::B_ENTRY_NOT_FOUND
        );
        let any = [DeviceAttr {
            name: std::ptr::null(),
            r#type: 0,
            value: DeviceAttrValue { ui64: 0 },
        }];
        assert_eq!(
            dm.get_next_child_node.unwrap()(root, any.as_ptr(), &mut child),
            hd::B_OK
        );
        // Haiku's iteration ends after its first answer (and puts the previous node).
        assert_eq!(
            dm.get_next_child_node.unwrap()(root, any.as_ptr(), &mut child),
            hd::B_ENTRY_NOT_FOUND
        );
        // The virtio device node, found depth-first.
        let bus = [
            DeviceAttr {
                name: hd::B_DEVICE_BUS.as_ptr(),
                r#type: hd::B_STRING_TYPE,
                value: DeviceAttrValue {
                    string: c"virtio".as_ptr(),
                },
            },
            any[0],
        ];
        let mut virtio: *mut DeviceNode = std::ptr::null_mut();
        assert_eq!(
            dm.find_child_node.unwrap()(root, bus.as_ptr(), &mut virtio),
            hd::B_OK
        );
        let mut ty = 0u16;
        assert_eq!(
            dm.get_attr_uint16.unwrap()(
                virtio,
                hd::VIRTIO_DEVICE_TYPE_ITEM.as_ptr(),
                &mut ty,
                false
            ),
            hd::B_OK
        );
        assert_eq!(ty, 25);
        let mut align = 0u16;
        assert_eq!(
            dm.get_attr_uint16.unwrap()(
                virtio,
                hd::VIRTIO_VRING_ALIGNMENT_ITEM.as_ptr(),
                &mut align,
                false
            ),
            hd::B_NAME_NOT_FOUND
        );
        assert_eq!(
            dm.get_attr_uint16.unwrap()(
                virtio,
                hd::VIRTIO_VRING_ALIGNMENT_ITEM.as_ptr(),
                &mut align,
                true
            ),
            hd::B_OK
        );
        assert_eq!(align, 4096);
        let mut v8 = 0u8;
        assert_eq!(
            dm.get_attr_uint8.unwrap()(
                virtio,
                hd::VIRTIO_DEVICE_TYPE_ITEM.as_ptr(),
                &mut v8,
                false
            ),
            hd::B_NAME_NOT_FOUND,
            "wrong type"
        );
        let mut attr: *mut DeviceAttr = std::ptr::null_mut();
        let mut n = 0;
        while dm.get_next_attr.unwrap()(virtio, &mut attr) == hd::B_OK {
            n += 1;
        }
        assert_eq!(n, 2);
        dm.put_node.unwrap()(virtio);
        dm.put_node.unwrap()(root);
        dm.put_node.unwrap()(root); // one too many
        assert_eq!(kernel.take_failures().len(), 1);

        // Ids: lowest free first, per generator; freeing an unknown one fails.
        let g = c"test/ids".as_ptr();
        assert_eq!(dm.create_id.unwrap()(g), 0);
        assert_eq!(dm.create_id.unwrap()(g), 1);
        assert_eq!(dm.free_id.unwrap()(g, 0), hd::B_OK);
        assert_eq!(dm.create_id.unwrap()(g), 0);
        assert_eq!(dm.free_id.unwrap()(g, 5), hd::B_BAD_VALUE);
        assert_eq!(
            dm.free_id.unwrap()(c"nobody".as_ptr(), 0),
            hd::B_NAME_NOT_FOUND
        );
        // Publishing twice at one path, and Haiku's disabled unpublish.
        let mut drv: *mut DeviceNode = std::ptr::null_mut();
        let mine = [
            DeviceAttr {
                name: hd::B_DEVICE_PRETTY_NAME.as_ptr(),
                r#type: hd::B_STRING_TYPE,
                value: DeviceAttrValue {
                    string: c"Fake Sound".as_ptr(),
                },
            },
            any[0],
        ];
        assert_eq!(
            dm.find_child_node.unwrap()(root, mine.as_ptr(), &mut drv),
            hd::B_OK
        );
        assert_eq!(
            dm.publish_device.unwrap()(drv, c"audio/hmulti/fake/1".as_ptr(), DEVICE.as_ptr()),
            -2147459070
        );
        assert_eq!(
            dm.unpublish_device.unwrap()(drv, c"audio/hmulti/fake/1".as_ptr()),
            hd::B_ENTRY_NOT_FOUND
        );
        // A twin of an existing node is refused.
        assert_eq!(
            dm.register_node.unwrap()(
                virtio,
                DRIVER.as_ptr(),
                mine.as_ptr(),
                std::ptr::null(),
                std::ptr::null_mut()
            ),
            hd::B_NAME_IN_USE
        );
        dm.put_node.unwrap()(drv);
    }
    detach(&env);
    let report = env.check_clean().unwrap_err();
    assert!(
        report
            .iter()
            .any(|l| l.contains("\"test/ids\": ids {0, 1} were never freed")),
        "{report:#?}"
    );
}

static THREAD_ARG: AtomicI64 = AtomicI64::new(0);

unsafe extern "C" fn thread_body(arg: *mut c_void) -> hd::status_t {
    sim_snooze(1000);
    THREAD_ARG.store(arg as i64, Ordering::SeqCst);
    7
}

static TIMER_AT: AtomicI64 = AtomicI64::new(0);
static TIMER_IRQ_OFF: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn timer_hook(_t: *mut Timer) -> i32 {
    TIMER_AT.store(sim_system_time(), Ordering::SeqCst);
    // Interrupts are off in a timer hook: disable_interrupts reports them already off.
    let st = sim_disable_interrupts();
    TIMER_IRQ_OFF.store(st == 0, Ordering::SeqCst);
    sim_restore_interrupts(st);
    hd::B_HANDLED_INTERRUPT
}

#[test]
fn threads_and_timers_run_on_the_simulated_clock() {
    let (env, _kernel) = env();
    // SAFETY: a valid thread function and name.
    let t = unsafe {
        sim_spawn_kernel_thread(Some(thread_body), c"worker".as_ptr(), 10, 5 as *mut c_void)
    };
    assert!(t > 0);
    // SAFETY: as above.
    assert_eq!(unsafe { sim_find_thread(c"worker".as_ptr()) }, t);
    assert_eq!(sim_resume_thread(t), hd::B_OK);
    let mut ret = 0;
    // SAFETY: an out pointer to a local.
    assert_eq!(unsafe { sim_wait_for_thread(t, &mut ret) }, hd::B_OK);
    assert_eq!(ret, 7);
    assert_eq!(THREAD_ARG.load(Ordering::SeqCst), 5);
    assert_eq!(
        sim_resume_thread(t),
        hd::B_BAD_THREAD_ID,
        "gone after the wait"
    );

    // SAFETY: a zeroed timer is a valid `struct timer`.
    let mut timer: Timer = unsafe { std::mem::zeroed() };
    let now = sim_system_time();
    let relative = hd::B_ONE_SHOT_RELATIVE_TIMER;
    // SAFETY: the timer lives until it fires (below).
    let r = unsafe { sim_add_timer(&mut timer, Some(timer_hook), 2500, relative) };
    assert_eq!(r, hd::B_OK);
    assert_eq!(sim_snooze(10_000), hd::B_OK);
    assert_eq!(TIMER_AT.load(Ordering::SeqCst), now + 2500);
    assert!(TIMER_IRQ_OFF.load(Ordering::SeqCst));
    assert!(sim_cancel_timer(&mut timer), "it had fired");
    // SAFETY: as above; cancelled before it fires.
    let r = unsafe { sim_add_timer(&mut timer, Some(timer_hook), 1000, hd::B_PERIODIC_TIMER) };
    assert_eq!(r, hd::B_OK);
    assert!(!sim_cancel_timer(&mut timer));
    env.assert_clean();
}

/// Time passes while code spins: a driver that waits for its control answer by polling
/// `queue_dequeue` gets it (the device answers while it spins, as QEMU does on Haiku), and a
/// loop on `system_time()` ends at its deadline.
#[test]
fn spinning_lets_time_pass() {
    let (env, _kernel) = env();
    BUSY_POLL.store(true, Ordering::SeqCst);
    let t0 = sim_system_time();
    let paths = attach(&env).unwrap();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(sim_system_time() > t0, "the answer took device time");
    assert_eq!(IRQS.load(Ordering::SeqCst), 0, "queue 0 has no callback");

    // 500 µs of spinning on the clock ends within one quantum (10 µs) of the deadline.
    let end = sim_system_time() + 500;
    let mut calls = 0u32;
    let last = loop {
        let now = sim_system_time();
        if now >= end {
            break now;
        }
        calls += 1;
    };
    let over = last - end;
    assert!((0..10).contains(&over), "{over} µs late");
    // A spin starts after 1000 calls at one instant; then every call moves time 10 µs.
    assert!((1000..1100).contains(&calls), "{calls} calls");
    detach(&env);
    env.assert_clean();
}

/// The child of [`a_queue_spun_on_forever_is_reported`]: polls a queue nothing was posted to.
#[test]
fn child_spins_on_an_idle_queue() {
    if std::env::var(CHILD).as_deref() != Ok("child_spins_on_an_idle_queue") {
        return;
    }
    let (env, _kernel) = env();
    assert!(attach(&env).is_ok());
    let f = FAKE.load(Ordering::SeqCst);
    // SAFETY: the attached fake driver's cookie and its virtio table.
    unsafe {
        let v = &*(*f).virtio;
        while !v.queue_dequeue.unwrap()((*f).queues[3], std::ptr::null_mut(), std::ptr::null_mut())
        {
        }
    }
    println!("the idle queue answered");
}

#[test]
fn a_queue_spun_on_forever_is_reported() {
    let out = run_child("child_spins_on_an_idle_queue");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // "a virtqueue polled in vain from T0 µs to T1 µs: ..." with T1 - T0 >= 10 s.
    let line = stderr
        .lines()
        .find(|l| l.contains("the driver busy-polls a queue the device does not complete"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let t: Vec<i64> = line
        .split("polled in vain from ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    assert!(t[1] - t[0] >= 10_000_000, "{line}");
}

#[test]
fn snooze_takes_haikus_clock_ids() {
    let (env, kernel) = env();
    // The values of headers/posix/time.h and headers/os/support/Errors.h, written out.
    const CLOCK_MONOTONIC: i32 = 0;
    const CLOCK_REALTIME: i32 = -1;
    const CLOCK_PROCESS_CPUTIME_ID: i32 = -2;
    const CLOCK_THREAD_CPUTIME_ID: i32 = -3;
    const RELATIVE: u32 = 0x08;
    const ABSOLUTE: u32 = 0x10;
    const B_BAD_VALUE: i32 = 0x8000_0005_u32 as i32;
    const ENOTSUP: i32 = 0x8000_7038_u32 as i32;

    // The wall clock starts at 2026-01-01 00:00 UTC and moves with the system time.
    let epoch_2026: i64 = 1_767_225_600 * 1_000_000;
    assert_eq!(sim_real_time_clock_usecs() - sim_system_time(), epoch_2026);

    let t0 = sim_system_time();
    assert_eq!(sim_snooze_etc(1000, CLOCK_MONOTONIC, RELATIVE), hd::B_OK);
    assert_eq!(sim_system_time(), t0 + 1000);
    // A relative sleep on the real-time clock is as long as on the monotonic one.
    assert_eq!(sim_snooze_etc(500, CLOCK_REALTIME, RELATIVE), hd::B_OK);
    assert_eq!(sim_system_time(), t0 + 1500);
    // Absolute deadlines: a system time, and a wall-clock time.
    assert_eq!(sim_snooze_until(t0 + 2200, CLOCK_MONOTONIC), hd::B_OK);
    assert_eq!(sim_system_time(), t0 + 2200);
    let wall = sim_real_time_clock_usecs();
    assert_eq!(sim_snooze_until(wall + 2500, CLOCK_REALTIME), hd::B_OK);
    assert_eq!(sim_system_time(), t0 + 4700);
    assert_eq!(
        sim_snooze_etc(wall, CLOCK_REALTIME, ABSOLUTE),
        hd::B_OK,
        "past"
    );
    assert_eq!(sim_system_time(), t0 + 4700);

    // Clocks a kernel thread cannot sleep on change nothing.
    assert_eq!(
        sim_snooze_etc(10, CLOCK_THREAD_CPUTIME_ID, RELATIVE),
        B_BAD_VALUE
    );
    assert_eq!(
        sim_snooze_etc(10, CLOCK_PROCESS_CPUTIME_ID, RELATIVE),
        ENOTSUP
    );
    assert_eq!(sim_snooze_etc(10, 7, RELATIVE), ENOTSUP);
    assert_eq!(sim_system_time(), t0 + 4700);
    assert!(kernel.take_failures().is_empty());

    // No timeout flag, or an infinite timeout: Haiku's thread would never wake.
    assert_eq!(sim_snooze_etc(10, CLOCK_MONOTONIC, 0), hd::B_OK);
    assert_eq!(sim_snooze(i64::MAX), hd::B_OK);
    assert_eq!(sim_system_time(), t0 + 4700);
    let f = kernel.take_failures();
    assert_eq!(f.len(), 2, "{f:#?}");
    assert!(f.iter().all(|f| f.contains("sleeps forever")), "{f:#?}");
    env.assert_clean();
}

#[test]
fn dprintf_and_snprintf_go_through_the_c_shim() {
    let (env, kernel) = env();
    type Printf = unsafe extern "C" fn(*const c_char, ...);
    type Snprintf = unsafe extern "C" fn(*mut c_char, usize, *const c_char, ...) -> i32;
    // SAFETY: the addresses are the shim's functions with these C signatures.
    unsafe {
        let dprintf: Printf = std::mem::transmute(symbol("dprintf") as usize);
        let snprintf: Snprintf = std::mem::transmute(symbol("snprintf") as usize);
        dprintf(c"fake: %s %d ".as_ptr(), c"value".as_ptr(), 42);
        dprintf(c"and the rest\n".as_ptr());
        let mut buf = [0 as c_char; 8];
        assert_eq!(
            snprintf(
                buf.as_mut_ptr(),
                8,
                c"%s-%x".as_ptr(),
                c"abcdef".as_ptr(),
                255
            ),
            9
        );
        assert_eq!(CStr::from_ptr(buf.as_ptr()), c"abcdef-");
    }
    assert!(
        kernel.log_contains("fake: value 42 and the rest"),
        "{:#?}",
        kernel.log_lines()
    );
    // SAFETY: strerror returns a static string.
    let s = unsafe { CStr::from_ptr(sim_strerror(hd::B_BAD_ADDRESS)) };
    assert_eq!(s, c"B_BAD_ADDRESS");
    env.assert_clean();
}

/// R1/beta5's bus manager calls the name callback without a NULL check; nightly checks
/// (b57d5d2f41). A queue cookie the bus never handed out is recorded on both.
#[test]
fn a_null_feature_name_callback_is_recorded_on_beta5() {
    for haiku in HaikuRelease::ALL {
        null_feature_name_on(haiku);
    }
}

fn null_feature_name_on(haiku: HaikuRelease) {
    let (env, kernel) = env_with(EnvConfig {
        haiku,
        ..EnvConfig::default()
    });
    attach(&env).expect("attach");
    let v = dm();
    // SAFETY: the device manager's and the bus's own calls on the virtio node.
    unsafe {
        let root = v.get_root_node.unwrap()();
        let any = [DeviceAttr {
            name: std::ptr::null(),
            r#type: 0,
            value: DeviceAttrValue { ui64: 0 },
        }];
        let bus = [
            DeviceAttr {
                name: hd::B_DEVICE_BUS.as_ptr(),
                r#type: hd::B_STRING_TYPE,
                value: DeviceAttrValue {
                    string: c"virtio".as_ptr(),
                },
            },
            any[0],
        ];
        let mut node: *mut DeviceNode = std::ptr::null_mut();
        assert_eq!(
            v.find_child_node.unwrap()(root, bus.as_ptr(), &mut node),
            hd::B_OK
        );
        let mut iface: *mut DriverModuleInfo = std::ptr::null_mut();
        let mut dev: *mut c_void = std::ptr::null_mut();
        assert_eq!(v.get_driver.unwrap()(node, &mut iface, &mut dev), hd::B_OK);
        let virtio = &*(iface as *const VirtioDeviceInterface);
        let mut f = 0u64;
        virtio.negotiate_features.unwrap()(dev, hd::VIRTIO_FEATURE_VERSION_1, &mut f, None);
        // A queue cookie the bus never handed out.
        assert!(!virtio.queue_dequeue.unwrap()(
            0x10 as *mut c_void,
            std::ptr::null_mut(),
            std::ptr::null_mut()
        ));
        v.put_node.unwrap()(node);
        v.put_node.unwrap()(root);
    }
    let f = kernel.take_failures();
    assert_eq!(
        f.iter().any(|l| l.contains("NULL get_feature_name")),
        haiku == HaikuRelease::Beta5,
        "{haiku:?}: {f:#?}"
    );
    assert!(f.iter().any(|l| l.contains("queue cookie 0x10")), "{f:#?}");
    // The test negotiates on a device the attached driver already set up: the model sees
    // exactly that, and nothing else.
    assert_eq!(
        env.model().take_violations(),
        vec!["negotiate_features after alloc_queues".to_owned()]
    );
    detach(&env);
    env.assert_clean();
}

// ---- what ends the process: run in a child process ----

const CHILD: &str = "SIM_HAIKU_CHILD";

fn run_child(test: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .unwrap()
}

#[test]
fn child_touches_user_memory() {
    if std::env::var(CHILD).as_deref() != Ok("child_touches_user_memory") {
        return;
    }
    let (env, _kernel) = env();
    let u = env.user_alloc(16);
    // SAFETY: deliberately not: this is the add-on bug the simulator must catch.
    let v = unsafe { std::ptr::read_volatile(u as *const u32) };
    println!("read {v} without a fault");
}

#[test]
fn a_direct_access_to_user_memory_is_an_smap_violation() {
    let out = run_child("child_touches_user_memory");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(haiku_sim::user::SMAP_EXIT_CODE),
        "{stderr}"
    );
    assert!(
        stderr.contains("SMAP violation: the add-on touched user address 0x"),
        "{stderr}"
    );
    assert!(stderr.contains("from code address 0x"), "{stderr}");
}

#[test]
fn child_panics() {
    if std::env::var(CHILD).as_deref() != Ok("child_panics") {
        return;
    }
    let (_env, _kernel) = env();
    // SAFETY: the shim's panic with a format and its argument; it does not return.
    unsafe {
        let panic: unsafe extern "C" fn(*const c_char, ...) =
            std::mem::transmute(symbol("panic") as usize);
        panic(c"driver gave up: %d".as_ptr(), 17);
    }
}

#[test]
fn kernel_panic_stops_the_simulation_with_its_message() {
    let out = run_child("child_panics");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("KERNEL PANIC (the add-on called panic): driver gave up: 17"),
        "{stderr}"
    );
}
