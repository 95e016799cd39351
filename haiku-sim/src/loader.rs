//! An ELF loader with the rules of Haiku's kernel add-on loader (`load_kernel_add_on` in
//! src/system/kernel/elf.cpp and `arch_elf_relocate_rela` in
//! src/system/kernel/arch/x86/arch_elf.cpp), so a file this loader accepts is one Haiku
//! would load, and a file it refuses is refused with Haiku's reason and status.
//!
//! The rules and the reading are `haiku_elf`'s ([`haiku_elf::haiku`] gives the loader's
//! verdict at each step, [`haiku_elf::rules`] the statuses and messages); this module does
//! the mechanics: it maps both regions at one base, copies the segments, writes the
//! relocations, makes the text R+X, and runs no initialisers. In Haiku's order: check the
//! header; classify PT_LOADs (the first RX one is text, the first RW one data, anything else
//! is *not mapped*); check the reserved span; map; parse the dynamic section (DT_HASH,
//! DT_SYMTAB, DT_STRTAB required; DT_REL refused); apply the PLT relocations then the RELA
//! ones (NONE, 64, PC32 with Haiku's formula, GLOB_DAT, JUMP_SLOT, RELATIVE; anything else
//! refused), resolving symbols against the kernel first, then the image (reversed with
//! DT_SYMBOLIC), with the ELF types required to match; find `modules`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use haiku_elf::elf::{AddressSpace, Rela};
use haiku_elf::haiku::{self as rules, DynamicInfo, Layout};
use haiku_elf::rules::{Apply, Refusal};
use spec::haiku_driver as hd;

/// The ELF types the loader compares.
pub use haiku_elf::elf::SymKind as SymbolKind;

/// A kernel symbol the add-on may bind to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSymbol {
    pub addr: u64,
    pub kind: SymbolKind,
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

impl From<Refusal> for LoadError {
    fn from(r: Refusal) -> Self {
        Self {
            status: r.status(),
            reason: r.to_string(),
        }
    }
}

fn fail<T>(status: i32, reason: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError {
        status,
        reason: reason.into(),
    })
}

#[derive(Clone, Copy, Debug)]
struct Region {
    start: u64,
    end: u64,
}

impl From<(u64, u64)> for Region {
    fn from((start, end): (u64, u64)) -> Self {
        Self { start, end }
    }
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

    /// The image's code: its executable segment's addresses.
    pub fn text(&self) -> std::ops::Range<u64> {
        self.base() + self.text.start..self.base() + self.text.end
    }

    /// The image's function symbols, by address (for naming code addresses).
    pub fn functions(&self) -> Vec<(u64, String)> {
        let mut f: Vec<(u64, String)> = self
            .symbols
            .iter()
            .filter(|(_, (_, kind))| *kind == SymbolKind::Func)
            .map(|(name, &(addr, _))| (addr, name.clone()))
            .collect();
        f.sort();
        f
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
    let segments = rules::program_headers(bytes)?;
    let layout = rules::layout(&segments)?;
    let Layout {
        text,
        data,
        dynamic,
        reserved,
        ..
    } = &layout;
    // Map everything RW, copy, relocate, then make the text R+X.
    // SAFETY: an anonymous private mapping of `reserved` bytes at an address of the kernel's
    // choosing; checked for failure below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            *reserved as usize,
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
        size: *reserved as usize,
        text: layout.text_region().into(),
        data: layout.data_region().into(),
        symbols: HashMap::new(),
        notes: layout.notes.iter().map(ToString::to_string).collect(),
    };
    for seg in [text, data] {
        let src = rules::segment_bytes(bytes, seg, *reserved)?;
        // SAFETY: `vaddr + filesz <= vaddr + memsz <= reserved`, checked by
        // `segment_bytes`; the source is a file slice.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                image.base.add(seg.vaddr as usize),
                src.len(),
            )
        };
    }
    relocate(&mut image, dynamic.vaddr, kernel)?;
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
        return Err(Refusal::NoModules.into());
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
}

/// The longest symbol name the loader reads.
const MAX_NAME: usize = 4096;

impl AddressSpace for Mem<'_> {
    fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        if !self.mapped(off, len) {
            return None;
        }
        // SAFETY: `off..off+len` lies inside a mapped region of the image mapping.
        Some(unsafe { std::slice::from_raw_parts(self.image.base.add(off as usize), len as usize) })
    }

    /// Byte by byte, each inside a mapped region, to the NUL; `None` past [`MAX_NAME`].
    fn c_str(&self, off: u64) -> Option<&[u8]> {
        let mut len = 0;
        loop {
            let b = *self.bytes(off.checked_add(len)?, 1)?.first()?;
            if b == 0 {
                break;
            }
            len += 1;
            if len as usize > MAX_NAME {
                return None;
            }
        }
        // SAFETY: every byte of `off..off+len` was just found inside a mapped region; the
        // regions of one mapping are contiguous in it.
        Some(unsafe { std::slice::from_raw_parts(self.image.base.add(off as usize), len as usize) })
    }
}

fn relocate(
    image: &mut Image,
    dynamic: u64,
    kernel: &HashMap<String, KernelSymbol>,
) -> Result<(), LoadError> {
    let mem = Mem { image };
    let info = DynamicInfo::parse(&mem, dynamic)?;
    let base = image.base();
    // The image's own defined, global symbols.
    let own: HashMap<String, rules::Definition> = info
        .exports(&mem)?
        .into_iter()
        .map(|(n, s)| (n, (base + s.value, s.kind, s.is_weak())))
        .collect();
    let resolve = |s: &haiku_elf::elf::RawSym| {
        rules::resolve(
            s,
            base,
            info.symbolic,
            || info.name(&mem, s).unwrap_or_default(),
            |n| kernel.get(n).map(|k| (k.addr, k.kind, false)),
            |n| own.get(n).copied(),
        )
    };
    let mut fixups: Vec<(u64, u64, u64)> = Vec::new();
    for table in rules::relocation_tables(&info.dynamic)? {
        for k in 0..table.size / haiku_elf::elf::RELA_SIZE {
            let r = Rela::read(&mem, table.addr, k).ok_or(Refusal::RelocTableUnmapped)?;
            let sym = match r.sym {
                0 => None,
                idx => Some(
                    info.symbol(&mem, u64::from(idx))
                        .ok_or(Refusal::RelocSymbol(r.offset, u64::from(idx)))?,
                ),
            };
            let how = rules::apply(r.r_type, r.offset)?;
            let s = match (how, sym) {
                (Apply::None, _) => continue,
                (Apply::Relative, _) | (_, None) => 0,
                (_, Some(s)) => resolve(&s)?,
            };
            let v = rules::value(how, s, r.addend as u64, r.offset, base);
            if !mem.mapped(r.offset, how.width()) {
                return Err(Refusal::RelocOutside(r.offset).into());
            }
            fixups.push((r.offset, v, how.width()));
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
    image
        .notes
        .extend(info.notes.iter().map(ToString::to_string));
    Ok(())
}
