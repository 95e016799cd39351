//! An ELF loader with the rules of Haiku's kernel add-on loader (`load_kernel_add_on` in
//! Haiku's `src/system/kernel/elf.cpp` and `src/system/kernel/arch/x86/arch_elf.cpp`), so a
//! file this loader accepts is one Haiku would load, and a file it refuses is refused with
//! Haiku's reason and status.
//!
//! What it does, in Haiku's order: check the header; classify PT_LOADs (the first RX one is
//! text, the first RW one data, anything else is *not mapped*); check the reserved span;
//! map both regions at one base; parse the dynamic section (DT_HASH, DT_SYMTAB, DT_STRTAB
//! required; DT_REL refused); apply the PLT relocations then the RELA ones (NONE, 64, PC32
//! with Haiku's formula, GLOB_DAT, JUMP_SLOT, RELATIVE; anything else refused), resolving
//! symbols against the kernel first, then the image (reversed with DT_SYMBOLIC), with the
//! ELF types required to match; run no initialisers; find `modules`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use spec::haiku_driver as hd;

/// A kernel symbol the add-on may bind to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSymbol {
    pub addr: u64,
    pub kind: SymbolKind,
}

/// The ELF symbol types the loader compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolKind {
    Func,
    Object,
    Other(u8),
}

impl SymbolKind {
    fn from_info(info: u8) -> Self {
        match info & 0xf {
            2 => SymbolKind::Func,
            1 => SymbolKind::Object,
            t => SymbolKind::Other(t),
        }
    }
}

/// Why a file was refused: Haiku's status and its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub status: i32,
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = hd::STATUS
            .iter()
            .find(|c| c.value == self.status)
            .map_or("error", |c| c.name);
        write!(f, "{name}: {}", self.reason)
    }
}

impl std::error::Error for LoadError {}

fn fail<T>(status: i32, reason: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError {
        status,
        reason: reason.into(),
    })
}

const PAGE: u64 = 4096;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
const PT_GNU_STACK: u32 = 0x6474_e551;
const PF_X: u32 = 1;
const PF_W: u32 = 2;

const DT_NULL: u64 = 0;
const DT_PLTRELSZ: u64 = 2;
const DT_HASH: u64 = 4;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_SYMBOLIC: u64 = 16;
const DT_REL: u64 = 17;
const DT_PLTREL: u64 = 20;
const DT_JMPREL: u64 = 23;
const DT_FLAGS: u64 = 30;
const DT_INIT: u64 = 12;
const DT_FINI: u64 = 13;
const DT_INIT_ARRAY: u64 = 25;
const DT_FINI_ARRAY: u64 = 26;
const DT_RELR: u64 = 36;
const DF_SYMBOLIC: u64 = 2;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

#[derive(Clone, Copy, Debug)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

#[derive(Clone, Copy, Debug)]
struct Region {
    start: u64,
    end: u64,
}

/// A loaded add-on image. Unmapped when dropped.
pub struct Image {
    base: *mut u8,
    size: usize,
    text: Region,
    data: Region,
    symbols: HashMap<String, (u64, SymbolKind)>,
    /// Lines Haiku's loader would have printed (ignored program headers and the like).
    pub notes: Vec<String>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("base", &self.base)
            .field("size", &self.size)
            .finish()
    }
}

// SAFETY: the mapping belongs to the image alone; raw pointers into it are only handed out.
unsafe impl Send for Image {}
// SAFETY: the image is not mutated after loading.
unsafe impl Sync for Image {}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` are the mapping made in `load` and nothing else owns it.
        unsafe { libc::munmap(self.base.cast(), self.size) };
    }
}

impl Image {
    pub fn base(&self) -> u64 {
        self.base as u64
    }

    /// Whether a code or data address lies inside the image (for naming fault addresses).
    pub fn contains(&self, addr: u64) -> bool {
        let off = addr.wrapping_sub(self.base());
        (off >= self.text.start && off < self.text.end)
            || (off >= self.data.start && off < self.data.end)
    }

    /// The address of a symbol the image defines.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).map(|s| s.0)
    }

    /// The NULL-terminated `module_info*` array Haiku looks up.
    pub fn modules(&self) -> *const *const hd::ModuleInfo {
        self.symbol("modules")
            .map_or(std::ptr::null(), |a| a as *const *const hd::ModuleInfo)
    }

    /// The optional `module_dependencies` array.
    pub fn module_dependencies(&self) -> *mut hd::ModuleDependency {
        self.symbol("module_dependencies")
            .map_or(std::ptr::null_mut(), |a| a as *mut hd::ModuleDependency)
    }
}

/// Loads `path`, binding imports against `kernel`.
pub fn load(path: &Path, kernel: &HashMap<String, KernelSymbol>) -> Result<Image, LoadError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return fail(hd::B_ENTRY_NOT_FOUND, format!("{}: {e}", path.display())),
    };
    load_bytes(&bytes, kernel)
}

/// Loads an image from bytes.
pub fn load_bytes(
    bytes: &[u8],
    kernel: &HashMap<String, KernelSymbol>,
) -> Result<Image, LoadError> {
    // verify_eheader: magic, 64-bit class, program headers present and big enough.
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return fail(hd::B_NOT_AN_EXECUTABLE, "not an ELF file");
    }
    if bytes.get(4) != Some(&2) {
        return fail(hd::B_NOT_AN_EXECUTABLE, "not ELFCLASS64");
    }
    let phoff = u64_at(bytes, 32).unwrap_or(0) as usize;
    let phentsize = u16_at(bytes, 54).unwrap_or(0) as usize;
    let phnum = u16_at(bytes, 56).unwrap_or(0) as usize;
    if phoff == 0 || phentsize < 56 {
        return fail(hd::B_NOT_AN_EXECUTABLE, "no usable program headers");
    }
    let mut notes = Vec::new();
    let mut phdrs = Vec::new();
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let p = (|| {
            Some(Phdr {
                kind: u32_at(bytes, o)?,
                flags: u32_at(bytes, o + 4)?,
                offset: u64_at(bytes, o + 8)?,
                vaddr: u64_at(bytes, o + 16)?,
                filesz: u64_at(bytes, o + 32)?,
                memsz: u64_at(bytes, o + 40)?,
            })
        })();
        match p {
            Some(p) => phdrs.push(p),
            None => return fail(hd::B_BAD_DATA, "program header past the end of the file"),
        }
    }
    // Classify segments the way load_kernel_add_on does.
    let executable = phdrs
        .iter()
        .filter(|p| p.kind == PT_LOAD && p.flags & PF_X != 0)
        .count();
    let mut text: Option<Phdr> = None;
    let mut data: Option<Phdr> = None;
    let mut dynamic: Option<Phdr> = None;
    for p in &phdrs {
        match p.kind {
            PT_LOAD => {
                let rw = p.flags & PF_W != 0;
                let x = p.flags & PF_X != 0;
                if rw && (!x || executable > 1) {
                    if data.is_none() {
                        data = Some(*p);
                    } else {
                        notes.push("second data segment ignored".into());
                    }
                } else if x {
                    if text.is_none() {
                        text = Some(*p);
                    } else {
                        notes.push("second text segment ignored".into());
                    }
                } else {
                    notes.push(format!(
                        "weird program header flags {:#x}: segment at {:#x} not mapped",
                        p.flags, p.vaddr
                    ));
                }
            }
            PT_DYNAMIC => dynamic = Some(*p),
            PT_INTERP | PT_PHDR | PT_GNU_STACK | PT_GNU_EH_FRAME => {}
            other => notes.push(format!("unhandled pheader type {other:#x}")),
        }
    }
    let (Some(text), Some(data)) = (text, data) else {
        return fail(hd::B_BAD_DATA, "missing text or data segment");
    };
    let Some(dynamic) = dynamic else {
        return fail(hd::B_BAD_DATA, "no PT_DYNAMIC");
    };
    let rd = |a: u64| a / PAGE * PAGE;
    let ru = |a: u64| a.div_ceil(PAGE) * PAGE;
    let reserved = ru(text.vaddr.max(data.vaddr)
        + if text.vaddr > data.vaddr {
            text.memsz
        } else {
            data.memsz
        });
    let allowed = ru(text.vaddr + text.memsz) - rd(text.vaddr) + ru(data.vaddr + data.memsz)
        - rd(data.vaddr)
        + 2 * PAGE;
    if reserved > allowed {
        return fail(
            hd::B_BAD_DATA,
            format!("the segments span {reserved:#x} bytes, more than their pages plus 8 KiB"),
        );
    }
    // Map everything RW, copy, relocate, then make the text R+X.
    // SAFETY: an anonymous private mapping of `reserved` bytes at an address of the kernel's
    // choosing; checked for failure below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            reserved as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return fail(hd::B_NO_MEMORY, "cannot reserve the image's address range");
    }
    let mut image = Image {
        base: base.cast(),
        size: reserved as usize,
        text: Region {
            start: rd(text.vaddr),
            end: ru(text.vaddr + text.memsz),
        },
        data: Region {
            start: rd(data.vaddr),
            end: ru(data.vaddr + data.memsz),
        },
        symbols: HashMap::new(),
        notes,
    };
    for seg in [text, data] {
        let Some(src) = bytes.get(seg.offset as usize..(seg.offset + seg.filesz) as usize) else {
            return fail(hd::B_BAD_DATA, "segment past the end of the file");
        };
        if seg.filesz > seg.memsz || seg.vaddr + seg.memsz > reserved {
            return fail(hd::B_BAD_DATA, "segment sizes are inconsistent");
        }
        // SAFETY: `vaddr + filesz <= reserved`, checked above; the source is a file slice.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                image.base.add(seg.vaddr as usize),
                src.len(),
            )
        };
    }
    relocate(&mut image, dynamic, kernel)?;
    // SAFETY: the text region lies inside the mapping; R+X after relocation, as Haiku does.
    let r = unsafe {
        libc::mprotect(
            image.base.add(image.text.start as usize).cast(),
            (image.text.end - image.text.start) as usize,
            libc::PROT_READ | libc::PROT_EXEC,
        )
    };
    if r != 0 {
        return fail(hd::B_ERROR, "cannot protect the text segment");
    }
    if image.symbol("modules").is_none() {
        return fail(hd::B_BAD_TYPE, "the add-on exports no `modules`");
    }
    Ok(image)
}

/// Reads of the mapped image by virtual address (relative to the image), bounded to the
/// regions Haiku maps.
struct Mem<'a> {
    image: &'a Image,
}

impl Mem<'_> {
    fn mapped(&self, off: u64, len: u64) -> bool {
        let end = off.saturating_add(len);
        (off >= self.image.text.start && end <= self.image.text.end)
            || (off >= self.image.data.start && end <= self.image.data.end)
    }

    fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        if !self.mapped(off, len) {
            return None;
        }
        // SAFETY: `off..off+len` lies inside a mapped region of the image mapping.
        Some(unsafe { std::slice::from_raw_parts(self.image.base.add(off as usize), len as usize) })
    }

    fn u64(&self, off: u64) -> Option<u64> {
        u64_at(self.bytes(off, 8)?, 0)
    }

    fn cstr(&self, off: u64) -> Option<String> {
        let mut s = Vec::new();
        let mut o = off;
        loop {
            let b = *self.bytes(o, 1)?.first()?;
            if b == 0 {
                break;
            }
            s.push(b);
            o += 1;
            if s.len() > 4096 {
                return None;
            }
        }
        String::from_utf8(s).ok()
    }
}

#[derive(Clone, Copy)]
struct Sym {
    name: u32,
    info: u8,
    shndx: u16,
    value: u64,
}

fn relocate(
    image: &mut Image,
    dynamic: Phdr,
    kernel: &HashMap<String, KernelSymbol>,
) -> Result<(), LoadError> {
    let mut image_notes = Vec::new();
    let mem = Mem { image };
    let mut tags: HashMap<u64, u64> = HashMap::new();
    let mut symbolic = false;
    let mut i = 0;
    loop {
        let (Some(tag), Some(val)) = (
            mem.u64(dynamic.vaddr + i * 16),
            mem.u64(dynamic.vaddr + i * 16 + 8),
        ) else {
            return fail(
                hd::B_BAD_DATA,
                "dynamic section is not mapped or not terminated",
            );
        };
        if tag == DT_NULL {
            break;
        }
        if tag == DT_SYMBOLIC || (tag == DT_FLAGS && val & DF_SYMBOLIC != 0) {
            symbolic = true;
        }
        if tag == DT_RELR {
            image_notes.push(
                "DT_RELR is not parsed by Haiku: its relocations are silently skipped".into(),
            );
        }
        if matches!(tag, DT_INIT | DT_FINI | DT_INIT_ARRAY | DT_FINI_ARRAY) {
            image_notes.push(format!(
                "dynamic tag {tag} (an initialiser or finaliser) is never run"
            ));
        }
        tags.entry(tag).or_insert(val);
        i += 1;
    }
    let (Some(&hash), Some(&strtab), Some(&symtab)) = (
        tags.get(&DT_HASH),
        tags.get(&DT_STRTAB),
        tags.get(&DT_SYMTAB),
    ) else {
        return fail(hd::B_ERROR, "missing DT_HASH, DT_SYMTAB or DT_STRTAB");
    };
    if tags.contains_key(&DT_REL) {
        return fail(
            hd::B_ERROR,
            "DT_REL relocations are not supported on x86_64",
        );
    }
    let nchain = match mem.bytes(hash, 8).and_then(|b| u32_at(b, 4)) {
        Some(n) => n as u64,
        None => return fail(hd::B_BAD_DATA, "DT_HASH is not mapped"),
    };
    let sym = |idx: u64| -> Option<Sym> {
        let b = mem.bytes(symtab + idx * 24, 24)?;
        Some(Sym {
            name: u32_at(b, 0)?,
            info: b[4],
            shndx: u16_at(b, 6)?,
            value: u64_at(b, 8)?,
        })
    };
    let name = |s: &Sym| mem.cstr(strtab + s.name as u64);
    // The image's own defined, global symbols.
    let mut own: HashMap<String, (u64, SymbolKind, bool)> = HashMap::new();
    for idx in 1..nchain {
        let Some(s) = sym(idx) else {
            return fail(hd::B_BAD_DATA, "symbol table is not mapped");
        };
        let bind = s.info >> 4;
        if s.shndx != 0 && bind != 0 {
            if let Some(n) = name(&s) {
                own.insert(
                    n,
                    (
                        image.base() + s.value,
                        SymbolKind::from_info(s.info),
                        bind == 2,
                    ),
                );
            }
        }
    }
    let resolve = |s: &Sym| -> Result<u64, LoadError> {
        let bind = s.info >> 4;
        if bind == 0 {
            return Ok(image.base() + s.value);
        }
        let n = name(s).unwrap_or_default();
        let wanted = SymbolKind::from_info(s.info);
        let from_kernel = kernel.get(&n).map(|k| (k.addr, k.kind, false));
        let from_self = own.get(&n).copied();
        let (first, second) = if symbolic {
            (from_self, from_kernel)
        } else {
            (from_kernel, from_self)
        };
        let found = match (first, second) {
            (Some(f), Some(s)) if f.2 && !s.2 => Some(s),
            (Some(f), _) => Some(f),
            (None, s) => s,
        };
        match found {
            None if bind == 2 => Ok(0),
            None => fail(
                hd::B_MISSING_SYMBOL,
                format!("could not resolve symbol `{n}`"),
            ),
            Some((addr, kind, _)) => {
                if s.shndx == 0 && kind != wanted {
                    return fail(
                        hd::B_MISSING_SYMBOL,
                        format!("symbol `{n}`: wrong type ({wanted:?} wanted, {kind:?} found)"),
                    );
                }
                Ok(addr)
            }
        }
    };
    let mut fixups: Vec<(u64, u64, u8)> = Vec::new();
    let tables = [
        (
            tags.get(&DT_JMPREL).copied(),
            tags.get(&DT_PLTRELSZ).copied(),
            tags.get(&DT_PLTREL).copied(),
        ),
        (
            tags.get(&DT_RELA).copied(),
            tags.get(&DT_RELASZ).copied(),
            Some(DT_RELA),
        ),
    ];
    for (addr, size, kind) in tables {
        let (Some(addr), Some(size)) = (addr, size) else {
            continue;
        };
        if kind != Some(DT_RELA) {
            return fail(hd::B_ERROR, "PLT relocations are not RELA");
        }
        for k in 0..size / 24 {
            let Some(b) = mem.bytes(addr + k * 24, 24) else {
                return fail(hd::B_BAD_DATA, "relocation table is not mapped");
            };
            let (offset, info, addend) = (
                u64_at(b, 0).unwrap_or(0),
                u64_at(b, 8).unwrap_or(0),
                u64_at(b, 16).unwrap_or(0),
            );
            let (ty, idx) = ((info & 0xffff_ffff) as u32, info >> 32);
            let s = if idx != 0 {
                match sym(idx) {
                    Some(s) => Some(s),
                    None => {
                        return fail(
                            hd::B_BAD_DATA,
                            format!("relocation at {offset:#x} names symbol {idx} past the table"),
                        )
                    }
                }
            } else {
                None
            };
            let value = |s: Option<Sym>| -> Result<u64, LoadError> {
                match s {
                    Some(s) => resolve(&s),
                    None => Ok(0),
                }
            };
            let (v, width) = match ty {
                0 => continue,
                1 => (value(s)?.wrapping_add(addend), 8),
                // Haiku computes PC32 as S + A - r_offset, not - P; reproduced, not fixed.
                2 => (value(s)?.wrapping_add(addend).wrapping_sub(offset), 4),
                6 | 7 => (value(s)?, 8),
                8 => (image.base().wrapping_add(addend), 8),
                t => {
                    return fail(
                        hd::B_BAD_DATA,
                        format!("unhandled relocation type {t} at {offset:#x}"),
                    )
                }
            };
            if !mem.mapped(offset, width) {
                return fail(
                    hd::B_BAD_ADDRESS,
                    format!("relocation target {offset:#x} is outside the image"),
                );
            }
            fixups.push((offset, v, width as u8));
        }
    }
    for (offset, v, width) in fixups {
        // SAFETY: each target was checked to lie in a mapped region of our RW mapping.
        unsafe {
            let p = image.base.add(offset as usize);
            if width == 8 {
                std::ptr::write_unaligned(p.cast::<u64>(), v);
            } else {
                std::ptr::write_unaligned(p.cast::<u32>(), v as u32);
            }
        }
    }
    image.symbols = own.into_iter().map(|(k, (a, t, _))| (k, (a, t))).collect();
    image.notes.extend(image_notes);
    Ok(())
}
