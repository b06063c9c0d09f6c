//! The command line of `mezzanine`, defined once: `main` parses it, and `completions` and
//! `man` generate shell completions and man pages from the same definition.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use clap_complete::Shell;
use mezzanine_server::ServeConfig;

use crate::{admin, bench, dev, token};

#[derive(Parser)]
#[command(
    name = "mezzanine",
    version,
    about = "Sharded, append-only cell store over PostgreSQL"
)]
pub struct Cli {
    /// `--server` and `--json` given before the command (for the admin commands).
    #[command(flatten)]
    pub before: admin::Before,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the cell API over the backends of shards.json.
    Serve(Box<ServeConfig>),
    /// Start local PostgreSQL servers under a data folder and serve over them (zero configuration).
    Dev(dev::DevArgs),
    /// Measure a running server against direct PostgreSQL.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// Make bearer tokens for the API (the admin API needs one with scope admin).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Print a shell completion script on stdout (bash, zsh, fish, elvish or powershell).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page on stdout, or write one page per command into a folder.
    Man {
        /// Write mezzanine.1 and one page per command (mezzanine-move-start.1, ...) into this
        /// folder (created if missing) instead, and print their paths.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}
