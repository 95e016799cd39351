//! The add-on's build flags, defined once: `cargo xtask build-haiku` passes them to rustc,
//! and the tests that build small add-ons with the C compiler take theirs from here.
//!
//! Why each is there (the loader's rules, [`crate::rules`]): Haiku's kernel loader maps
//! exactly one R+X and one R+W PT_LOAD and refuses more than 8 KiB of gaps between them
//! (`load_kernel_add_on`, src/system/kernel/elf.cpp), so the code and read-only data share
//! the text segment (`-z noseparate-code`, lld's `--no-rosegment`), there is no RELRO
//! segment (`-z norelro`, `relro-level=off`) and pages are 4 KiB (`max-page-size`); it looks
//! symbols up only through DT_HASH (`--hash-style=sysv`); it applies only RELA relocations
//! of a few types (src/system/kernel/arch/x86/arch_elf.cpp), so the code is PIC; interrupts
//! run on the kernel stack, so there is no red zone; and the kernel debugger walks stacks
//! through rbp (src/system/kernel/arch/x86/arch_debug.cpp), so every function keeps a frame
//! pointer, as Haiku builds its own x86_64 kernel code (build/jam/ArchitectureRules).

/// rustc's code generation for the add-on, each given as `-C <flag>`.
pub const RUSTC_CODEGEN: [&str; 5] = [
    "no-redzone=yes",
    "force-frame-pointers=yes",
    "relocation-model=pic",
    "relro-level=off",
    "panic=abort",
];

/// The C compiler's equivalents of [`RUSTC_CODEGEN`] that matter for the loader, for the
/// test add-ons (`panic=abort` has none; `-z norelro` is in [`ADDON_LINK`]).
pub const C_CODEGEN: [&str; 3] = ["-fPIC", "-mno-red-zone", "-fno-omit-frame-pointer"];

/// The add-on's link arguments, for rustc's linker (lld) in this order; GNU ld takes all
/// but [`LLD_ONLY`].
pub const ADDON_LINK: [&str; 8] = [
    "-nostdlib",
    "-Wl,--hash-style=sysv",
    "-Wl,-z,max-page-size=0x1000",
    "-Wl,-z,noseparate-code",
    "-Wl,-z,norelro",
    "-Wl,--no-rosegment",
    "-Wl,--build-id=none",
    "-Wl,-Bsymbolic",
];

/// lld's only: without `--no-rosegment` lld puts read-only data in a PT_LOAD of its own,
/// which Haiku never maps. GNU ld has no such option and needs none: with
/// `-z noseparate-code` it gives one R+X and one R+W PT_LOAD.
pub const LLD_ONLY: [&str; 1] = ["-Wl,--no-rosegment"];

/// The add-on's soname.
pub const ADDON_SONAME: &str = "-Wl,-soname,virtio_sound";

/// How the stub `kernel_x86_64` the add-on links against is compiled from C (the kernel's
/// soname, so the add-on's DT_NEEDED names the kernel as Haiku's own add-ons do).
pub const KERNEL_STUB: [&str; 5] = [
    "-shared",
    "-nostdlib",
    "-fPIC",
    "-fno-builtin",
    "-Wl,-soname,kernel_x86_64",
];

/// The link arguments rustc passes for the add-on, each as `-C link-arg=<arg>`, before the
/// stub kernel's `-L` and `-l`.
pub fn rustc_link_args() -> impl Iterator<Item = &'static str> {
    ADDON_LINK.into_iter().chain([ADDON_SONAME])
}

/// A test add-on's arguments for the C compiler with GNU ld: a shared object with
/// [`C_CODEGEN`] and [`ADDON_LINK`] less [`LLD_ONLY`] (and no soname: a test add-on is
/// named by its file). The caller adds an optimisation level, its sources and the stub
/// kernel.
pub fn c_addon() -> Vec<&'static str> {
    let mut v = vec!["-shared"];
    v.extend(C_CODEGEN);
    v.extend(ADDON_LINK.into_iter().filter(|a| !LLD_ONLY.contains(a)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags as the loader's rules call for them (see the module's documentation).
    #[test]
    fn the_flags_are_the_loaders_rules() {
        let rustc: Vec<_> = rustc_link_args().collect();
        assert_eq!(
            rustc,
            [
                "-nostdlib",
                "-Wl,--hash-style=sysv",
                "-Wl,-z,max-page-size=0x1000",
                "-Wl,-z,noseparate-code",
                "-Wl,-z,norelro",
                "-Wl,--no-rosegment",
                "-Wl,--build-id=none",
                "-Wl,-Bsymbolic",
                "-Wl,-soname,virtio_sound",
            ]
        );
        assert_eq!(
            c_addon(),
            [
                "-shared",
                "-fPIC",
                "-mno-red-zone",
                "-fno-omit-frame-pointer",
                "-nostdlib",
                "-Wl,--hash-style=sysv",
                "-Wl,-z,max-page-size=0x1000",
                "-Wl,-z,noseparate-code",
                "-Wl,-z,norelro",
                "-Wl,--build-id=none",
                "-Wl,-Bsymbolic",
            ]
        );
    }
}
