//! Build script: stamps the version that `--version` prints, `0.2.0 (abc1234)` with
//! the git commit, or plain `0.2.0` outside git (a `git archive` tarball, a crate
//! from a registry).

mod git;

use std::path::PathBuf;

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    println!("cargo:rerun-if-changed=build");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let full = match git::commit(&dir) {
        Some(commit) => {
            for path in &commit.watch {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            format!("{version} ({})", commit.short)
        }
        None => version.to_owned(),
    };
    println!("cargo:rustc-env=SOCKPOOL_VERSION={full}");
}
