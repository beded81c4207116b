//! The git commit a build comes from, for `--version`. Shared by the build script
//! (`build/main.rs`) and `tests/version.rs`, so the rule for "built outside git" is
//! tested without building a second copy of the crate.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The commit checked out in a source tree, and the git files whose change means
/// another commit (so the build script reruns only then, not on every build).
#[derive(Debug)]
pub struct Commit {
    /// The abbreviated hash, at least 7 hex digits.
    pub short: String,
    /// Existing files (or, for packed refs, a directory) to watch.
    pub watch: Vec<PathBuf>,
}

/// The commit of the work tree whose top is `dir`; `None` when git is missing, `dir`
/// is not in a work tree with a commit, or `dir` is only a folder inside some other
/// repository (a copy of the sources unpacked there must not claim its commit).
pub fn commit(dir: &Path) -> Option<Commit> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let short = git(dir, &["rev-parse", "--short=7", "HEAD"])?;
    let path = |name: &str| git(dir, &["rev-parse", "--git-path", name]).map(|p| dir.join(p));
    let mut watch = vec![path("HEAD")?];
    // On a branch, a commit rewrites the branch's ref, not HEAD. A packed ref lives
    // in packed-refs until the next commit writes it loose into its folder.
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        let loose = path(&branch)?;
        if loose.is_file() {
            watch.push(loose);
        } else {
            watch.push(path("packed-refs")?);
            watch.extend(loose.parent().map(Path::to_path_buf));
        }
    }
    watch.retain(|p| p.exists());
    Some(Commit { short, watch })
}

/// The trimmed stdout of a successful `git -C dir ARGS`, ignoring any `GIT_DIR` or
/// `GIT_WORK_TREE` of the caller (a git hook running cargo would set them).
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}
