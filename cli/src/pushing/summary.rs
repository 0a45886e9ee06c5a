//! The counts a push (or a watch) ends with, printed as one line, and the exit status they
//! give.

use oranc_core::Signature;

use super::plan::Decision;

#[derive(Debug, Default)]
pub struct Summary {
    pub pushed: usize,
    pub pushed_bytes: u64,
    pub would_push: usize,
    pub already_there: usize,
    pub excluded: usize,
    pub unsigned: usize,
    pub failed: usize,
    /// How much the registry pushed back (429s), set before printing.
    pub backpressure: oranc_core::registry::Backpressure,
}

impl Summary {
    /// Counts the decision about the path `absolute`, saying why where it is not pushed;
    /// the signatures to push it with when it is.
    pub fn record(&mut self, absolute: &str, decision: Decision) -> Option<Vec<Signature>> {
        match decision {
            Decision::Push(signatures) => return Some(signatures),
            Decision::AlreadyThere => self.already_there += 1,
            Decision::Excluded(key) => {
                self.excluded += 1;
                tracing::info!(path = %absolute, key, "signed by an excluded key, not pushed");
            }
            Decision::Unsigned => {
                self.unsigned += 1;
                eprintln!("skipped (no trusted signature): {absolute}");
            }
            Decision::BadSignature(key) => {
                self.failed += 1;
                eprintln!("failed: {absolute}: its signature by {key} does not verify");
            }
        }
        None
    }

    pub fn print(&self, description: &str, dry_run: bool) {
        // Said first: a push that skipped paths still succeeds, and a CI log shows its
        // first line.
        if self.unsigned > 0 {
            eprintln!(
                "{description}: skipped {} path(s) with no trusted signature (sign them with --signing-key, trust their key with --trusted-public-key, or fail on this with --fail-on-skipped)",
                self.unsigned
            );
        }
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
        let pushback = self.backpressure;
        if pushback.slowdowns > 0 {
            eprintln!(
                "{description}: the registry asked to slow down {} times; requests waited {:.1} s in all",
                pushback.slowdowns,
                pushback.paused.as_secs_f64()
            );
        }
    }

    /// The exit status: an error when a path failed, or, with `fail_on_skipped`, when one
    /// was skipped for want of a trusted signature.
    pub fn result(&self, fail_on_skipped: bool) -> anyhow::Result<()> {
        if self.failed > 0 {
            anyhow::bail!("{} path(s) failed", self.failed);
        }
        if fail_on_skipped && self.unsigned > 0 {
            anyhow::bail!(
                "{} path(s) skipped with no trusted signature (--fail-on-skipped)",
                self.unsigned
            );
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
