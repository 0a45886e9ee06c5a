//! The counts a push (or a watch) ends with, printed as one line, and the exit status they
//! give.

#[derive(Debug, Default)]
pub struct Summary {
    pub pushed: usize,
    pub pushed_bytes: u64,
    pub would_push: usize,
    pub already_there: usize,
    pub excluded: usize,
    pub unsigned: usize,
    pub failed: usize,
}

impl Summary {
    pub fn print(&self, description: &str, dry_run: bool) {
        let first = if dry_run {
            format!("would push {}", self.would_push)
        } else {
            format!("pushed {} ({} NAR bytes)", self.pushed, self.pushed_bytes)
        };
        eprintln!(
            "{description}: {first}, already there {}, skipped unsigned {}, excluded {}, failed {}{}",
            self.already_there,
            self.unsigned,
            self.excluded,
            self.failed,
            peak_memory().map(|m| format!("; peak memory {m}")).unwrap_or_default()
        );
    }

    pub fn result(&self) -> anyhow::Result<()> {
        if self.failed > 0 {
            anyhow::bail!("{} path(s) failed", self.failed);
        }
        Ok(())
    }
}

/// The process's peak resident memory, from /proc (Linux), for the summary and benchmarks.
fn peak_memory() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_owned())
}
