//! The `oranc` binary: parses the command line and hands each subcommand to its module.
//! This crate is the binary's edge, the only one whose errors are `anyhow` (the libraries'
//! typed errors with context added); here they become a message and an exit code.

mod cli;
mod commands;
mod pushing;
mod registry_args;
mod store_paths;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORANC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", oranc_core::error::said_once(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
