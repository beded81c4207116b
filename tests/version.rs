//! `--version`: `sockpool-server 0.2.0 (abc1234)` with the commit the build came
//! from, plain `sockpool-server 0.2.0` outside git. The build script's rule
//! (`build/git.rs`) is run here against throwaway repositories.

mod support;

#[path = "../build/git.rs"]
mod git;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{CLIENT, SERVER, clean_command, require_tool};

fn version_of(bin: &str) -> String {
    let mut cmd = clean_command(bin);
    cmd.arg("--version");
    let out = support::run(cmd, b"");
    assert_eq!(out.code(), Some(0), "{out:?}");
    out.stdout
}

#[test]
fn version_names_the_commit_of_the_build() {
    let commit = git::commit(Path::new(env!("CARGO_MANIFEST_DIR")));
    let version = env!("CARGO_PKG_VERSION");
    let stamp = match &commit {
        Some(c) => format!("{version} ({})", c.short),
        None => version.to_owned(),
    };
    assert_eq!(version_of(SERVER), format!("sockpool-server {stamp}\n"));
    assert_eq!(version_of(CLIENT), format!("sockpool-client {stamp}\n"));
    if let Some(c) = commit {
        assert!(
            c.short.len() >= 7 && c.short.bytes().all(|b| b.is_ascii_hexdigit()),
            "{c:?}"
        );
    }
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "sockpool-test-{}-{name}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_tree_outside_git_has_no_commit() {
    let dir = TempDir::new("no-git");
    assert!(git::commit(&dir.0).is_none());
}

#[test]
fn a_repository_gives_its_commit_and_the_files_that_change_with_it() {
    if !require_tool("git") {
        return;
    }
    let repo = TempDir::new("repo");
    run_git(&repo.0, &["init", "-q", "-b", "main"]);
    // No commit yet: nothing to name.
    assert!(git::commit(&repo.0).is_none());
    std::fs::write(repo.0.join("a"), "a").unwrap();
    run_git(&repo.0, &["add", "a"]);
    run_git(&repo.0, &["commit", "-q", "-m", "one"]);

    let commit = git::commit(&repo.0).unwrap();
    assert_eq!(
        commit.short,
        run_git(&repo.0, &["rev-parse", "--short=7", "HEAD"])
    );
    let head = repo.0.join(".git/HEAD");
    let branch = repo.0.join(".git/refs/heads/main");
    assert_eq!(commit.watch, [head.clone(), branch]);

    // Packed refs: a commit will write the branch loose again, so its folder is
    // watched along with packed-refs; every watched path exists (cargo reruns a
    // build script on every build while a watched path is missing).
    run_git(&repo.0, &["pack-refs", "--all"]);
    let commit = git::commit(&repo.0).unwrap();
    assert_eq!(
        commit.watch,
        [
            head,
            repo.0.join(".git/packed-refs"),
            repo.0.join(".git/refs/heads")
        ]
    );

    // A detached HEAD holds the hash itself.
    run_git(&repo.0, &["checkout", "-q", "--detach"]);
    let commit = git::commit(&repo.0).unwrap();
    assert_eq!(commit.watch, [repo.0.join(".git/HEAD")]);
}

#[test]
fn sources_unpacked_inside_another_repository_have_no_commit() {
    if !require_tool("git") {
        return;
    }
    let repo = TempDir::new("outer");
    run_git(&repo.0, &["init", "-q"]);
    std::fs::write(repo.0.join("a"), "a").unwrap();
    run_git(&repo.0, &["add", "a"]);
    run_git(&repo.0, &["commit", "-q", "-m", "one"]);
    let copy = repo.0.join("vendor/sockpool");
    std::fs::create_dir_all(&copy).unwrap();
    assert!(git::commit(&copy).is_none());
}
