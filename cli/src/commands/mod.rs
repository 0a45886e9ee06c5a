//! One module per subcommand; `run` dispatches.

mod completion;
mod gc;
mod push;
mod server;
mod tag;
mod watch_store;

use crate::cli::{Cli, Command, ConfigCommand};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Push(args) => runtime()?.block_on(push::run(*args)),
        Command::Gc(args) => runtime()?.block_on(gc::run(*args)),
        Command::WatchStore(args) => runtime()?.block_on(watch_store::run(*args)),
        Command::Server(args) => runtime()?.block_on(server::run(*args)),
        Command::Config(ConfigCommand::Check { file, probe }) => server::check(&file, probe),
        Command::Config(ConfigCommand::Example) => {
            use std::io::Write as _;
            std::io::stdout()
                .lock()
                .write_all(server::EXAMPLE.as_bytes())?;
            Ok(())
        }
        Command::Tag(command) => tag::run(command),
        Command::Completion { shell } => {
            completion::run(shell);
            Ok(())
        }
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `1 cache`, `2 caches`.
pub fn plural<N: std::fmt::Display + PartialEq + From<u8>>(
    count: N,
    one: &str,
    many: &str,
) -> String {
    let word = if count == N::from(1) { one } else { many };
    format!("{count} {word}")
}
