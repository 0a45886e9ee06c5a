//! The `oranc` binary: parses the command line and hands each subcommand to its module.
//! This is the only place errors become `anyhow` and then an exit code.

mod cli;
mod commands;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
