//! One module per subcommand; `run` dispatches.

mod completion;
mod tag;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Tag(command) => tag::run(command),
        Command::Completion { shell } => {
            completion::run(shell);
            Ok(())
        }
    }
}
