//! Shell completions and man pages, generated from the one definition of the command line
//! (`cli::Cli`), so they name exactly the commands and flags the binary accepts.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// The name the binary is installed under.
const BIN: &str = "mezzanine";

/// The command line as documented: without clap's `help` subcommand, which has no page of
/// its own (`--help` is documented on every page).
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The completion script for `shell`.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    // Generated into memory, where writing cannot fail (the generators panic on a failed write).
    clap_complete::generate(shell, &mut cmd, BIN, &mut script);
    script
}

/// The man page of `cmd`, its footer naming the package and version on every page (clap_mangen
/// would name a subcommand and its own, empty, version).
fn man(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")))
}

/// The top-level man page, `mezzanine(1)`, in roff.
pub fn man_page() -> io::Result<Vec<u8>> {
    let mut page = Vec::new();
    man(command()).render(&mut page)?;
    Ok(page)
}

/// Writes `mezzanine.1` and one page per command at every depth (`mezzanine-move.1`,
/// `mezzanine-move-start.1`, ...) into `dir`, creating it if missing; returns the paths written.
pub fn write_man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    write_pages(&command(), dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    written.push(man(cmd.clone()).generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

/// Writes `bytes` to stdout; a reader that stops early (`| head`) is not an error.
pub fn print(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
