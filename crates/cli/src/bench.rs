//! `mezzanine bench`.

/// Benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {}
}
