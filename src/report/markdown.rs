//! `report.md`: the same tables as the HTML page, for terminals and pull
//! requests, with the plots linked by path.

use std::fmt::Write as _;
use std::path::Path;

use super::compare::MEASURES;
use super::{Report, COLUMNS};

pub fn render(report: &Report, out: &Path) -> String {
    let mut text = String::from("# dynabed report\n\n");
    let header: Vec<&str> = ["run", "layer", "status"].into_iter().chain(COLUMNS.iter().map(|c| c.name)).collect();
    table_header(&mut text, &header);
    for entry in report.entries {
        let mut cells = vec![entry.name.clone(), entry.layer_label(), entry.status()];
        cells.extend(COLUMNS.iter().map(|c| entry.run.as_ref().map_or("-".into(), c.value)));
        let _ = writeln!(text, "| {} |", cells.join(" | "));
    }
    if !report.pairs.is_empty() {
        text.push_str("\n## Kernel-level against application-level faults\n");
    }
    for pair in report.pairs {
        let _ = writeln!(text, "\n### {}\n", pair.cell);
        table_header(&mut text, &["measure", "seen by", "kernel", "app"]);
        for m in MEASURES {
            let [kernel, app] = pair.values(m);
            let _ = writeln!(text, "| {} | {} | {kernel} | {app} |", m.name, m.side);
        }
    }
    text.push_str("\n## Plots\n\n");
    let rows = report.rows.iter().flat_map(|(_, pngs)| pngs);
    for png in rows.chain(report.consistency).chain(report.entries.iter().flat_map(|e| &e.plots)) {
        let shown = png.strip_prefix(out).unwrap_or(png);
        let _ = writeln!(text, "- [{0}]({0})", shown.display());
    }
    text
}

fn table_header(text: &mut String, names: &[&str]) {
    let _ = writeln!(text, "| {} |", names.join(" | "));
    let _ = writeln!(text, "|{}", "---|".repeat(names.len()));
}
