//! Make cargo rebuild the programs when bpf-linker changes (a new LLVM means new codegen).
use std::path::PathBuf;

fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        let linker: PathBuf = linker;
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
