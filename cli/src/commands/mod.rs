//! One module per subcommand; `run` dispatches.

mod completion;
mod push;
mod tag;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Push(args) => runtime()?.block_on(push::run(*args)),
        Command::Tag(command) => tag::run(command),
        Command::Completion { shell } => {
            completion::run(shell);
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
