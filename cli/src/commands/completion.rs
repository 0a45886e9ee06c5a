//! `oranc completion SHELL`: completion scripts generated from the clap definition, so
//! they never drift from the real flags.

use clap::CommandFactory as _;

use crate::cli::Cli;

pub fn run(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "oranc", &mut std::io::stdout());
}
