//! Progress for humans: an `indicatif` bar (paths, bytes, rate) when stderr is a terminal,
//! one plain line per finished path otherwise (CI logs, pipes).

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug)]
pub enum Progress {
    Bar(ProgressBar),
    Lines,
}

impl Progress {
    pub fn new(total_bytes: u64, paths: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::Lines;
        }
        let bar = ProgressBar::new(total_bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("0/{paths} paths"));
        Self::Bar(bar)
    }

    /// One path is done; `line` says what happened to it.
    pub fn finished(&self, nar_bytes: u64, done: usize, total: usize, line: &str) {
        match self {
            Self::Bar(bar) => {
                bar.inc(nar_bytes);
                bar.set_message(format!("{done}/{total} paths"));
                if line.starts_with("failed") {
                    bar.println(line);
                }
            }
            Self::Lines => eprintln!("[{done}/{total}] {line}"),
        }
    }

    pub fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
