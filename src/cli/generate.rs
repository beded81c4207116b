//! `--generate`: man pages and shell completions rendered from the same clap
//! definitions as `--help`, so the three can never disagree.

use std::io::{self, Write};

use clap::{Command, ValueEnum};
use clap_complete::Shell;
use clap_mangen::Man;
use roff::{Roff, bold, roman};

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    /// A roff man page (section 1).
    Man,
    /// A bash completion script.
    CompleteBash,
    /// A zsh completion script.
    CompleteZsh,
    /// A fish completion script.
    CompleteFish,
}

/// Writes what `kind` asks for `cmd` (a binary's whole clap definition) to `out`.
pub fn write(kind: Generate, mut cmd: Command, out: &mut dyn Write) -> io::Result<()> {
    let shell = match kind {
        Generate::Man => return man(cmd, out),
        Generate::CompleteBash => Shell::Bash,
        Generate::CompleteZsh => Shell::Zsh,
        Generate::CompleteFish => Shell::Fish,
    };
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// Prints what `kind` asks for to stdout; the exit code for the binary's `main`.
pub fn print(kind: Generate, cmd: Command) -> std::process::ExitCode {
    let mut stdout = io::stdout().lock();
    match write(kind, cmd, &mut stdout).and_then(|()| stdout.flush()) {
        // `| head` closing the pipe early is the reader's choice, not a failure.
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "error: cannot write to stdout: {}",
                crate::error::describe(&err)
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// One page per binary. clap_mangen would point a subcommand at a page of its own
/// (`sockpool-client-bench(1)`); instead each subcommand gets a section and an
/// options section in this page, so `man sockpool-client` is the whole story.
fn man(mut cmd: Command, out: &mut dyn Write) -> io::Result<()> {
    cmd.build();
    // NAME wants a one-line summary: the first sentence of `about`, the rest stays in
    // DESCRIPTION.
    if cmd.get_long_about().is_none()
        && let Some(about) = cmd.get_about().map(ToString::to_string)
    {
        let summary = about
            .split_once(". ")
            .map_or(about.as_str(), |(first, _)| first);
        cmd = cmd
            .about(summary.trim_end_matches('.').to_owned())
            .long_about(about.clone());
    }
    let subcommands: Vec<Command> = cmd
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
        .cloned()
        .collect();
    let page = Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    for sub in subcommands {
        let title = sub.get_name().to_uppercase();
        let usage = format!("{} {}", cmd.get_name(), sub.get_name());
        let mut section = Roff::new();
        section
            .control("SH", [title.as_str()])
            .text([bold(usage), roman(" [OPTIONS]")]);
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            section.control("PP", []).text([roman(about.to_string())]);
        }
        section.to_writer(out)?;
        // clap keeps headings as `&'static str`; this runs once before the process exits.
        let heading: &'static str = Box::leak(format!("{title} options").into_boxed_str());
        Man::new(sub.mut_args(|arg| arg.help_heading(heading))).render_options_section(out)?;
    }
    let name = cmd.get_name();
    let mut tail = Roff::new();
    tail.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit_status(name) {
        tail.control("TP", [])
            .text([bold(*code)])
            .text([roman(*meaning)]);
    }
    let others: Vec<String> = PAGES
        .iter()
        .filter(|page| **page != name)
        .map(|page| format!("{page}(1)"))
        .collect();
    tail.control("SH", ["SEE ALSO"])
        .text([roman(others.join(", "))]);
    tail.to_writer(out)?;
    page.render_version_section(out)
}

/// The binaries that have a page; each page points at the others.
const PAGES: [&str; 2] = ["sockpool-server", "sockpool-client"];

/// The EXIT STATUS section of a binary's page: what its `main` returns.
fn exit_status(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "sockpool-server" => &[
            (
                "0",
                "Normal end, including a graceful shutdown on SIGINT or SIGTERM.",
            ),
            (
                "1",
                "Runtime failure (one line on stderr), or a second signal during the drain.",
            ),
            ("2", "Bad usage."),
        ],
        "sockpool-client" => &[
            ("0", "Every message was sent."),
            (
                "1",
                "The server cannot be reached or the connection broke (one line on stderr).",
            ),
            ("2", "Bad usage."),
            ("130", "Interrupted with Ctrl-C in an interactive session."),
        ],
        _ => &[],
    }
}
