//! `dynabed k8s render`: the test bed as Kubernetes objects — the nodes as
//! a StatefulSet, the driver as a Job — and a fault plan as Chaos Mesh
//! experiments, written as YAML for `kubectl apply`. Nothing here talks to
//! a cluster; the node runs in a pod exactly as it runs anywhere else.

pub mod chaos;
pub mod timing;
pub mod workload;
mod yaml;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::api::fault::FaultEvent;
use crate::faults::plan::{self, parse_seconds};
use timing::Timed;
use workload::Layout;

#[derive(Debug, clap::Subcommand)]
pub enum K8sCommand {
    /// Write the StatefulSet, Service, Secret and driver Job (and, with
    /// --plan, the Chaos Mesh experiments) as YAML into --out.
    #[command(
        after_help = "Examples:\n  dynabed k8s render --nodes 5 --out k8s\n  dynabed k8s render --nodes 5 --plan plan.json --image registry.example/dynabed:0.1 --out k8s"
    )]
    Render(RenderArgs),
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Nodes in the StatefulSet (at least 3, the replication factor).
    #[arg(long, value_parser = clap::value_parser!(u16).range(3..=1000))]
    pub nodes: u16,
    /// A fault plan (the JSON `experiment --plan` takes) to render as Chaos Mesh experiments.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// The folder to write into; it must not exist or be empty.
    #[arg(long)]
    pub out: PathBuf,
    /// The container image: `dynabed` on its PATH, with `sh`, `getent` and `awk`.
    #[arg(long, default_value = "dynabed:latest")]
    pub image: String,
    /// The Kubernetes namespace everything goes into.
    #[arg(long, default_value = "dynabed", value_parser = parse_namespace)]
    pub namespace: String,
    /// Seconds of measured workload the driver Job runs (the plan must end within it).
    #[arg(long, default_value_t = 60.0, value_parser = parse_seconds)]
    pub duration: f64,
}

/// A namespace name must be a DNS label.
fn parse_namespace(text: &str) -> Result<String, String> {
    let label = !text.is_empty()
        && text.len() <= 63
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if label {
        Ok(text.to_owned())
    } else {
        Err("a namespace is 1-63 lowercase letters, digits and '-', not starting or ending with '-'".into())
    }
}

pub fn run(command: K8sCommand) -> anyhow::Result<()> {
    match command {
        K8sCommand::Render(args) => render(&args),
    }
}

/// Renders everything, refusing the first fault Chaos Mesh cannot make
/// before a file is written.
pub fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let layout = Layout {
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        nodes: args.nodes,
        duration_s: args.duration,
    };
    let events = match &args.plan {
        Some(path) => plan::load(path)?,
        None => Vec::new(),
    };
    let faults = timed_faults(&events, &layout)?;
    if let Some(end) = events.iter().map(|e| e.at_s + e.duration_s).max_by(f64::total_cmp) {
        if end > args.duration {
            bail!("the plan runs to {end} s, past the driver's --duration {}: pass a longer --duration", args.duration);
        }
    }
    check_empty(&args.out)?;
    let token = crate::cluster::register::new_token();
    let out = &args.out;
    write(out, "cluster/00-namespace.yaml", &[layout.namespace_object()], 0o644)?;
    write(out, "cluster/10-secret.yaml", &[layout.secret(token)?], 0o600)?;
    write(out, "cluster/20-nodes.yaml", &[layout.service(), layout.stateful_set()], 0o644)?;
    write(out, "experiment/driver.yaml", &[layout.results_claim(), layout.job()], 0o644)?;
    write(out, "fetch/results-reader.yaml", &[layout.results_reader()], 0o644)?;
    let labels = json!({workload::PART_OF.0: workload::PART_OF.1, workload::COMPONENT: "chaos"});
    if !faults.is_empty() {
        let plan = timing::workflow("dynabed-plan", &layout.namespace, &labels, &faults);
        write(out, "chaos/workflow.yaml", &[plan], 0o644)?;
        for fault in &faults {
            let one = timing::standalone(&layout.namespace, &labels, fault);
            write(out, &format!("chaos/by-hand/{}.yaml", fault.name), &[one], 0o644)?;
        }
    }
    println!(
        "{}: {} nodes in namespace {}, {} fault(s) as Chaos Mesh experiments; apply with `kubectl apply -f {}/cluster`",
        out.display(),
        args.nodes,
        layout.namespace,
        faults.len(),
        out.display()
    );
    Ok(())
}

/// Every request of every event as a named Chaos Mesh experiment.
fn timed_faults(events: &[FaultEvent], layout: &Layout) -> anyhow::Result<Vec<Timed>> {
    let mut faults = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let what = || format!("event {i} ({} on {})", event.kind.as_str(), event.targets.join(","));
        for request in event.requests().with_context(what)? {
            let chaos = chaos::chaos_for(&request, layout).with_context(what)?;
            faults.push(Timed {
                name: format!("f{i}-{}-{}", event.kind.as_str(), request.node),
                at_s: event.at_s,
                duration_s: event.duration_s,
                chaos,
            });
        }
    }
    Ok(faults)
}

/// Rendering into a folder that holds anything — an older plan's chaos
/// files above all — would mix two renders in one `kubectl apply`.
fn check_empty(out: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(out).map(|mut entries| entries.next().is_some()) {
        Ok(true) => bail!("{} is not empty: render into a new folder", out.display()),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", out.display())),
    }
}

fn write(out: &Path, name: &str, objects: &[Value], mode: u32) -> anyhow::Result<()> {
    let path = out.join(name);
    let dir = path.parent().expect("a file in a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(yaml::documents(objects).as_bytes()).with_context(|| format!("writing {}", path.display()))
}
