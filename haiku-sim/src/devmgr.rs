//! The device manager (`system/device_manager/v1`) and devfs, for one virtio device.
//!
//! The node tree is Haiku's in miniature: a root, the virtio PCI controller node carrying
//! `VIRTIO_DEVICE_TYPE_ITEM`, and the virtio device node (`B_DEVICE_BUS` = "virtio", the
//! device type), whose driver is the virtio bus manager: `get_driver` on it returns the
//! [`virtio_device_interface`](super::virtio_bus) table and the device cookie.
//!
//! Registration follows `device_manager.cpp`: `register_node` refuses a twin of an existing
//! child (`B_NAME_IN_USE`), then initialises the new node's driver at once (`init_driver`),
//! lets it `register_child_devices`, and probes below it only if it is a bus (has
//! `B_DEVICE_BUS`); an error on the way unregisters the node again. Probing asks every
//! `driver_v1` module of the image `supports_device` and lets the best positive score
//! `register_device`. `publish_device` puts a devfs entry (path relative to /dev) on the
//! node (and, on nightly, the node attribute `B_DEVICE_PUBLISHED_PATH`); opening it initialises the device module (`init_device`) on the first open and
//! uninitialises it after the last `free`, as devfs does.
//!
//! Two Haiku behaviours are kept on purpose, because a driver that relies on the opposite
//! works in a lax simulator and fails on Haiku: `get_next_child_node` finds nothing after
//! its first answer (its skip loop never stops at the previous node), and
//! `unpublish_device` always answers `B_ENTRY_NOT_FOUND` (its body is disabled); devices go
//! away with their node.
//!
//! References the add-on takes (`get_root_node`, `get_parent_node`, child iteration) are
//! counted per node; a `put_node` without one is recorded, and so is a reference still held
//! or an id still allocated when the driver is uninitialised.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::{Arc, Mutex};

use platform::Status;
use spec::haiku_driver::{
    self as hd, status_t, type_code, DeviceAttr, DeviceAttrRaw, DeviceAttrValue, DeviceManagerInfo,
    DeviceModuleInfo, DeviceNode, DriverModuleInfo, IoResource, ModuleInfo,
};

use super::exports::{c_string, B_FILE_EXISTS};
use super::{current, Core, HaikuRelease};
use sim_kernel::report::lock;

/// A static C table of raw pointers that the add-on only reads.
#[repr(transparent)]
pub(crate) struct Table<T>(pub T);

// SAFETY: the wrapped tables are immutable and hold only pointers to static data and to
// functions, which any thread may read.
unsafe impl<T> Sync for Table<T> {}

/// The device manager module (`B_DEVICE_MANAGER_MODULE_NAME`), every hook in order.
pub(crate) static DEVICE_MANAGER: Table<DeviceManagerInfo> = Table(DeviceManagerInfo {
    info: ModuleInfo {
        name: hd::B_DEVICE_MANAGER_MODULE_NAME.as_ptr(),
        flags: 0,
        std_ops: None,
    },
    rescan_node: Some(rescan_node),
    register_node: Some(register_node),
    unregister_node: Some(unregister_node),
    get_driver: Some(get_driver),
    get_root_node: Some(get_root_node),
    get_next_child_node: Some(get_next_child_node),
    get_parent_node: Some(get_parent_node),
    put_node: Some(put_node),
    publish_device: Some(publish_device),
    unpublish_device: Some(unpublish_device),
    create_id: Some(create_id),
    free_id: Some(free_id),
    get_attr_uint8: Some(get_attr_uint8),
    get_attr_uint16: Some(get_attr_uint16),
    get_attr_uint32: Some(get_attr_uint32),
    get_attr_uint64: Some(get_attr_uint64),
    get_attr_string: Some(get_attr_string),
    get_attr_raw: Some(get_attr_raw),
    get_next_attr: Some(get_next_attr),
    find_child_node: Some(find_child_node),
});

/// `GENERATOR_MAX_ID` of Haiku's id generator.
const MAX_ID: u32 = 64;
/// How deep probing may nest before a driver is taken to claim its own nodes.
const MAX_PROBE_DEPTH: u32 = 4;
/// Attribute arrays longer than this are taken to be unterminated.
const MAX_ATTRS: usize = 1024;

// ---- attributes ----

#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Str(Option<CString>),
    Raw(Vec<u8>),
}

impl Value {
    fn type_code(&self) -> type_code {
        match self {
            Value::U8(_) => hd::B_UINT8_TYPE,
            Value::U16(_) => hd::B_UINT16_TYPE,
            Value::U32(_) => hd::B_UINT32_TYPE,
            Value::U64(_) => hd::B_UINT64_TYPE,
            Value::Str(_) => hd::B_STRING_TYPE,
            Value::Raw(_) => hd::B_RAW_TYPE,
        }
    }
}

#[derive(Clone, Debug)]
struct Attr {
    name: CString,
    value: Value,
}

fn attr(name: &CStr, value: Value) -> Attr {
    Attr {
        name: name.to_owned(),
        value,
    }
}

/// Reads a `{NULL}`-terminated C attribute array.
///
/// # Safety
///
/// `p` is NULL or a terminated array of attributes whose pointers are valid.
unsafe fn attrs_from_c(p: *const DeviceAttr) -> Result<Vec<Attr>, String> {
    let mut v = Vec::new();
    if p.is_null() {
        return Ok(v);
    }
    for i in 0..MAX_ATTRS {
        // SAFETY: the array is terminated (the caller's contract) and we stop at the end.
        let a = unsafe { *p.add(i) };
        if a.name.is_null() {
            return Ok(v);
        }
        // SAFETY: a non-NULL name is a string.
        let name = unsafe { CStr::from_ptr(a.name) }.to_owned();
        // SAFETY: the union member named by the type (all reads are of plain data).
        let value = unsafe {
            match a.r#type {
                hd::B_UINT8_TYPE => Value::U8(a.value.ui8),
                hd::B_UINT16_TYPE => Value::U16(a.value.ui16),
                hd::B_UINT32_TYPE => Value::U32(a.value.ui32),
                hd::B_UINT64_TYPE => Value::U64(a.value.ui64),
                hd::B_STRING_TYPE => Value::Str(
                    (!a.value.string.is_null()).then(|| CStr::from_ptr(a.value.string).to_owned()),
                ),
                hd::B_RAW_TYPE => {
                    let DeviceAttrRaw { data, length } = a.value.raw;
                    if data.is_null() && length > 0 {
                        return Err(format!("raw attribute {name:?} with NULL data"));
                    }
                    if length > 1 << 20 {
                        return Err(format!("raw attribute {name:?} of {length} bytes"));
                    }
                    Value::Raw(if length == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(data.cast::<u8>(), length as usize).to_vec()
                    })
                }
                t => return Err(format!("attribute {name:?} of unknown type {t:#x}")),
            }
        };
        v.push(Attr { name, value });
    }
    Err(format!(
        "attribute array longer than {MAX_ATTRS} entries (no terminator?)"
    ))
}

/// A node's attributes: the owned values and the C array pointing into them.
struct Attrs {
    list: Vec<Attr>,
    table: Box<[DeviceAttr]>,
    /// Tables replaced by [`Attrs::push`], kept because the add-on may hold a pointer into
    /// one (`get_next_attr`), as a Haiku attribute stays where it is when another is added.
    retired: Vec<Box<[DeviceAttr]>>,
}

// SAFETY: `table` and `retired` hold pointers only into `list`'s heap buffers (a CString's
// or a Vec's contents, which stay put when `list` grows), owned by this value; no buffer is
// mutated or freed while the value lives.
unsafe impl Send for Attrs {}

impl Attrs {
    /// Adds an attribute at the end, as the device manager adds one to a node.
    fn push(&mut self, a: Attr) {
        let mut list = std::mem::take(&mut self.list);
        list.push(a);
        let old = std::mem::replace(&mut self.table, Attrs::table(&list));
        self.retired.push(old);
        self.list = list;
    }

    fn new(list: Vec<Attr>) -> Attrs {
        Attrs {
            table: Attrs::table(&list),
            list,
            retired: Vec::new(),
        }
    }

    /// The C array over `list`.
    fn table(list: &[Attr]) -> Box<[DeviceAttr]> {
        list.iter()
            .map(|a| DeviceAttr {
                name: a.name.as_ptr(),
                r#type: a.value.type_code(),
                value: match &a.value {
                    Value::U8(v) => DeviceAttrValue { ui8: *v },
                    Value::U16(v) => DeviceAttrValue { ui16: *v },
                    Value::U32(v) => DeviceAttrValue { ui32: *v },
                    Value::U64(v) => DeviceAttrValue { ui64: *v },
                    Value::Str(s) => DeviceAttrValue {
                        string: s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                    },
                    Value::Raw(r) => DeviceAttrValue {
                        raw: DeviceAttrRaw {
                            data: r.as_ptr().cast(),
                            length: r.len() as u64,
                        },
                    },
                },
            })
            .collect()
    }

    fn find(&self, name: &[u8], ty: type_code) -> Option<usize> {
        self.list
            .iter()
            .position(|a| a.value.type_code() == ty && a.name.as_bytes() == name)
    }

    /// Haiku's `CompareTo`: every queried attribute exists (first of its name) with an equal
    /// value. A NULL query matches nothing; an empty one matches everything.
    fn matches(&self, query: Option<&[Attr]>) -> bool {
        let Some(query) = query else {
            return false;
        };
        query.iter().all(|q| {
            self.list
                .iter()
                .find(|a| a.name == q.name)
                .is_some_and(|a| a.value == q.value)
        })
    }
}

// ---- nodes ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    None,
    /// The virtio bus manager (the virtio device node).
    Bus,
    /// An add-on driver module with its cookie.
    Module {
        info: usize,
        cookie: usize,
    },
}

struct Node {
    /// What a `device_node*` points to: a real allocation, so the add-on's pointer is unique.
    _token: Box<u64>,
    id: u64,
    parent: Option<usize>,
    children: Vec<usize>,
    module: String,
    attrs: Attrs,
    driver: Driver,
    /// References the add-on holds (from get_*_node), not yet put.
    refs: i64,
    registered: bool,
    /// Registered by the add-on (as opposed to the simulated bus).
    from_addon: bool,
    /// Its device went away (`NODE_FLAG_DEVICE_REMOVED`): its devices cannot be opened,
    /// and its driver is uninitialised once none of them is open.
    removed: bool,
}

struct Published {
    path: String,
    node: usize,
    module: String,
    /// Open handles; the device module is initialised while it is positive.
    opens: u32,
    device_cookie: usize,
    device_module: usize,
}

struct OpenFile {
    path: String,
    cookie: usize,
    /// Calls into the device module (`control`) on this handle that have not returned: the
    /// file descriptor references they hold (`get_fd` in Haiku's `fd.cpp`).
    in_flight: u32,
    /// `close` ran (the descriptor left the team's table): new calls fail with
    /// `B_FILE_ERROR`, and `free` follows when the last call in flight returns.
    closed: bool,
}

struct Tree {
    nodes: HashMap<usize, Node>,
    root: usize,
    virtio: usize,
    next_id: u64,
    generators: BTreeMap<String, BTreeSet<u32>>,
    published: Vec<Published>,
    opens: HashMap<u64, OpenFile>,
    next_open: u64,
    probe_depth: u32,
    /// Hooks that failed during the current attach, for its error message.
    hook_errors: Vec<String>,
}

impl Tree {
    fn add(
        &mut self,
        parent: Option<usize>,
        module: &str,
        attrs: Vec<Attr>,
        from_addon: bool,
    ) -> usize {
        self.next_id += 1;
        let token = Box::new(self.next_id);
        let key = &*token as *const u64 as usize;
        self.nodes.insert(
            key,
            Node {
                _token: token,
                id: self.next_id,
                parent,
                children: Vec::new(),
                module: module.to_owned(),
                attrs: Attrs::new(attrs),
                driver: Driver::None,
                refs: 0,
                registered: false,
                from_addon,
                removed: false,
            },
        );
        if let Some(p) = parent.and_then(|p| self.nodes.get_mut(&p)) {
            p.children.push(key);
        }
        key
    }

    /// Removes a node, its children and their devices; returns what the add-on still held.
    fn remove(&mut self, key: usize) -> Vec<String> {
        let mut held = Vec::new();
        let Some(node) = self.nodes.remove(&key) else {
            return held;
        };
        for c in node.children {
            held.extend(self.remove(c));
        }
        if let Some(p) = node.parent.and_then(|p| self.nodes.get_mut(&p)) {
            p.children.retain(|&c| c != key);
        }
        self.published.retain(|p| p.node != key);
        if node.refs > 0 {
            held.push(format!(
                "node {} ({}): {} reference(s) from get_*_node were never put",
                node.id, node.module, node.refs
            ));
        }
        held
    }

    /// Haiku's `find_attr`: by name and type, on the node or (recursive) its ancestors.
    fn find_attr(
        &self,
        mut key: usize,
        name: &[u8],
        ty: type_code,
        recursive: bool,
    ) -> Option<(usize, usize)> {
        loop {
            let node = self.nodes.get(&key)?;
            if let Some(i) = node.attrs.find(name, ty) {
                return Some((key, i));
            }
            match node.parent {
                Some(p) if recursive => key = p,
                _ => return None,
            }
        }
    }
}

/// The device manager's state for one environment.
pub(crate) struct DeviceManager {
    tree: Mutex<Tree>,
}

fn status_name(s: status_t) -> String {
    format!("{:?} ({s:#x})", Status(s))
}

/// A copy of the driver module table at `info`.
///
/// # Safety
///
/// `info` points to a `driver_module_info` that stays valid (a module of the image).
unsafe fn driver_module(info: usize) -> DriverModuleInfo {
    // SAFETY: the caller's contract.
    unsafe { *(info as *const DriverModuleInfo) }
}

impl DeviceManager {
    /// The tree a virtio PCI device of type `virtio_type` gives: root, controller, device.
    pub(crate) fn new(virtio_type: u16) -> DeviceManager {
        let mut t = Tree {
            nodes: HashMap::new(),
            root: 0,
            virtio: 0,
            next_id: 0,
            generators: BTreeMap::new(),
            published: Vec::new(),
            opens: HashMap::new(),
            next_open: 0,
            probe_depth: 0,
            hook_errors: Vec::new(),
        };
        let root = t.add(
            None,
            "system/devices_root/driver_v1",
            vec![attr(
                hd::B_DEVICE_PRETTY_NAME,
                Value::Str(Some(c"Devices Root".into())),
            )],
            false,
        );
        let controller = t.add(
            Some(root),
            "busses/virtio/virtio_pci/device/v1",
            vec![
                attr(
                    hd::B_DEVICE_PRETTY_NAME,
                    Value::Str(Some(c"Virtio PCI Device".into())),
                ),
                attr(hd::VIRTIO_DEVICE_TYPE_ITEM, Value::U16(virtio_type)),
                attr(hd::VIRTIO_VRING_ALIGNMENT_ITEM, Value::U16(4096)),
                attr(hd::VIRTIO_VERSION_ITEM, Value::U8(1)),
            ],
            false,
        );
        let virtio = t.add(
            Some(controller),
            "bus_managers/virtio/device/v1",
            vec![
                attr(
                    hd::B_DEVICE_BUS,
                    Value::Str(Some(hd::VIRTIO_BUS_NAME.into())),
                ),
                attr(hd::VIRTIO_DEVICE_TYPE_ITEM, Value::U16(virtio_type)),
            ],
            false,
        );
        for k in [root, controller, virtio] {
            if let Some(n) = t.nodes.get_mut(&k) {
                n.registered = true;
            }
        }
        if let Some(n) = t.nodes.get_mut(&virtio) {
            n.driver = Driver::Bus;
        }
        t.root = root;
        t.virtio = virtio;
        DeviceManager {
            tree: Mutex::new(t),
        }
    }

    /// The virtio device node the add-on's drivers are probed against.
    pub(crate) fn virtio_node(&self) -> *mut DeviceNode {
        lock(&self.tree).virtio as *mut DeviceNode
    }

    /// `(path, device module)` of every published device, in publishing order.
    pub(crate) fn published(&self) -> Vec<(String, String)> {
        lock(&self.tree)
            .published
            .iter()
            .map(|p| (p.path.clone(), p.module.clone()))
            .collect()
    }

    pub(crate) fn take_hook_errors(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.tree).hook_errors)
    }

    fn hook_error(&self, e: String) {
        lock(&self.tree).hook_errors.push(e);
    }

    /// Whether `p` is a live node; a stranger is recorded as `what`'s misuse.
    fn check(&self, core: &Core, what: &str, p: *const DeviceNode) -> bool {
        let ok = !p.is_null() && lock(&self.tree).nodes.contains_key(&(p as usize));
        if !ok {
            core.record(format!(
                "device manager {what} with node {:#x}, which is not a live node",
                p as usize
            ));
        }
        ok
    }

    // ---- registration and probing ----

    /// `register_node` (see the module comment).
    ///
    /// # Safety
    ///
    /// The arguments are what the add-on passed to `register_node`.
    unsafe fn register(
        &self,
        core: &Arc<Core>,
        parent: *mut DeviceNode,
        module_name: *const c_char,
        attrs: *const DeviceAttr,
        out: *mut *mut DeviceNode,
    ) -> status_t {
        // SAFETY: the caller's string argument.
        let Some(module) = (unsafe { c_string(module_name) }) else {
            return hd::B_BAD_VALUE;
        };
        if parent.is_null() || !self.check(core, "register_node", parent) {
            return hd::B_BAD_VALUE;
        }
        // SAFETY: the caller's attribute array.
        let list = match unsafe { attrs_from_c(attrs) } {
            Ok(l) => l,
            Err(e) => {
                core.record(format!("register_node({module:?}): {e}"));
                return hd::B_BAD_VALUE;
            }
        };
        let key = {
            let mut t = lock(&self.tree);
            let query = (!attrs.is_null()).then_some(list.as_slice());
            let twin = t.nodes[&(parent as usize)]
                .children
                .iter()
                .any(|c| t.nodes[c].attrs.matches(query));
            if twin {
                return hd::B_NAME_IN_USE;
            }
            t.add(Some(parent as usize), &module, list, true)
        };
        let node = key as *mut DeviceNode;
        // InitDriver: the node's module must be one the kernel can load.
        let Some(info) = core.image_module(&module) else {
            core.dprintf(
                &format!("register_node: module {module} not found\n"),
                false,
            );
            lock(&self.tree).remove(key);
            return hd::B_ENTRY_NOT_FOUND;
        };
        // SAFETY: a module of the image, alive while it is attached.
        let m = unsafe { driver_module(info) };
        let mut cookie: *mut c_void = std::ptr::null_mut();
        if let Some(init) = m.init_driver {
            // SAFETY: the driver's hook with its new node and an out pointer to a local.
            let r = unsafe { init(node, &mut cookie) };
            if r != hd::B_OK {
                core.dprintf(
                    &format!("driver {module} init failed: {}\n", status_name(r)),
                    false,
                );
                self.hook_error(format!("init_driver of {module}: {}", status_name(r)));
                for h in lock(&self.tree).remove(key) {
                    core.record(h);
                }
                return r;
            }
        }
        if let Some(n) = lock(&self.tree).nodes.get_mut(&key) {
            n.driver = Driver::Module {
                info,
                cookie: cookie as usize,
            };
        }
        if let Some(register_children) = m.register_child_devices {
            // SAFETY: the driver's hook with the cookie its init_driver returned.
            let r = unsafe { register_children(cookie) };
            if r != hd::B_OK {
                self.hook_error(format!(
                    "register_child_devices of {module}: {}",
                    status_name(r)
                ));
                self.uninit(core, key);
                for h in lock(&self.tree).remove(key) {
                    core.record(h);
                }
                return r;
            }
        }
        let is_bus = {
            let t = lock(&self.tree);
            let no_children = t.nodes.get(&key).is_some_and(|n| n.children.is_empty());
            no_children
                && t.find_attr(key, hd::B_DEVICE_BUS.to_bytes(), hd::B_STRING_TYPE, false)
                    .is_some()
        };
        if is_bus {
            // A bus: find drivers for it (nested registration, as on Haiku).
            if let Err(e) = self.probe(core, key) {
                self.hook_error(e);
            }
        }
        if let Some(n) = lock(&self.tree).nodes.get_mut(&key) {
            n.registered = true;
        }
        if !out.is_null() {
            // SAFETY: the caller's out parameter.
            unsafe { *out = node };
        }
        hd::B_OK
    }

    /// Calls the node's `uninit_driver` (if its driver is initialised) and forgets it.
    fn uninit(&self, _core: &Core, key: usize) {
        let driver = {
            let mut t = lock(&self.tree);
            let Some(n) = t.nodes.get_mut(&key) else {
                return;
            };
            std::mem::replace(&mut n.driver, Driver::None)
        };
        if let Driver::Module { info, cookie } = driver {
            // SAFETY: a module of the image, alive while it is attached.
            let m = unsafe { driver_module(info) };
            if let Some(uninit) = m.uninit_driver {
                // SAFETY: the driver's hook with the cookie its init_driver returned.
                unsafe { uninit(cookie as *mut c_void) };
            }
        }
    }

    /// Haiku's `_RegisterDynamic` for one node: the image's `driver_v1` modules rate it, and
    /// the best positive score registers its node. `Ok(None)` when no driver wants it.
    pub(crate) fn probe(&self, core: &Arc<Core>, key: usize) -> Result<Option<String>, String> {
        {
            let mut t = lock(&self.tree);
            t.probe_depth += 1;
            if t.probe_depth > MAX_PROBE_DEPTH {
                t.probe_depth -= 1;
                let e = format!(
                    "probing nested {MAX_PROBE_DEPTH} levels deep: a driver claims the nodes \
                     its own register_device creates (Haiku would recurse until its stack \
                     overflows)"
                );
                core.record(e.clone());
                return Err(e);
            }
        }
        let r = self.probe_inner(core, key);
        lock(&self.tree).probe_depth -= 1;
        r
    }

    fn probe_inner(&self, core: &Arc<Core>, key: usize) -> Result<Option<String>, String> {
        let node = key as *mut DeviceNode;
        let mut best: Option<(String, DriverModuleInfo, f32)> = None;
        for (name, info) in core.image_modules() {
            if !name.ends_with("driver_v1") {
                continue;
            }
            // SAFETY: a module of the image, alive while it is attached.
            let m = unsafe { driver_module(info) };
            let (Some(supports), Some(_)) = (m.supports_device, m.register_device) else {
                continue;
            };
            // SAFETY: the driver's hook with a live node.
            let score = unsafe { supports(node) };
            core.log(&format!("[sim] {name}: supports_device = {score}"));
            if score > best.as_ref().map_or(0.0, |b| b.2) {
                best = Some((name, m, score));
            }
        }
        let Some((name, m, _)) = best else {
            return Ok(None);
        };
        let Some(register) = m.register_device else {
            return Ok(None);
        };
        self.take_hook_errors();
        // SAFETY: the driver's hook with the node it said it supports.
        let r = unsafe { register(node) };
        if r != hd::B_OK {
            let mut e = format!("register_device of {name} failed: {}", status_name(r));
            let nested = self.take_hook_errors();
            if !nested.is_empty() {
                e.push_str(&format!(" ({})", nested.join("; ")));
            }
            return Err(e);
        }
        let nested = self.take_hook_errors();
        if !nested.is_empty() {
            return Err(format!("register_device of {name}: {}", nested.join("; ")));
        }
        Ok(Some(name))
    }

    /// Uninitialises every node the add-on registered (deepest first) and removes it with
    /// its devices; returns the problems found on the way (ids and references kept).
    pub(crate) fn detach(&self, core: &Arc<Core>) -> Vec<String> {
        let mut problems = Vec::new();
        let open: Vec<(u64, String)> = lock(&self.tree)
            .opens
            .iter()
            .map(|(&id, o)| (id, o.path.clone()))
            .collect();
        for (id, path) in open {
            if self.close(core, id) == hd::B_FILE_ERROR {
                problems.push(format!(
                    "/dev/{path} was closed but a call on it never returned: free never ran"
                ));
                continue;
            }
            problems.push(format!("/dev/{path} was still open at detach; closed it"));
        }
        let mut keys: Vec<(u64, usize)> = lock(&self.tree)
            .nodes
            .iter()
            .filter(|(_, n)| n.from_addon)
            .map(|(&k, n)| (n.id, k))
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.0));
        for &(_, k) in &keys {
            self.uninit(core, k);
        }
        let mut t = lock(&self.tree);
        for (name, ids) in &t.generators {
            problems.push(format!(
                "id generator {name:?}: ids {ids:?} were never freed (uninit_driver should \
                 free_id what register_child_devices created)"
            ));
        }
        t.generators.clear();
        for &(_, k) in &keys {
            problems.extend(t.remove(k));
        }
        for n in t.nodes.values_mut() {
            if n.refs > 0 {
                problems.push(format!(
                    "node {} ({}): {} reference(s) from get_*_node were never put",
                    n.id, n.module, n.refs
                ));
                n.refs = 0;
            }
        }
        problems
    }

    /// What the add-on still holds (for `check_clean` before or after detach).
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let t = lock(&self.tree);
        let mut v = Vec::new();
        for n in t.nodes.values() {
            if n.refs > 0 {
                v.push(format!(
                    "node {} ({}): {} reference(s) from get_*_node not put",
                    n.id, n.module, n.refs
                ));
            }
            if n.from_addon {
                v.push(format!("node {} ({}) is still registered", n.id, n.module));
            }
        }
        for (name, ids) in &t.generators {
            v.push(format!("id generator {name:?}: ids {ids:?} not freed"));
        }
        for o in t.opens.values() {
            if o.closed {
                v.push(format!(
                    "/dev/{} is closed, but {} call(s) on it have not returned (free has not run)",
                    o.path, o.in_flight
                ));
            } else {
                v.push(format!("/dev/{} is still open", o.path));
            }
        }
        v.sort();
        v
    }

    // ---- devfs ----

    /// devfs open: `init_device` on the first open of the device, then `open`.
    pub(crate) fn open(&self, core: &Arc<Core>, path: &str, mode: i32) -> Result<u64, status_t> {
        let path = path.trim_start_matches("/dev/").to_owned();
        let (node, module) = {
            let t = lock(&self.tree);
            let Some(p) = t.published.iter().find(|p| p.path == path) else {
                return Err(hd::B_ENTRY_NOT_FOUND);
            };
            if t.nodes.get(&p.node).is_some_and(|n| n.removed) {
                // Device::InitDevice refuses a removed node's device.
                return Err(hd::ENODEV);
            }
            (p.node, p.module.clone())
        };
        self.init_device(core, &path, node, &module)?;
        let (device_module, device_cookie) = {
            let t = lock(&self.tree);
            let p = t.published.iter().find(|p| p.path == path);
            p.map_or((0, 0), |p| (p.device_module, p.device_cookie))
        };
        // SAFETY: a device module of the image (checked by init_device).
        let m = unsafe { *(device_module as *const DeviceModuleInfo) };
        let Some(open) = m.open else {
            core.record(format!(
                "device module {module} has no open hook (devfs calls it without a NULL check)"
            ));
            self.uninit_device(core, &path);
            return Err(hd::B_ERROR);
        };
        let c_path = CString::new(path.clone()).unwrap_or_default();
        let mut cookie: *mut c_void = std::ptr::null_mut();
        // SAFETY: the device module's hook with its device cookie, a NUL-terminated path
        // and an out pointer to a local.
        let r = unsafe {
            open(
                device_cookie as *mut c_void,
                c_path.as_ptr(),
                mode,
                &mut cookie,
            )
        };
        if r != hd::B_OK {
            self.uninit_device(core, &path);
            return Err(r);
        }
        let mut t = lock(&self.tree);
        t.next_open += 1;
        let id = t.next_open;
        t.opens.insert(
            id,
            OpenFile {
                path,
                cookie: cookie as usize,
                in_flight: 0,
                closed: false,
            },
        );
        Ok(id)
    }

    fn init_device(
        &self,
        core: &Core,
        path: &str,
        node: usize,
        module: &str,
    ) -> Result<(), status_t> {
        let first = {
            let mut t = lock(&self.tree);
            let Some(p) = t.published.iter_mut().find(|p| p.path == path) else {
                return Err(hd::B_ENTRY_NOT_FOUND);
            };
            p.opens += 1;
            p.opens == 1
        };
        if !first {
            return Ok(());
        }
        let fail = |r| {
            if let Some(p) = lock(&self.tree)
                .published
                .iter_mut()
                .find(|p| p.path == path)
            {
                p.opens -= 1;
            }
            Err(r)
        };
        let Some(info) = core.image_module(module) else {
            core.dprintf(&format!("devfs: device module {module} not found\n"), false);
            return fail(hd::B_ENTRY_NOT_FOUND);
        };
        let driver_cookie = match lock(&self.tree).nodes.get(&node).map(|n| n.driver) {
            Some(Driver::Module { cookie, .. }) => cookie,
            _ => return fail(hd::B_NO_INIT),
        };
        // SAFETY: a module of the image named as a device module by publish_device.
        let m = unsafe { *(info as *const DeviceModuleInfo) };
        let mut device_cookie: *mut c_void = std::ptr::null_mut();
        if let Some(init) = m.init_device {
            // SAFETY: the device module's hook with its node's driver cookie.
            let r = unsafe { init(driver_cookie as *mut c_void, &mut device_cookie) };
            if r != hd::B_OK {
                return fail(r);
            }
        }
        if let Some(p) = lock(&self.tree)
            .published
            .iter_mut()
            .find(|p| p.path == path)
        {
            p.device_module = info;
            p.device_cookie = device_cookie as usize;
        }
        Ok(())
    }

    /// devfs's `UninitDevice`: `uninit_device` after the last handle; then, if the node's
    /// device was removed and none of its devices is open any more, its driver's
    /// `uninit_driver` (the node's last user lets it go).
    fn uninit_device(&self, core: &Core, path: &str) {
        let (last, node) = {
            let mut t = lock(&self.tree);
            let Some(p) = t.published.iter_mut().find(|p| p.path == path) else {
                return;
            };
            p.opens = p.opens.saturating_sub(1);
            (
                (p.opens == 0).then_some((p.device_module, p.device_cookie)),
                p.node,
            )
        };
        if let Some((info, cookie)) = last {
            // SAFETY: the device module init_device used.
            let m = unsafe { *(info as *const DeviceModuleInfo) };
            if let Some(uninit) = m.uninit_device {
                // SAFETY: the device module's hook with the cookie its init_device returned.
                unsafe { uninit(cookie as *mut c_void) };
            }
            let unused = {
                let t = lock(&self.tree);
                t.nodes.get(&node).is_some_and(|n| n.removed)
                    && !t.published.iter().any(|p| p.node == node && p.opens > 0)
            };
            if unused {
                self.uninit(core, node);
            }
        }
    }

    /// Haiku's `device_node::DeviceRemoved` over the add-on's nodes, deepest and last
    /// first (what `unregister_node` of the virtio device node does when its bus loses the
    /// device): each initialised device of the node gets its device module's
    /// `device_removed` with the device cookie; the node is marked removed (its devices
    /// cannot be opened again: `ENODEV`); its driver, if initialised, gets `device_removed`
    /// (with the driver cookie on nightly, the `device_node` on R1/beta5, as the spec's
    /// note on the hook says); a node none of whose devices is open is uninitialised at
    /// once, the others when their last device is closed.
    pub(crate) fn device_removed(&self, core: &Core) {
        let mut keys: Vec<(u64, usize)> = lock(&self.tree)
            .nodes
            .iter()
            .filter(|(_, n)| n.from_addon && !n.removed)
            .map(|(&k, n)| (n.id, k))
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.0));
        for (_, key) in keys {
            let (devices, driver) = {
                let mut t = lock(&self.tree);
                let devices: Vec<(usize, usize)> = t
                    .published
                    .iter()
                    .filter(|p| p.node == key && p.opens > 0)
                    .map(|p| (p.device_module, p.device_cookie))
                    .collect();
                let Some(n) = t.nodes.get_mut(&key) else {
                    continue;
                };
                n.removed = true;
                (devices, n.driver)
            };
            for (info, cookie) in devices {
                // SAFETY: the device module init_device used, still initialised.
                let m = unsafe { *(info as *const DeviceModuleInfo) };
                if let Some(removed) = m.device_removed {
                    // SAFETY: the hook with the cookie init_device returned.
                    unsafe { removed(cookie as *mut c_void) };
                }
            }
            if let Driver::Module { info, cookie } = driver {
                // SAFETY: a module of the image, alive while it is attached.
                let m = unsafe { driver_module(info) };
                if let Some(removed) = m.device_removed {
                    let arg = match core.haiku {
                        HaikuRelease::Beta5 => key,
                        HaikuRelease::Nightly => cookie,
                    };
                    // SAFETY: the driver's hook, with what its Haiku release passes.
                    unsafe { removed(arg as *mut c_void) };
                }
            }
            let in_use = lock(&self.tree)
                .published
                .iter()
                .any(|p| p.node == key && p.opens > 0);
            if !in_use {
                self.uninit(core, key);
            }
        }
    }

    /// The path, cookie and device module of an open handle that is not closed; when
    /// `call` is set, one more call is counted in flight on it.
    fn open_file(&self, id: u64, call: bool) -> Option<(String, usize, usize)> {
        let mut t = lock(&self.tree);
        let o = t.opens.get(&id).filter(|o| !o.closed)?;
        let (path, cookie) = (o.path.clone(), o.cookie);
        let module = t
            .published
            .iter()
            .find(|p| p.path == path)
            .map_or(0, |p| p.device_module);
        if call {
            if let Some(o) = t.opens.get_mut(&id) {
                o.in_flight += 1;
            }
        }
        Some((path, cookie, module))
    }

    /// [`Self::open_file`] without the path (no copy: every ioctl asks), counting a call in
    /// flight.
    fn open_handle(&self, id: u64) -> Option<(usize, usize)> {
        let mut t = lock(&self.tree);
        let o = t.opens.get(&id).filter(|o| !o.closed)?;
        let cookie = o.cookie;
        let module = t
            .published
            .iter()
            .find(|p| p.path == o.path)
            .map_or(0, |p| p.device_module);
        if let Some(o) = t.opens.get_mut(&id) {
            o.in_flight += 1;
        }
        Some((cookie, module))
    }

    /// The device module's `control` (ioctl). Like Haiku's `fd_ioctl`, it holds a
    /// reference to the handle while the hook runs: a `close` meanwhile runs the close hook
    /// at once, and `free` waits until this call returns (and then runs on this thread, as
    /// `put_fd` does). A closed handle answers `B_FILE_ERROR`.
    pub(crate) fn control(
        &self,
        core: &Arc<Core>,
        id: u64,
        op: u32,
        buffer: u64,
        length: usize,
    ) -> status_t {
        let Some((cookie, module)) = self.open_handle(id) else {
            return hd::B_FILE_ERROR;
        };
        // SAFETY: the device module of an open handle.
        let m = unsafe { *(module as *const DeviceModuleInfo) };
        let r = match m.control {
            // The exports the hook calls find `core` through `entered` (counted in the
            // exchange's cost).
            Some(control) => crate::meter::driver_code(|| {
                // SAFETY: the hook with the handle's cookie and the caller's raw (user)
                // pointer; the reference counted above keeps `free` from running meanwhile.
                crate::entered(core, || unsafe {
                    control(
                        cookie as *mut c_void,
                        op,
                        buffer as usize as *mut c_void,
                        length as u64,
                    )
                })
            }),
            None => hd::B_UNSUPPORTED,
        };
        let last = {
            let mut t = lock(&self.tree);
            match t.opens.get_mut(&id) {
                Some(o) => {
                    o.in_flight -= 1;
                    o.closed && o.in_flight == 0
                }
                None => false,
            }
        };
        if last {
            self.free(core, id);
        }
        r
    }

    /// devfs close (Haiku's `close_fd`): the close hook at once, then `free` (and
    /// `uninit_device` after the last handle) when no call on the handle is in flight,
    /// otherwise when the last one returns. Returns close's status if it failed, else
    /// free's when free ran now; `B_FILE_ERROR` for a handle closed already.
    pub(crate) fn close(&self, core: &Core, id: u64) -> status_t {
        let Some((path, cookie, module)) = self.open_file(id, false) else {
            return hd::B_FILE_ERROR;
        };
        let free_now = {
            let mut t = lock(&self.tree);
            match t.opens.get_mut(&id) {
                Some(o) => {
                    o.closed = true;
                    o.in_flight == 0
                }
                None => false,
            }
        };
        // SAFETY: the device module of an open handle.
        let m = unsafe { *(module as *const DeviceModuleInfo) };
        let mut r = hd::B_OK;
        match m.close {
            // SAFETY: the hook with the handle's cookie, once.
            Some(close) => r = unsafe { close(cookie as *mut c_void) },
            None => core.record(format!("device module of /dev/{path} has no close hook")),
        }
        if !free_now {
            return r;
        }
        let freed = self.free(core, id);
        if r == hd::B_OK {
            freed
        } else {
            r
        }
    }

    /// devfs free (Haiku's `fd_free`, from the last `put_fd`): the free hook, the handle
    /// forgotten, then `uninit_device` after the device's last handle.
    fn free(&self, core: &Core, id: u64) -> status_t {
        let Some(OpenFile { path, cookie, .. }) = lock(&self.tree).opens.remove(&id) else {
            return hd::B_FILE_ERROR;
        };
        let module = lock(&self.tree)
            .published
            .iter()
            .find(|p| p.path == path)
            .map_or(0, |p| p.device_module);
        // SAFETY: the device module of the handle, still initialised (uninit_device comes
        // after its last handle).
        let m = unsafe { *(module as *const DeviceModuleInfo) };
        let freed = match m.free {
            // SAFETY: the hook with the handle's cookie, after close and the last call.
            Some(free) => unsafe { free(cookie as *mut c_void) },
            None => {
                core.record(format!("device module of /dev/{path} has no free hook"));
                hd::B_OK
            }
        };
        self.uninit_device(core, &path);
        freed
    }
}

// ---- the C functions ----

fn dm() -> Option<Arc<Core>> {
    current()
}

unsafe extern "C" fn rescan_node(node: *mut DeviceNode) -> status_t {
    let Some(core) = dm() else {
        return hd::B_NO_INIT;
    };
    if !core.dm.check(&core, "rescan_node", node) {
        return hd::B_BAD_VALUE;
    }
    let driver = lock(&core.dm.tree)
        .nodes
        .get(&(node as usize))
        .map(|n| n.driver);
    if let Some(Driver::Module { info, cookie }) = driver {
        // SAFETY: a module of the image.
        let m = unsafe { driver_module(info) };
        if let Some(rescan) = m.rescan_child_devices {
            // SAFETY: the driver's hook with its cookie.
            return unsafe { rescan(cookie as *mut c_void) };
        }
    }
    hd::B_OK
}

unsafe extern "C" fn register_node(
    parent: *mut DeviceNode,
    module_name: *const c_char,
    attrs: *const DeviceAttr,
    _io_resources: *const IoResource,
    node: *mut *mut DeviceNode,
) -> status_t {
    let Some(core) = dm() else {
        return hd::B_NO_INIT;
    };
    // SAFETY: the add-on's arguments.
    unsafe { core.dm.register(&core, parent, module_name, attrs, node) }
}

/// Haiku's `unregister_node`: `B_BUSY` for a node whose driver is initialised (it goes
/// away when unused), otherwise the node and its devices are removed.
unsafe extern "C" fn unregister_node(node: *mut DeviceNode) -> status_t {
    let Some(core) = dm() else {
        return hd::B_NO_INIT;
    };
    if !core.dm.check(&core, "unregister_node", node) {
        return hd::B_BAD_VALUE;
    }
    let mut t = lock(&core.dm.tree);
    let key = node as usize;
    if t.nodes.get(&key).is_some_and(|n| n.driver != Driver::None) {
        return hd::B_BUSY;
    }
    if key == t.root || key == t.virtio || !t.nodes[&key].from_addon {
        drop(t);
        core.record("unregister_node of a node the add-on did not register");
        return hd::B_NOT_ALLOWED;
    }
    let held = t.remove(key);
    drop(t);
    for h in held {
        core.record(h);
    }
    hd::B_OK
}

unsafe extern "C" fn get_driver(
    node: *mut DeviceNode,
    module: *mut *mut DriverModuleInfo,
    cookie: *mut *mut c_void,
) -> status_t {
    let Some(core) = dm() else {
        return hd::B_NO_INIT;
    };
    if !core.dm.check(&core, "get_driver", node) {
        return hd::B_BAD_VALUE;
    }
    let driver = lock(&core.dm.tree).nodes[&(node as usize)].driver;
    let (m, c) = match driver {
        Driver::None => return hd::B_NO_INIT,
        Driver::Bus => (
            &super::virtio_bus::INTERFACE.0.info as *const DriverModuleInfo as usize,
            core.bus.cookie(),
        ),
        Driver::Module { info, cookie } => (info, cookie),
    };
    // SAFETY: each is NULL or the caller's out parameter.
    unsafe {
        if !module.is_null() {
            *module = m as *mut DriverModuleInfo;
        }
        if !cookie.is_null() {
            *cookie = c as *mut c_void;
        }
    }
    hd::B_OK
}

unsafe extern "C" fn get_root_node() -> *mut DeviceNode {
    let Some(core) = dm() else {
        return std::ptr::null_mut();
    };
    let mut t = lock(&core.dm.tree);
    let root = t.root;
    if let Some(n) = t.nodes.get_mut(&root) {
        n.refs += 1;
    }
    root as *mut DeviceNode
}

/// Haiku's `get_next_child_node`, quirk included: with a previous node the skip loop runs
/// through every child, so the iteration ends after its first answer (releasing the
/// previous node).
unsafe extern "C" fn get_next_child_node(
    parent: *mut DeviceNode,
    attrs: *const DeviceAttr,
    node: *mut *mut DeviceNode,
) -> status_t {
    let Some(core) = dm() else {
        return hd::B_NO_INIT;
    };
    if node.is_null() || !core.dm.check(&core, "get_next_child_node", parent) {
        return hd::B_BAD_VALUE;
    }
    // SAFETY: the add-on's attribute array.
    let query = match unsafe { attrs_from_c(attrs) } {
        Ok(q) => q,
        Err(e) => {
            core.record(format!("get_next_child_node: {e}"));
            return hd::B_BAD_VALUE;
        }
    };
    // SAFETY: the caller's in/out parameter.
    let last = unsafe { *node } as usize;
    let mut t = lock(&core.dm.tree);
    if last != 0 {
        release(&core, &mut t, last, "get_next_child_node");
        return hd::B_ENTRY_NOT_FOUND;
    }
    let query = (!attrs.is_null()).then_some(query.as_slice());
    let children = t.nodes[&(parent as usize)].children.clone();
    for c in children {
        let n = &t.nodes[&c];
        if n.registered && n.attrs.matches(query) {
            if let Some(n) = t.nodes.get_mut(&c) {
                n.refs += 1;
            }
            // SAFETY: the caller's out parameter.
            unsafe { *node = c as *mut DeviceNode };
            return hd::B_OK;
        }
    }
    hd::B_ENTRY_NOT_FOUND
}

/// Drops one add-on reference; a put without one is recorded.
fn release(core: &Core, t: &mut Tree, key: usize, what: &str) {
    match t.nodes.get_mut(&key) {
        Some(n) if n.refs > 0 => n.refs -= 1,
        Some(n) => core.record(format!(
            "{what}: node {} ({}) put without a reference from get_*_node (Haiku would free \
             it under the device manager)",
            n.id, n.module
        )),
        None => core.record(format!("{what}: {key:#x} is not a live node")),
    }
}

unsafe extern "C" fn get_parent_node(node: *mut DeviceNode) -> *mut DeviceNode {
    let Some(core) = dm() else {
        return std::ptr::null_mut();
    };
    if node.is_null() {
        return std::ptr::null_mut();
    }
    if !core.dm.check(&core, "get_parent_node", node) {
        return std::ptr::null_mut();
    }
    let mut t = lock(&core.dm.tree);
    let Some(parent) = t.nodes[&(node as usize)].parent else {
        drop(t);
        core.record("get_parent_node of the root node (Haiku dereferences its NULL parent)");
        return std::ptr::null_mut();
    };
    if let Some(p) = t.nodes.get_mut(&parent) {
        p.refs += 1;
    }
    parent as *mut DeviceNode
}

unsafe extern "C" fn put_node(node: *mut DeviceNode) {
    let Some(core) = dm() else { return };
    if !core.dm.check(&core, "put_node", node) {
        return;
    }
    let mut t = lock(&core.dm.tree);
    release(&core, &mut t, node as usize, "put_node");
}

unsafe extern "C" fn publish_device(
    node: *mut DeviceNode,
    path: *const c_char,
    module_name: *const c_char,
) -> status_t {
    let Some(core) = dm() else {
        return hd::B_NO_INIT;
    };
    // SAFETY: the add-on's string arguments.
    let (path, module) = unsafe { (c_string(path), c_string(module_name)) };
    let (Some(path), Some(module)) = (path, module) else {
        return hd::B_BAD_VALUE;
    };
    if path.is_empty() || module.is_empty() || path.starts_with('/') {
        return hd::B_BAD_VALUE;
    }
    if !core.dm.check(&core, "publish_device", node) {
        return hd::B_BAD_VALUE;
    }
    core.dprintf(
        &format!(
            "publish device: node {:#x}, path {path}, module {module}\n",
            node as usize
        ),
        false,
    );
    let mut t = lock(&core.dm.tree);
    if t.published.iter().any(|p| p.path == path) {
        return B_FILE_EXISTS;
    }
    if core.haiku == HaikuRelease::Nightly {
        // Nightly's publish_device records the path on the node (315411d839).
        if let (Some(n), Ok(p)) = (
            t.nodes.get_mut(&(node as usize)),
            CString::new(format!("/dev/{path}")),
        ) {
            n.attrs
                .push(attr(hd::B_DEVICE_PUBLISHED_PATH, Value::Str(Some(p))));
        }
    }
    t.published.push(Published {
        path,
        node: node as usize,
        module,
        opens: 0,
        device_cookie: 0,
        device_module: 0,
    });
    hd::B_OK
}

/// Haiku's body is disabled (`#if 0`): it always answers `B_ENTRY_NOT_FOUND`.
unsafe extern "C" fn unpublish_device(node: *mut DeviceNode, path: *const c_char) -> status_t {
    if path.is_null() {
        return hd::B_BAD_VALUE;
    }
    if let Some(core) = dm() {
        core.dm.check(&core, "unpublish_device", node);
    }
    hd::B_ENTRY_NOT_FOUND
}

unsafe extern "C" fn create_id(generator: *const c_char) -> i32 {
    let Some(core) = dm() else {
        return hd::B_NO_INIT;
    };
    // SAFETY: the add-on's string argument.
    let Some(name) = (unsafe { c_string(generator) }) else {
        core.record("create_id(NULL)");
        return hd::B_BAD_VALUE;
    };
    let mut t = lock(&core.dm.tree);
    let ids = t.generators.entry(name).or_default();
    match (0..MAX_ID).find(|i| !ids.contains(i)) {
        Some(id) => {
            ids.insert(id);
            id as i32
        }
        None => hd::B_ERROR,
    }
}

unsafe extern "C" fn free_id(generator: *const c_char, id: u32) -> status_t {
    let Some(core) = dm() else {
        return hd::B_NO_INIT;
    };
    // SAFETY: the add-on's string argument.
    let Some(name) = (unsafe { c_string(generator) }) else {
        core.record("free_id(NULL)");
        return hd::B_BAD_VALUE;
    };
    let mut t = lock(&core.dm.tree);
    let Some(ids) = t.generators.get_mut(&name) else {
        return hd::B_NAME_NOT_FOUND;
    };
    if !ids.remove(&id) {
        drop(t);
        core.dprintf(
            &format!("id {id} of generator {name} wasn't allocated\n"),
            false,
        );
        return hd::B_BAD_VALUE;
    }
    if ids.is_empty() {
        // Haiku deletes a generator when its last id goes.
        t.generators.remove(&name);
    }
    hd::B_OK
}

/// The attribute `name` of type `ty` on `node` (or an ancestor), for the get_attr_* calls.
fn lookup<R>(
    node: *const DeviceNode,
    name: *const c_char,
    ty: type_code,
    recursive: bool,
    read: impl FnOnce(&Attr, &DeviceAttr) -> R,
) -> Result<R, status_t> {
    let Some(core) = dm() else {
        return Err(hd::B_NO_INIT);
    };
    if node.is_null() || name.is_null() {
        return Err(hd::B_BAD_VALUE);
    }
    if !core.dm.check(&core, "get_attr", node) {
        return Err(hd::B_BAD_VALUE);
    }
    // SAFETY: the add-on's string argument.
    let Some(name) = (unsafe { c_string(name) }) else {
        return Err(hd::B_BAD_VALUE);
    };
    let t = lock(&core.dm.tree);
    let (key, i) = t
        .find_attr(node as usize, name.as_bytes(), ty, recursive)
        .ok_or(hd::B_NAME_NOT_FOUND)?;
    let attrs = &t.nodes[&key].attrs;
    Ok(read(&attrs.list[i], &attrs.table[i]))
}

macro_rules! get_attr_int {
    ($fn:ident, $t:ty, $code:expr, $variant:ident) => {
        unsafe extern "C" fn $fn(
            node: *const DeviceNode,
            name: *const c_char,
            value: *mut $t,
            recursive: bool,
        ) -> status_t {
            if value.is_null() {
                return hd::B_BAD_VALUE;
            }
            match lookup(node, name, $code, recursive, |a, _| match a.value {
                Value::$variant(v) => v,
                _ => unreachable!("found by type"),
            }) {
                Ok(v) => {
                    // SAFETY: checked non-NULL; the caller's out parameter.
                    unsafe { *value = v };
                    hd::B_OK
                }
                Err(e) => e,
            }
        }
    };
}

get_attr_int!(get_attr_uint8, u8, hd::B_UINT8_TYPE, U8);
get_attr_int!(get_attr_uint16, u16, hd::B_UINT16_TYPE, U16);
get_attr_int!(get_attr_uint32, u32, hd::B_UINT32_TYPE, U32);
get_attr_int!(get_attr_uint64, u64, hd::B_UINT64_TYPE, U64);

unsafe extern "C" fn get_attr_string(
    node: *const DeviceNode,
    name: *const c_char,
    value: *mut *const c_char,
    recursive: bool,
) -> status_t {
    if value.is_null() {
        return hd::B_BAD_VALUE;
    }
    // SAFETY: reading the string member of a string attribute's C entry.
    match lookup(node, name, hd::B_STRING_TYPE, recursive, |_, c| unsafe {
        c.value.string
    }) {
        Ok(s) => {
            // SAFETY: checked non-NULL; the string is owned by the node.
            unsafe { *value = s };
            hd::B_OK
        }
        Err(e) => e,
    }
}

unsafe extern "C" fn get_attr_raw(
    node: *const DeviceNode,
    name: *const c_char,
    data: *mut *const c_void,
    length: *mut u64,
    recursive: bool,
) -> status_t {
    if data.is_null() && length.is_null() {
        return hd::B_BAD_VALUE;
    }
    // SAFETY: reading the raw member of a raw attribute's C entry.
    match lookup(node, name, hd::B_RAW_TYPE, recursive, |_, c| unsafe {
        c.value.raw
    }) {
        Ok(raw) => {
            // SAFETY: each is NULL or the caller's out parameter; the data is the node's.
            unsafe {
                if !data.is_null() {
                    *data = raw.data;
                }
                if !length.is_null() {
                    *length = raw.length;
                }
            }
            hd::B_OK
        }
        Err(e) => e,
    }
}

unsafe extern "C" fn get_next_attr(node: *mut DeviceNode, attr: *mut *mut DeviceAttr) -> status_t {
    let Some(core) = dm() else {
        return hd::B_NO_INIT;
    };
    if attr.is_null() || !core.dm.check(&core, "get_next_attr", node) {
        return hd::B_BAD_VALUE;
    }
    let t = lock(&core.dm.tree);
    let table = &t.nodes[&(node as usize)].attrs.table;
    // SAFETY: the caller's in/out parameter.
    let last = unsafe { *attr } as usize;
    let next = if last == 0 {
        0
    } else {
        let base = table.as_ptr() as usize;
        let size = std::mem::size_of::<DeviceAttr>();
        let off = last.wrapping_sub(base);
        if off % size != 0 || off / size >= table.len() {
            drop(t);
            core.record("get_next_attr with an attribute that is not the node's");
            return hd::B_BAD_VALUE;
        }
        off / size + 1
    };
    let p = table.get(next).map_or(std::ptr::null_mut(), |a| {
        a as *const DeviceAttr as *mut DeviceAttr
    });
    // SAFETY: the caller's in/out parameter.
    unsafe { *attr = p };
    if p.is_null() {
        hd::B_ENTRY_NOT_FOUND
    } else {
        hd::B_OK
    }
}

/// Haiku's `find_child_node`: depth-first, the next registered match after `*node`.
unsafe extern "C" fn find_child_node(
    parent: *mut DeviceNode,
    attrs: *const DeviceAttr,
    node: *mut *mut DeviceNode,
) -> status_t {
    let Some(core) = dm() else {
        return hd::B_NO_INIT;
    };
    if node.is_null() || !core.dm.check(&core, "find_child_node", parent) {
        return hd::B_BAD_VALUE;
    }
    // SAFETY: the add-on's attribute array.
    let query = match unsafe { attrs_from_c(attrs) } {
        Ok(q) => q,
        Err(e) => {
            core.record(format!("find_child_node: {e}"));
            return hd::B_BAD_VALUE;
        }
    };
    let query = (!attrs.is_null()).then_some(query.as_slice());
    // SAFETY: the caller's in/out parameter.
    let last = unsafe { *node } as usize;
    let mut t = lock(&core.dm.tree);
    let mut last_found = last == 0;
    fn walk(
        t: &Tree,
        at: usize,
        last: usize,
        query: Option<&[Attr]>,
        found: &mut bool,
    ) -> Option<usize> {
        for &c in &t.nodes[&at].children {
            let n = &t.nodes[&c];
            if !n.registered {
                continue;
            }
            if c == last {
                *found = true;
            } else if *found && n.attrs.matches(query) {
                return Some(c);
            }
            if let Some(hit) = walk(t, c, last, query, found) {
                return Some(hit);
            }
        }
        None
    }
    match walk(&t, parent as usize, last, query, &mut last_found) {
        Some(hit) => {
            if last != 0 {
                release(&core, &mut t, last, "find_child_node");
            }
            if let Some(n) = t.nodes.get_mut(&hit) {
                n.refs += 1;
            }
            // SAFETY: the caller's in/out parameter.
            unsafe { *node = hit as *mut DeviceNode };
            hd::B_OK
        }
        None => {
            if last != 0 && last_found {
                release(&core, &mut t, last, "find_child_node");
            }
            hd::B_ENTRY_NOT_FOUND
        }
    }
}
