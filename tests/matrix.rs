//! `dynabed matrix` and `dynabed report`: the quick matrix on both fault
//! layers, its report opened in a real headless browser (root), and a
//! matrix interrupted and resumed (loopback).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok_output, privileged, NetnsCluster, TestCluster, BIN};
use serde_json::Value;

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn cell_names(matrix: &Path) -> Vec<String> {
    json(&matrix.join("matrix.json"))["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The page's DOM after its scripts ran, as headless chromium sees it.
fn rendered(html: &Path) -> String {
    let output = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (scripts/setup --test installs it)");
    assert!(output.status.success(), "chromium: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_quick_matrix_on_both_layers_writes_a_report_a_browser_renders() {
    if !privileged("tm1") {
        return;
    }
    let cluster = NetnsCluster::new("tm1");
    ok_output(&cluster.up_with(3, "fjall"));
    let matrix = cluster.dir.path().join("matrix");
    let started = Instant::now();
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/run_matrix"))
        .env("DYNABED_BIN", BIN)
        .current_dir(cluster.dir.path())
        .args(["--quick", "--layers", "kernel,app", "--duration", "6", "--warmup", "1", "--failure_duration", "3"])
        .output()
        .unwrap();
    let stdout = ok_output(&output);
    eprintln!("quick matrix (shortened) took {:.0} s", started.elapsed().as_secs_f64());
    assert!(stdout.contains("estimated"), "the estimate comes first: {stdout}");
    let names = cell_names(&matrix);
    assert_eq!(names.len(), 14, "{names:?}");
    for name in &names {
        let cell = json(&matrix.join("cells").join(name).join("cell.json"));
        assert_eq!(cell["record"]["status"], "ok", "{name}: {}", cell["record"]["error"]);
        for plot in ["latency", "throughput", "cdf", "repair"] {
            let dir = matrix.join("plots").join(name);
            assert!(
                dir.join(format!("{plot}.png")).exists() && dir.join(format!("{plot}.csv")).exists(),
                "{name}: {plot}"
            );
        }
    }

    // The shading of a partition cell is where its fault record says the fault was.
    let cell = matrix.join("cells").join("A-uniform-partition-c16-kernel");
    let faults = std::fs::read_dir(&cell)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("faults_"));
    let event = &json(&faults.unwrap())["events"][0];
    let windows = std::fs::read_to_string(matrix.join("plots/A-uniform-partition-c16-kernel/windows.csv")).unwrap();
    let times: Vec<f64> = windows.lines().nth(1).unwrap().split(',').take(4).map(|v| v.parse().unwrap()).collect();
    let seconds = |name: &str| event[name].as_i64().unwrap() as f64 / 1e6;
    let recorded = ["apply_started_us", "applied_us", "heal_started_us", "healed_us"].map(seconds);
    assert_eq!(times, recorded, "apply, in force (shaded) from verification to the heal's start, healed");

    let html = matrix.join("report.html");
    let page = std::fs::read_to_string(&html).unwrap();
    let images = page.matches("<img ").count();
    assert!(images >= 14 * 4 + 5, "plots in the page: {images}");
    let dom = rendered(&html);
    assert!(dom.contains(&format!("data-images-loaded=\"{images}/{images}\"")), "every image loads");
    for name in &names {
        assert!(dom.contains(&format!("<tr data-cell=\"{name}\"")), "a table row for {name}");
    }
    assert!(dom.contains("Kernel-level against application-level faults"));
    let markdown = std::fs::read_to_string(matrix.join("report.md")).unwrap();
    assert!(names.iter().all(|n| markdown.contains(&format!("| {n} |"))), "{markdown}");
    assert!(markdown.contains("### A-zipf-slow-c1"), "a kernel/app comparison: {markdown}");
}

#[test]
fn an_interrupted_matrix_resumes_from_its_first_unfinished_cell() {
    let cluster = TestCluster::up(66, 3, "memory", &[]);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("matrix.csv");
    std::fs::write(&spec, "workload,distribution,failure_mode,concurrency,notes\nA,uniform,none,\"1,2,4\",tiny\n")
        .unwrap();
    let matrix = dir.path().join("m");
    let run = || {
        let mut command = Command::new(BIN);
        command.arg("matrix").arg("--cluster_procs").arg(&cluster.procs).arg("--matrix").arg(&spec);
        command.args(["--duration", "2", "--warmup", "1", "--failure_duration", "1", "--out"]).arg(&matrix);
        command
    };
    let first = matrix.join("cells/A-uniform-none-c1/cell.json");
    let mut child = run().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // A cell preloads 1000 keys with its one client before its 2 s: only a
    // hang keeps it past this deadline, however busy the machine.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !(first.exists() && matrix.join("cells/A-uniform-none-c2").exists()) {
        assert!(Instant::now() < deadline, "the first cell never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    assert!(!child.wait().unwrap().success(), "an interrupted matrix fails");
    assert!(!matrix.join("cells/A-uniform-none-c2/cell.json").exists(), "the second cell did not finish");
    let first_record = std::fs::read(&first).unwrap();

    let output = run().output().unwrap();
    let stdout = ok_output(&output);
    assert!(stdout.contains("3 cells, 1 already done, 2 to run"), "{stdout}");
    assert_eq!(std::fs::read(&first).unwrap(), first_record, "the finished cell was not run again");
    for name in cell_names(&matrix) {
        assert_eq!(json(&matrix.join("cells").join(&name).join("cell.json"))["record"]["status"], "ok", "{name}");
    }
    assert!(matrix.join("report.html").exists() && matrix.join("report.md").exists());

    // A report of one run folder.
    let cell = matrix.join("cells/A-uniform-none-c4");
    ok_output(&Command::new(BIN).arg("report").arg(&cell).output().unwrap());
    let page = std::fs::read_to_string(cell.join("report.html")).unwrap();
    assert!(page.contains("<tr data-cell=\"A-uniform-none-c4\""));
}
