//! Builds the kernel programs (`agent-ebpf`) for `bpfel-unknown-none` with the nightly toolchain
//! and `bpf-linker`, via aya-build. The object lands in `$OUT_DIR/egret` and is embedded in the
//! agent binary. `cargo xtask setup` installs what this needs.
use std::{env, path::PathBuf};

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?;
    let ebpf_dir = PathBuf::from(manifest_dir).join("..").join("agent-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("kernel programs not found at {}", ebpf_dir.display()))?;
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non UTF-8 path {}", ebpf_dir.display()))?;
    // aya-build reruns this for changes under agent-ebpf; the programs also compile agent-common.
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("..").join("agent-common").display()
    );
    // aya-build runs `rustup run nightly cargo build --package agent-ebpf --release --target
    // bpfel-unknown-none -Z build-std=core` from here, which finds agent-ebpf in this
    // workspace (the `release.package.agent-ebpf` profile in the root Cargo.toml applies).
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
