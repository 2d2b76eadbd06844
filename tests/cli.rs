//! The command line as a newcomer meets it: one meaning per flag, clear
//! refusals, nothing written for nothing.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use common::{TestCluster, BIN};

fn dynabed(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("dynabed runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_report_of_folders_without_runs_is_refused_and_writes_nothing() {
    let empty = tempfile::tempdir().unwrap();
    let out = dynabed(&["report", &empty.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("error: no experiment run to report") && err.lines().count() == 1, "{err}");
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0, "no report, no plots folder");
}

#[test]
fn node_names_a_node_of_the_cluster_entry_an_address_and_status_and_faults_print_json() {
    let cluster = TestCluster::up(186, 3, "memory", &[]);
    let procs = cluster.procs.to_string_lossy().into_owned();
    let put = dynabed(&["put", "k", "v", "--node", "node2", "--cluster_procs", &procs]);
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(stderr(&put).contains("coordinator: node2"), "the write entered at node2: {}", stderr(&put));

    let node3 = cluster.nodes["node3"].to_string();
    let get = dynabed(&["get", "k", "--entry", &node3]);
    assert!(get.status.success(), "{}", stderr(&get));
    assert_eq!(String::from_utf8_lossy(&get.stdout), "v");

    let unknown = dynabed(&["get", "k", "--node", "node9", "--cluster_procs", &procs]);
    let err = stderr(&unknown);
    assert!(
        !unknown.status.success() && err.contains("no node \"node9\"") && err.contains("node1, node2, node3"),
        "{err}"
    );
    let address = dynabed(&["get", "k", "--node", &node3, "--cluster_procs", &procs]);
    assert!(
        stderr(&address).contains(&format!("no node \"{node3}\"")),
        "an address is not a node id: {}",
        stderr(&address)
    );
    let status = dynabed(&["cluster", "status", "--json", "--cluster_procs", &procs]);
    assert!(status.status.success(), "{}", stderr(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!((nodes.len(), &status["n"]), (3, &serde_json::json!(3)), "{status}");
    assert!(nodes.iter().all(|n| n["running"] == true && n["reachable"] == true && n["alive"] == 3), "{status}");
    let faults = dynabed(&["fault", "list", "--json", "--cluster_procs", &procs]);
    assert_eq!(String::from_utf8_lossy(&faults.stdout).trim(), "[]", "{}", stderr(&faults));
    let unread = into_closed_pipe(&["cluster", "status", "--json", "--cluster_procs", &procs]);
    assert!(
        unread.status.signal() == Some(libc::SIGPIPE) && stderr(&unread).is_empty(),
        "a reader gone ends the status quietly, like any filter: {unread:?}"
    );

    let both = dynabed(&["get", "k", "--node", "node1", "--entry", &node3]);
    assert_eq!(both.status.code(), Some(2), "clap refuses the pair: {}", stderr(&both));
}

/// Runs dynabed with its stdout a pipe whose reader is already gone (as
/// in `dynabed … | head -0`).
fn into_closed_pipe(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dynabed runs");
    drop(child.stdout.take());
    child.wait_with_output().expect("dynabed ends")
}

/// The subcommands `dynabed <path> --help` lists (without `help`).
fn subcommands(path: &[String]) -> Vec<String> {
    let help = String::from_utf8(
        dynabed(&[path.iter().map(String::as_str).collect::<Vec<_>>(), vec!["--help"]].concat()).stdout,
    )
    .unwrap();
    let Some((_, rest)) = help.split_once("Commands:\n") else { return Vec::new() };
    rest.lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_subcommands_help_ends_with_examples_that_use_its_own_flags() {
    let mut pending = vec![Vec::<String>::new()];
    let mut checked = 0;
    while let Some(path) = pending.pop() {
        let children = subcommands(&path);
        if !path.is_empty() {
            let args: Vec<&str> = path.iter().map(String::as_str).chain(["--help"]).collect();
            let help = String::from_utf8(dynabed(&args).stdout).unwrap();
            let (_, examples) =
                help.rsplit_once("Examples:\n").unwrap_or_else(|| panic!("{path:?}: no examples\n{help}"));
            let prefix = format!("dynabed {}", path.join(" "));
            for example in examples.lines().map(str::trim).filter(|l| !l.is_empty()) {
                assert!(example.starts_with(&prefix), "{path:?}: an example of another command: {example}");
                for flag in example.split_whitespace().filter(|w| w.starts_with("--")) {
                    let listed = help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n"));
                    assert!(
                        listed || !children.is_empty(),
                        "{path:?}: {example} uses {flag}, which --help does not list"
                    );
                }
            }
            checked += 1;
        }
        pending.extend(children.into_iter().map(|child| path.iter().cloned().chain([child]).collect()));
    }
    assert!(checked >= 25, "only {checked} subcommands found");
}

#[test]
fn completions_load_in_bash_and_the_man_page_names_every_command() {
    let script = dynabed(&["completions", "bash"]);
    assert!(script.status.success(), "{}", stderr(&script));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dynabed.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    let loaded = Command::new("bash")
        .args(["-c", "source \"$1\" && complete -p dynabed", "bash"])
        .arg(&path)
        .output()
        .expect("bash runs");
    assert!(String::from_utf8_lossy(&loaded.stdout).contains("-F _dynabed dynabed"), "{}", stderr(&loaded));
    for shell in ["zsh", "fish"] {
        assert!(!dynabed(&["completions", shell]).stdout.is_empty(), "{shell}");
    }
    let man = String::from_utf8(dynabed(&["man"]).stdout).unwrap();
    assert!(man.contains(".TH dynabed 1"), "{man}");
    for command in subcommands(&[]) {
        assert!(man.contains(&format!("dynabed\\-{command}(1)")), "{command} in the man page");
    }
}
