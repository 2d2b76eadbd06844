//! `report.html`: one self-contained page (plots embedded as data URIs, no
//! network) that a browser, a CI artifact viewer or a mail attachment shows
//! the same way.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use base64::Engine as _;

use super::compare::MEASURES;
use super::{Report, COLUMNS};

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1400px}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
td:first-child,th:first-child{text-align:left}tr.failed td{background:#fdd}img{max-width:100%;margin:4px 0}\
.pair{display:flex;gap:1em}.pair>div{flex:1}pre{background:#f6f6f6;padding:1em;overflow:auto;max-height:30em}";

/// Marks each image as loaded or not once the page is loaded, so a headless
/// browser's DOM dump shows whether every plot rendered.
const IMAGE_CHECK: &str = "window.addEventListener('load',()=>{const all=[...document.images];let ok=0;\
all.forEach(i=>{const good=i.complete&&i.naturalWidth>0;i.dataset.loaded=good?'yes':'no';if(good)ok++;});\
document.body.dataset.imagesLoaded=ok+'/'+all.length;});";

pub fn render(report: &Report) -> anyhow::Result<String> {
    let mut page = String::new();
    let _ = write!(page, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>dynabed report</title><style>{STYLE}</style></head><body>\n");
    let _ = writeln!(page, "<h1>dynabed report</h1><p>{} runs.</p>", report.entries.len());
    matrix_table(&mut page, report);
    for (title, pngs) in report.rows {
        let _ = writeln!(page, "<h3>{}</h3>", escape(title));
        images(&mut page, pngs)?;
    }
    let _ = writeln!(page, "<h2>Consistency per run</h2>");
    images(&mut page, report.consistency)?;
    comparison(&mut page, report)?;
    let _ = writeln!(page, "<h2>Runs</h2>");
    for entry in report.entries {
        let _ = writeln!(
            page,
            "<section id=\"run-{0}\"><h3>{0}</h3><p>status: {1}</p>",
            escape(&entry.name),
            escape(&entry.status())
        );
        if let Some(problem) = entry.problem.as_ref().or(entry.record.as_ref().and_then(|r| r.error.as_ref())) {
            let _ = writeln!(page, "<p>{}</p>", escape(problem));
        }
        images(&mut page, &entry.plots)?;
        if let Some(run) = &entry.run {
            let manifest = serde_json::to_string_pretty(&run.manifest)?;
            let _ = writeln!(page, "<details><summary>manifest</summary><pre>{}</pre></details>", escape(&manifest));
        }
        page.push_str("</section>\n");
    }
    let _ = writeln!(page, "<script>{IMAGE_CHECK}</script></body></html>");
    Ok(page)
}

fn matrix_table(page: &mut String, report: &Report) {
    page.push_str("<h2>Runs at a glance</h2><table id=\"matrix\"><thead><tr><th>run</th><th>layer</th><th>status</th>");
    for column in COLUMNS {
        let _ = write!(page, "<th>{}</th>", escape(column.name));
    }
    page.push_str("</tr></thead><tbody>\n");
    for entry in report.entries {
        let class = if entry.status() == "ok" { "" } else { " class=\"failed\"" };
        let _ = write!(
            page,
            "<tr data-cell=\"{0}\"{class}><td><a href=\"#run-{0}\">{0}</a></td><td>{1}</td><td>{2}</td>",
            escape(&entry.name),
            escape(&entry.layer_label()),
            escape(&entry.status())
        );
        for column in COLUMNS {
            let _ = write!(page, "<td>{}</td>", entry.run.as_ref().map_or("-".into(), |r| escape(&(column.value)(r))));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody></table>\n");
}

fn comparison(page: &mut String, report: &Report) -> anyhow::Result<()> {
    page.push_str("<h2>Kernel-level against application-level faults</h2>\n");
    if report.pairs.is_empty() {
        page.push_str("<p>No run was made on both layers (<code>dynabed matrix --layers kernel,app</code>).</p>\n");
    }
    for pair in report.pairs {
        let _ = write!(
            page,
            "<h3>{}</h3><table><tr><th>measure</th><th>seen by</th><th>kernel</th><th>app</th></tr>",
            escape(&pair.cell)
        );
        for m in MEASURES {
            let [kernel, app] = pair.values(m);
            let _ = write!(page, "<tr><td>{}</td><td>{}</td><td>{kernel}</td><td>{app}</td></tr>", m.name, m.side);
        }
        page.push_str("</table><div class=\"pair\">");
        for (layer, entry) in [("kernel", pair.kernel), ("app", pair.app)] {
            let _ = write!(page, "<div><p>{layer}</p>");
            images(page, &entry.plots.iter().filter(|p| p.ends_with("latency.png")).collect::<Vec<_>>())?;
            page.push_str("</div>");
        }
        page.push_str("</div>\n");
    }
    Ok(())
}

fn images(page: &mut String, pngs: &[impl AsRef<Path>]) -> anyhow::Result<()> {
    for png in pngs {
        let png = png.as_ref();
        let bytes = std::fs::read(png).with_context(|| format!("reading {}", png.display()))?;
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        let alt = png.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let _ = writeln!(page, "<img alt=\"{}\" src=\"data:image/png;base64,{data}\">", escape(&alt));
    }
    Ok(())
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
