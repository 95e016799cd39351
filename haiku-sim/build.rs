//! Compiles the simulator's C-variadic Haiku kernel exports (`src/shim.c`): stable Rust
//! cannot define C-variadic functions.

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    cc::Build::new()
        .file("src/shim.c")
        .warnings(true)
        .extra_warnings(true)
        .compile("sim_haiku_shim");
}
