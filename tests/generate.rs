//! `--generate`: each binary's man page renders with the real `man` (no groff
//! warnings) and documents every long flag and variable of its `--help` (the client's
//! page covers `bench` too); each completion script names every long flag.

mod support;

use std::collections::BTreeSet;

use support::{CLIENT, SERVER, TempFile, clean_command, require_tool};

/// Stdout of `bin ARGS`, which must exit 0 with nothing on stderr.
fn stdout_of(bin: &str, args: &[&str]) -> String {
    let mut cmd = clean_command(bin);
    cmd.args(args);
    let out = support::run(cmd, b"");
    assert_eq!(out.code(), Some(0), "{bin} {args:?}: {out:?}");
    assert_eq!(out.stderr, "", "{bin} {args:?} wrote to stderr");
    out.stdout
}

/// The long flags that `--help` lists: the first `--name` of each option line
/// (`  -s, --server <ADDR>`, `      --udp-only`, `  -q, --quiet...`).
fn long_flags(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let mut words = line.split_whitespace();
        let mut word = words.next().unwrap_or("");
        if word.len() == 3 && word.starts_with('-') && word.ends_with(',') {
            word = words.next().unwrap_or("");
        }
        // `--quiet...` is a counted flag.
        let name: String = word
            .strip_prefix("--")
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !name.is_empty() {
            flags.insert(format!("--{name}"));
        }
    }
    flags
}

/// The `SOCKPOOL_*` variables that `--help` names (`[env: SOCKPOOL_UDP=]`).
fn variables(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split('=').next())
        .map(str::to_owned)
        .collect()
}

/// The page as `man` shows it, with words that groff hyphenated at a line end joined
/// again and its typographic hyphens and minus signs read as `-`.
fn render_man(page: &str) -> String {
    let file = TempFile::new("page.1", page.as_bytes());
    let mut cmd = clean_command("man");
    cmd.arg("--warnings").arg("-l").arg(&file.path);
    cmd.env("MANWIDTH", "100").env("MANPAGER", "cat");
    let out = support::run(cmd, b"");
    assert_eq!(out.code(), Some(0), "man failed: {out:?}");
    assert_eq!(out.stderr, "", "man (groff) warned about the page");
    let mut text = String::new();
    let mut continued = false;
    for line in out.stdout.lines() {
        // The rest of a hyphenated word follows the next line's indent.
        let line = if continued { line.trim_start() } else { line };
        match line.strip_suffix('\u{2010}') {
            Some(head) => text.push_str(head),
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
        continued = line.ends_with('\u{2010}');
    }
    text.replace(['\u{2010}', '\u{2212}', '\u{2011}'], "-")
}

/// The rendered text from the heading `from` to the heading `to`.
fn section<'a>(rendered: &'a str, from: &str, to: &str) -> &'a str {
    let start = rendered
        .find(&format!("\n{from}\n"))
        .unwrap_or_else(|| panic!("no {from} section in:\n{rendered}"));
    let rest = &rendered[start..];
    let end = rest
        .find(&format!("\n{to}\n"))
        .unwrap_or_else(|| panic!("no {to} section after {from} in:\n{rendered}"));
    &rest[..end]
}

/// Every long flag and `SOCKPOOL_*` variable of `help` is in `rendered` (a page's
/// options section).
fn assert_documents(rendered: &str, help: &str, what: &str) {
    let flags = long_flags(help);
    assert!(flags.len() > 5, "found too few flags in --help:\n{help}");
    for flag in flags.iter().chain(&variables(help)) {
        assert!(
            rendered.contains(flag.as_str()),
            "the {what} man page lacks {flag}:\n{rendered}"
        );
    }
}

#[test]
fn server_man_page_documents_every_flag_of_help() {
    if !require_tool("man") {
        return;
    }
    let page = stdout_of(SERVER, &["--generate", "man"]);
    assert!(page.contains(".TH sockpool-server 1"), "{page}");
    let rendered = render_man(&page);
    let options = section(&rendered, "OPTIONS", "EXIT STATUS");
    assert_documents(options, &stdout_of(SERVER, &["--help"]), "server");
    assert!(rendered.contains("SOCKPOOL_WORKERS"), "{rendered}");
    for section in ["\nEXIT STATUS\n", "\nSEE ALSO\n", "sockpool-client(1)"] {
        assert!(rendered.contains(section), "no {section:?} in:\n{rendered}");
    }
}

#[test]
fn client_man_page_documents_every_flag_of_help_and_of_bench() {
    if !require_tool("man") {
        return;
    }
    let page = stdout_of(CLIENT, &["--generate", "man"]);
    assert!(page.contains(".TH sockpool-client 1"), "{page}");
    let rendered = render_man(&page);
    let options = section(&rendered, "OPTIONS", "BENCH");
    assert_documents(options, &stdout_of(CLIENT, &["--help"]), "client");
    let bench = section(&rendered, "BENCH OPTIONS", "EXIT STATUS");
    assert_documents(
        bench,
        &stdout_of(CLIENT, &["bench", "--help"]),
        "client bench",
    );
    for heading in [
        "\nBENCH\n",
        "sockpool-client bench [OPTIONS]",
        "\nSEE ALSO\n",
        "sockpool-server(1)",
    ] {
        assert!(rendered.contains(heading), "no {heading:?} in:\n{rendered}");
    }
    // The bench options are in this page, not in a page that is never installed.
    assert!(!rendered.contains("sockpool-client-bench(1)"), "{rendered}");
}

#[test]
fn completions_name_every_long_flag() {
    for bin in [SERVER, CLIENT] {
        let mut flags = long_flags(&stdout_of(bin, &["--help"]));
        if bin == CLIENT {
            flags.extend(long_flags(&stdout_of(bin, &["bench", "--help"])));
        }
        for shell in ["bash", "zsh", "fish"] {
            let script = stdout_of(bin, &["--generate", &format!("complete-{shell}")]);
            for flag in &flags {
                // fish writes `-l listen`, bash and zsh `--listen`.
                let name = flag.trim_start_matches('-');
                let named = match shell {
                    "fish" => script.contains(&format!("-l {name}")),
                    _ => script.contains(flag.as_str()),
                };
                assert!(named, "{bin} complete-{shell} lacks {flag}:\n{script}");
            }
            if bin == CLIENT {
                assert!(script.contains("bench"), "{shell}: no bench subcommand");
            }
        }
    }
}

#[test]
fn bash_completion_is_valid_bash() {
    for bin in [SERVER, CLIENT] {
        let script = stdout_of(bin, &["--generate", "complete-bash"]);
        let file = TempFile::new("completion.bash", script.as_bytes());
        let mut cmd = clean_command("bash");
        cmd.arg("-n").arg(&file.path);
        let out = support::run(cmd, b"");
        assert_eq!(out.code(), Some(0), "bash -n: {out:?}");
    }
}

#[test]
fn generate_rejects_an_unknown_kind_as_usage() {
    let mut cmd = clean_command(SERVER);
    cmd.args(["--generate", "roff"]);
    let out = support::run(cmd, b"");
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("complete-bash"), "{}", out.stderr);
}
