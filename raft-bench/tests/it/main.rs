//! The process tests of the `bench` binary, one test binary.
//!
//! They run `bench` (this package's binary) against clusters of `kv`, which belongs to
//! `raft-examples`: cargo's `CARGO_BIN_EXE_kv` exists only within that package, so
//! [`kv_bin`] looks for `kv` next to `bench` in the target directory, where
//! `cargo nextest run -p raft-examples -p raft-bench` (and `--workspace`) puts it fresh,
//! and builds it there with cargo, in the same profile and with the same runtime
//! features, when it is missing (`raft-bench` tested alone).

mod cluster_bench;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The `kv` binary next to `bench`, built first if it is not there.
fn kv_bin() -> &'static str {
    static KV: OnceLock<String> = OnceLock::new();
    KV.get_or_init(|| {
        let bench = Path::new(env!("CARGO_BIN_EXE_bench"));
        let kv = bench.with_file_name(format!("kv{}", std::env::consts::EXE_SUFFIX));
        if !kv.is_file() {
            build_kv(bench);
        }
        assert!(kv.is_file(), "no kv binary at {} after building it", kv.display());
        kv.display().to_string()
    })
}

/// Builds `kv` into the target directory and profile `bench` was built into
/// (`<target-dir>/<profile>/bench`).
fn build_kv(bench: &Path) {
    let profile_dir = bench.parent().expect("the profile directory");
    let profile = profile_dir.file_name().and_then(|p| p.to_str()).expect("a profile name");
    let target_dir = profile_dir.parent().expect("the target directory");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("build").arg("--manifest-path").arg(workspace.join("Cargo.toml"));
    cmd.args(["-p", "raft-examples", "--bin", "kv"]).arg("--target-dir").arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if cfg!(feature = "smol") {
        cmd.args(["--features", "smol"]);
    }
    eprintln!("building kv for the bench tests: {cmd:?}");
    let status = cmd.status().expect("run cargo");
    assert!(status.success(), "building kv failed: {status}");
}
