//! `cargo xtask audit FILE`: does Haiku's kernel ELF loader accept this add-on?
//!
//! The command line over [`haiku_elf::audit`], which holds the rules, the checks and the
//! report and the kernel import table (generated from `spec/haiku_driver.toml`); this module
//! prints.

use std::path::Path;

use haiku_elf::audit::Failed;
#[cfg(test)]
pub use haiku_elf::audit::FRAME_POINTER;
pub use haiku_elf::audit::{audit, kernel_imports, Report};

/// Audits `file` against the kernel import table; the error lists every violation.
pub fn check(file: &Path) -> crate::Result<Report> {
    let imports = kernel_imports();
    audit(file, &imports).map_err(|violations| {
        Box::new(Failed {
            file: file.to_path_buf(),
            violations,
        })
        .into()
    })
}

/// `cargo xtask audit FILE`: prints the report, or fails with every violation.
pub fn run(file: &Path) -> crate::Result {
    let report = check(file)?;
    println!(
        "{}: accepted by every rule of the Haiku kernel add-on audit",
        file.display()
    );
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The rules are tested in `haiku-elf` against fixtures built there; here, that the
    //! import table the command uses is the spec's.

    use super::*;
    use haiku_elf::build;
    use haiku_elf::elf::SymKind;
    use std::process::Command;

    fn cc(dir: &Path, args: &[&str]) {
        let out = Command::new("cc")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("the C compiler `cc` runs");
        assert!(
            out.status.success(),
            "cc {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_good_add_on_passes_against_the_real_import_table() {
        let imports = kernel_imports();
        assert!(imports.contains(&("create_sem".into(), SymKind::Func)));
        assert!(imports.contains(&("__stack_chk_guard".into(), SymKind::Object)));
        // An add-on importing a function, a variadic function and a data object of the
        // kernel, linked against a stub that gives them their ELF types.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("kernel.c"),
            "int create_sem(int c, const char *n) { return c + (n != 0); }\n\
             void dprintf(const char *f, ...) { (void)f; }\n\
             unsigned long __stack_chk_guard = 0x1234;\n",
        )
        .unwrap();
        let mut stub = build::KERNEL_STUB.to_vec();
        stub.extend(["-o", "libkernel_x86_64.so", "kernel.c"]);
        cc(d, &stub);
        std::fs::write(
            d.join("addon.c"),
            "extern int create_sem(int, const char *);\n\
             extern void dprintf(const char *, ...);\n\
             extern unsigned long __stack_chk_guard;\n\
             static long std_ops(int op) {\n\
                 dprintf(\"op %d\\n\", op);\n\
                 return create_sem(1, \"x\") + (long)__stack_chk_guard;\n\
             }\n\
             void *modules[] = { (void *)std_ops, 0 };\n",
        )
        .unwrap();
        let mut args = build::c_addon();
        args.extend(["-O2", "-o", "addon.so", "addon.c", "-L.", "-lkernel_x86_64"]);
        cc(d, &args);
        let so = d.join("addon.so");
        audit(&so, &imports).unwrap();
        check(&so).unwrap();
    }
}
