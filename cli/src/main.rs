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
            eprintln!("error: {}", said_once(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `error` and its causes joined by ": ", each said once: many errors say their cause in
/// their own message too, and the chain then said it twice ("No such file or directory (os
/// error 2): No such file or directory (os error 2)").
fn said_once(error: &anyhow::Error) -> String {
    let mut said: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !said.iter().any(|earlier| earlier.contains(&text)) {
            said.push(text);
        }
    }
    said.join(": ")
}
