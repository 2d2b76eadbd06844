//! `dynabed k8s render` writes objects a Kubernetes API server and Chaos
//! Mesh would accept — checked against the Kubernetes schemas
//! (kubernetes-validate --strict) and the Chaos Mesh CRDs kept in
//! testdata/chaos-mesh — and refuses, by name, a fault Chaos Mesh cannot make.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dynabed");

/// The Python with kubernetes-validate, jsonschema and PyYAML that
/// `scripts/setup --test` installs (or `$DYNABED_PYTHON`).
fn python() -> PathBuf {
    let python =
        std::env::var_os("DYNABED_PYTHON").map_or_else(|| PathBuf::from("/opt/dynabed-venv/bin/python"), PathBuf::from);
    let ready = Command::new(&python)
        .args(["-c", "import kubernetes_validate, jsonschema, yaml"])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        ready,
        "{} cannot import kubernetes_validate, jsonschema and yaml: run `scripts/setup --test` (or set DYNABED_PYTHON)",
        python.display()
    );
    python
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn render(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(["k8s", "render", "--out"]).arg(dir).args(args).output().expect("dynabed runs")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Every object in `files`, once the validator has accepted them all.
fn validate(files: &[PathBuf]) -> Result<Vec<Value>, String> {
    let out = Command::new(python())
        .arg(root().join("tests/k8s/validate.py"))
        .arg(root().join("testdata/chaos-mesh"))
        .args(files)
        .output()
        .expect("python runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("the validator prints the objects as JSON"))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Every fault kind with a Chaos Mesh equivalent, in one plan.
const EVERY_SUPPORTED: &str = r#"[
  {"at_s": 10, "duration_s": 20, "kind": "crash", "targets": ["node2"]},
  {"at_s": 0, "duration_s": 5, "kind": "slow", "targets": ["node1"], "params": {"slow_ms": 300, "jitter_ms": 20}},
  {"at_s": 5, "duration_s": 10, "kind": "partition", "targets": ["node3", "node4"],
   "params": {"direction": "in", "partition_clients": "isolate"}},
  {"at_s": 1.5, "duration_s": 3, "kind": "loss", "targets": ["node5", "node1"], "params": {"loss_pct": 30}},
  {"at_s": 2, "duration_s": 3, "kind": "duplicate", "targets": ["node1"]},
  {"at_s": 2, "duration_s": 3, "kind": "corrupt", "targets": ["node1"]},
  {"at_s": 2, "duration_s": 3, "kind": "reorder", "targets": ["node1"], "params": {"reorder_pct": 40, "slow_ms": 50}},
  {"at_s": 20, "duration_s": 30, "kind": "cpu", "targets": ["node2"], "params": {"cpu_pct": 10}},
  {"at_s": 30, "duration_s": 10, "kind": "skew", "targets": ["node4"], "layer": "app", "params": {"offset_ms": -90000}}
]"#;

#[test]
fn rendered_objects_pass_the_kubernetes_schemas_and_the_chaos_mesh_crds() {
    let work = tempfile::tempdir().unwrap();
    let plan = work.path().join("plan.json");
    std::fs::write(&plan, EVERY_SUPPORTED).unwrap();
    let out = work.path().join("k8s");
    let rendered = render(&out, &["--nodes", "5", "--plan", &plan.to_string_lossy(), "--namespace", "k8stest"]);
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let objects = validate(&yaml_files(&out)).unwrap_or_else(|e| panic!("rendered objects invalid:\n{e}"));

    let set = of_kind(&objects, "StatefulSet");
    assert_eq!(set.len(), 1);
    assert_eq!(set[0]["spec"]["replicas"], 5);
    assert_eq!(set[0]["metadata"]["namespace"], "k8stest");
    let script = set[0]["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(
        script.starts_with("set -eu\n") && script.contains("exec dynabed node --id \"node$((ordinal + 1))\""),
        "{script}"
    );
    let secret = of_kind(&objects, "Secret");
    let meta: Value =
        serde_json::from_str(secret[0]["stringData"]["cluster_procs.meta.json"].as_str().unwrap()).unwrap();
    assert_eq!(meta["admin_token"].as_str().unwrap().len(), 32, "a fresh token: {meta}");
    assert_eq!(of_kind(&objects, "Job").len(), 1);

    // One experiment per fault (the loss event has two targets), by hand and in the Workflow.
    let by_hand: Vec<_> = objects.iter().filter(|o| o["kind"].as_str().is_some_and(|k| k.ends_with("Chaos"))).collect();
    let kinds: Vec<_> = by_hand.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "NetworkChaos").count(),
        7,
        "slow, partition, 2 × loss, duplicate, corrupt, reorder: {kinds:?}"
    );
    let crash = of_kind(&objects, "PodChaos");
    assert_eq!(crash[0]["spec"]["action"], "pod-failure");
    assert_eq!(crash[0]["spec"]["duration"], "20s");
    assert_eq!(crash[0]["spec"]["selector"]["pods"]["k8stest"][0], "dynabed-1", "node2 runs in dynabed-1");
    let stress = of_kind(&objects, "StressChaos");
    assert_eq!(stress[0]["spec"]["stressors"]["cpu"]["workers"], 9, "9 workers beside the node leave it 10 %");
    let skew = of_kind(&objects, "TimeChaos");
    assert_eq!((&skew[0]["spec"]["timeOffset"], &skew[0]["spec"]["duration"]), (&"-90000ms".into(), &"10s".into()));
    assert_eq!(skew[0]["spec"]["selector"]["pods"]["k8stest"][0], "dynabed-3", "node4 runs in dynabed-3");
    let partition = by_hand.iter().find(|o| o["spec"]["action"] == "partition").unwrap();
    assert_eq!(partition["spec"]["direction"], "from");
    assert_eq!(partition["spec"]["selector"]["pods"]["k8stest"], serde_json::json!(["dynabed-2", "dynabed-3"]));

    let workflow = of_kind(&objects, "Workflow");
    let templates = workflow[0]["spec"]["templates"].as_array().unwrap();
    let holds: Vec<_> = templates.iter().filter(|t| t["name"].as_str().unwrap().ends_with("-hold")).collect();
    assert_eq!(holds.len(), by_hand.len());
    let wait = templates.iter().find(|t| t["name"] == "f3-loss-node5-wait").unwrap();
    assert_eq!((&wait["templateType"], &wait["deadline"]), (&"Suspend".into(), &"1500ms".into()));
    assert!(templates.iter().all(|t| t["name"] != "f1-slow-node1-wait"), "a fault at 0 s does not wait");
}

#[test]
fn the_validator_rejects_a_field_the_crd_does_not_name() {
    let work = tempfile::tempdir().unwrap();
    let plan = work.path().join("plan.json");
    std::fs::write(&plan, r#"[{"at_s": 10, "duration_s": 20, "kind": "crash", "targets": ["node2"]}]"#).unwrap();
    let out = work.path().join("k8s");
    assert!(render(&out, &["--nodes", "3", "--plan", &plan.to_string_lossy()]).status.success());
    let chaos = out.join("chaos/by-hand/f0-crash-node2.yaml");
    let text = std::fs::read_to_string(&chaos).unwrap();
    std::fs::write(&chaos, text.replace("  mode: \"all\"", "  mode: \"all\"\n  gracePeriodSeconds: 5")).unwrap();
    let err = validate(&[chaos]).unwrap_err();
    assert!(err.contains("gracePeriodSeconds"), "{err}");
}

#[test]
fn a_fault_without_a_chaos_mesh_equivalent_is_refused_by_name_and_nothing_is_written() {
    let work = tempfile::tempdir().unwrap();
    for (event, why) in [
        (r#"{"at_s": 1, "duration_s": 5, "kind": "pause", "targets": ["node2"]}"#, "SIGSTOP"),
        (
            r#"{"at_s": 1, "duration_s": 5, "kind": "crash", "targets": ["node2"], "params": {"no_restart": true}}"#,
            "no_restart",
        ),
        (r#"{"at_s": 1, "duration_s": 5, "kind": "bandwidth", "targets": ["node2"]}"#, "outgoing traffic only"),
        (r#"{"at_s": 1, "duration_s": 5, "kind": "slow", "targets": ["node2"], "layer": "app"}"#, "layer kernel"),
        (
            r#"{"at_s": 1, "duration_s": 5, "kind": "loss", "targets": ["node2"], "params": {"port": "peer"}}"#,
            "by port",
        ),
        (
            r#"{"at_s": 1, "duration_s": 5, "kind": "slow", "targets": ["node2"], "params": {"jitter_ms": 5, "jitter_dist": "pareto"}}"#,
            "pareto",
        ),
        (r#"{"at_s": 1, "duration_s": 5, "kind": "cpu", "targets": ["node2"], "params": {"cpu_pct": 80}}"#, "cpu_pct"),
        (
            r#"{"at_s": 1, "duration_s": 5, "kind": "skew", "targets": ["node2"], "layer": "app", "params": {"drift_ppm": 100}}"#,
            "drift_ppm",
        ),
    ] {
        let plan = work.path().join("plan.json");
        std::fs::write(&plan, format!("[{event}]")).unwrap();
        let out = work.path().join("k8s");
        let rendered = render(&out, &["--nodes", "5", "--plan", &plan.to_string_lossy()]);
        let err = String::from_utf8_lossy(&rendered.stderr).into_owned();
        assert_eq!(rendered.status.code(), Some(1), "{event}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("error: event 0 (") && err.contains("no Chaos Mesh equivalent") && err.contains(why),
            "{event}: {err}"
        );
        assert!(!out.exists(), "{event}: nothing written");
    }
}

#[test]
fn plans_that_do_not_fit_the_rendered_cluster_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let plan = work.path().join("plan.json");
    let out = work.path().join("k8s");
    std::fs::write(&plan, r#"[{"at_s": 10, "duration_s": 20, "kind": "crash", "targets": ["node7"]}]"#).unwrap();
    let err = String::from_utf8_lossy(&render(&out, &["--nodes", "5", "--plan", &plan.to_string_lossy()]).stderr)
        .into_owned();
    assert!(err.contains("node7 is not a node of this cluster (node1 … node5)"), "{err}");
    std::fs::write(&plan, r#"[{"at_s": 50, "duration_s": 20, "kind": "crash", "targets": ["node2"]}]"#).unwrap();
    let err = String::from_utf8_lossy(&render(&out, &["--nodes", "5", "--plan", &plan.to_string_lossy()]).stderr)
        .into_owned();
    assert!(err.contains("the plan runs to 70 s, past the driver's --duration 60"), "{err}");
    assert!(!out.exists());

    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("old.yaml"), "").unwrap();
    let err = String::from_utf8_lossy(&render(&out, &["--nodes", "5"]).stderr).into_owned();
    assert!(err.contains("is not empty: render into a new folder"), "{err}");
}

/// The rendered pods' processes, stopped when the test ends however it ends.
struct Pods(Vec<std::process::Child>);

impl Drop for Pods {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A container's command and its plain `env` entries.
fn container(object: &Value) -> (Vec<String>, Vec<(String, String)>) {
    let container = &object["spec"]["template"]["spec"]["containers"][0];
    let command = container["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    let env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .collect();
    (command, env)
}

/// The rendered node and driver scripts run as they would in their pods —
/// names resolved by a `getent` that maps each pod's stable name to its own
/// loopback address (127.77.0.x, which no other test uses), the Secret's
/// meta file in a folder of its own — and the driver's experiment runs
/// against the nodes they start.
#[test]
fn the_rendered_pods_form_a_cluster_the_rendered_driver_runs_an_experiment_on() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let out = root.join("k8s");
    let rendered = render(&out, &["--nodes", "3", "--namespace", "k8se2e", "--duration", "3"]);
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let objects = validate(&yaml_files(&out)).unwrap_or_else(|e| panic!("{e}"));

    let address = |i: usize| format!("127.77.0.{}", i + 2);
    let shims = root.join("bin");
    std::fs::create_dir(&shims).unwrap();
    let mut hosts = String::new();
    for i in 0..3 {
        hosts += &format!("  dynabed-{i}.dynabed.k8se2e.svc) echo \"{}  $2\" ;;\n", address(i));
    }
    let getent = shims.join("getent");
    std::fs::write(&getent, format!("#!/bin/sh\ncase \"$2\" in\n{hosts}  *) exit 2 ;;\nesac\n")).unwrap();
    std::fs::set_permissions(&getent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}:{}", shims.display(), bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let config = root.join("config");
    std::fs::create_dir(&config).unwrap();
    let meta = of_kind(&objects, "Secret")[0]["stringData"]["cluster_procs.meta.json"].as_str().unwrap().to_owned();
    std::fs::write(config.join("cluster_procs.meta.json"), meta).unwrap();

    let (node_command, node_env) = container(of_kind(&objects, "StatefulSet")[0]);
    let mut pods = Pods(Vec::new());
    for i in 0..3 {
        let log = std::fs::File::create(root.join(format!("node{i}.log"))).unwrap();
        let child = Command::new(&node_command[0])
            .args(&node_command[1..])
            .envs(node_env.iter().cloned())
            .env("PATH", &path)
            .env("HOSTNAME", format!("dynabed-{i}"))
            .env("POD_IP", address(i))
            .env("CONFIG_DIR", &config)
            .env("DATA_DIR", root.join(format!("data{i}")))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        pods.0.push(child);
    }
    for i in 0..3 {
        let addr: std::net::SocketAddr = format!("{}:60000", address(i)).parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(addr).is_err() {
            let log = std::fs::read_to_string(root.join(format!("node{i}.log"))).unwrap_or_default();
            assert!(std::time::Instant::now() < deadline, "node{} never listened on {addr}:\n{log}", i + 1);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    let (driver_command, driver_env) = container(of_kind(&objects, "Job")[0]);
    let (work_dir, results) = (root.join("work"), root.join("results"));
    std::fs::create_dir(&work_dir).unwrap();
    let driver = Command::new(&driver_command[0])
        .args(&driver_command[1..])
        .args(["--keyspace", "100", "--concurrency", "2"])
        .envs(driver_env)
        .env("PATH", &path)
        .env("CONFIG_DIR", &config)
        .env("WORK_DIR", &work_dir)
        .env("RESULTS_DIR", &results)
        .output()
        .unwrap();
    let logs: String = (0..3).map(|i| std::fs::read_to_string(root.join(format!("node{i}.log"))).unwrap()).collect();
    assert!(
        driver.status.success(),
        "the driver failed:\n{}\n{}\nnodes:\n{logs}",
        String::from_utf8_lossy(&driver.stdout),
        String::from_utf8_lossy(&driver.stderr)
    );
    let procs: Value = serde_json::from_slice(&std::fs::read(work_dir.join("cluster_procs.json")).unwrap()).unwrap();
    assert_eq!(procs["node3"]["host"], address(2), "{procs}");
    let written: Vec<String> =
        std::fs::read_dir(&results).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(written.iter().any(|name| name.starts_with("history_")), "the run's files: {written:?}");
    let summary = written.iter().find(|name| name.starts_with("summary_")).expect("a summary");
    let summary: Value = serde_json::from_slice(&std::fs::read(results.join(summary)).unwrap()).unwrap();
    // An acknowledged write needs W = 2 nodes: the pods found each other through their seeds.
    assert!(summary["load"]["ok"].as_u64().unwrap() > 0, "no write acknowledged: {summary}");
}
