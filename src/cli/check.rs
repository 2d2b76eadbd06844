//! `dynabed check HISTORY`: the run's lost-write and staleness checks from
//! its `history_<stamp>.jsonl` alone, without the cluster. A lost
//! acknowledged write is a [`Violation`] (its own exit code); a history
//! that cannot be read is an error of the tool. Stale reads are reported,
//! not a violation: Dynamo allows them.

use std::path::{Path, PathBuf};

use crate::experiment::Violation;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// A run's `history_<stamp>.jsonl`.
    history: PathBuf,
}

pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let findings = crate::experiment::check_history(&args.history)?;
    print!("{}", render(&args.history, &findings));
    match Violation::of(&findings.lost_writes) {
        Some(violation) => Err(violation.into()),
        None => Ok(()),
    }
}

fn render(path: &Path, f: &crate::experiment::Findings) -> String {
    let lost = &f.lost_writes;
    let rate =
        |part: u64, whole: u64| if whole == 0 { "-".to_owned() } else { format!("{:.4}", part as f64 / whole as f64) };
    let mut out = format!(
        "{}: {} operations ({} ok, {} fail, {} info), {} final reads\n",
        path.display(),
        f.operations,
        f.ok,
        f.fail,
        f.info,
        f.final_reads
    );
    out += &format!(
        "lost writes: {} of {} acknowledged ({} unverified, {} missing from some replica)\n",
        lost.lost, lost.acknowledged, lost.unverified, lost.missing_somewhere
    );
    if !lost.examples.is_empty() {
        out += &format!("lost, e.g.: {}\n", lost.examples.join(", "));
    }
    out += &format!(
        "staleness (allowed by Dynamo, not a violation): {} of {} reads stale (rate {}); update reads: {} of {}\n",
        f.stale_reads,
        f.reads_judged,
        rate(f.stale_reads, f.reads_judged),
        f.stale_update_reads,
        f.update_reads_judged
    );
    out += if f.violated() {
        "VIOLATION: acknowledged writes were lost\n"
    } else {
        "valid: no acknowledged write was lost\n"
    };
    out
}
