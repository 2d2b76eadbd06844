//! `dynabed check HISTORY`: the run's lost-write and staleness checks from
//! its `history_<stamp>.jsonl` alone, without the cluster. Exits 0 when no
//! acknowledged write was lost, 1 when one was (a violation), 2 when the
//! history could not be checked (stale reads are reported, not a
//! violation: Dynamo allows them).

use std::path::{Path, PathBuf};

const VALID: i32 = 0;
const VIOLATION: i32 = 1;
const ERROR: i32 = 2;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// A run's `history_<stamp>.jsonl`.
    history: PathBuf,
}

pub fn run(args: &CheckArgs) -> ! {
    let code = match crate::experiment::check_history(&args.history) {
        Ok(findings) => {
            print!("{}", render(&args.history, &findings));
            if findings.violated() {
                VIOLATION
            } else {
                VALID
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ERROR
        }
    };
    std::process::exit(code)
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
