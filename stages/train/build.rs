//! Links every binary and test of this crate against `libtorch_cuda` even though no symbol of it
//! is referenced directly (the linker's as-needed default drops it, which silently makes CUDA
//! unavailable on a GPU machine), and records a RUNPATH to the libtorch folder so the binaries
//! run without environment variables; `LD_LIBRARY_PATH` still overrides it on another machine.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Some(lib_dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        return;
    };
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{}", lib_dir.display());
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
}
