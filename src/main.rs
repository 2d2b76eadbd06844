//! The `dynabed` command: parses the command line and dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use dynabed::cli::kv;
use dynabed::cluster::{self, launch::UpArgs};
use dynabed::node::NodeConfig;

/// glibc's allocator was a quarter of a node's CPU under load (many small,
/// short-lived buffers per request); mimalloc halves that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "dynabed", version, about = "A Dynamo-style replicated key-value store and a Linux test bed for it")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one store node.
    Node(Box<NodeConfig>),
    /// Start, inspect and stop clusters of nodes.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Read a key.
    Get(kv::GetArgs),
    /// Write a key.
    Put(kv::PutArgs),
    /// Delete a key.
    Delete(kv::DeleteArgs),
    /// Run a command (curl, a shell, a benchmark) inside the cluster's client namespace.
    Exec {
        #[command(flatten)]
        file: ClusterFile,
        /// The command and its arguments, after `--`.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Run a workload while injecting a failure; record every request
    /// (the seed's experiment_driver.py).
    Experiment(Box<dynabed::experiment::args::ExperimentArgs>),
    /// Check a run's history_<stamp>.jsonl for lost writes and stale reads
    /// (exit 0 valid, 1 lost writes, 2 error).
    Check(dynabed::cli::check::CheckArgs),
    /// Run the evaluation matrix (the seed's, or --matrix FILE) and write its report.
    Matrix(Box<dynabed::matrix::MatrixArgs>),
    /// Write report.html, report.md and the plots for existing run folders.
    Report {
        /// Folders holding experiment files (the newest run in each is shown).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the report goes [default: the folder, when one is given; else ./report].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Apply, list and heal faults by hand.
    #[command(subcommand)]
    Fault(dynabed::cli::fault::FaultCommand),
    /// The NFQUEUE delay-line daemon (started by the fault layer in a hub namespace).
    #[command(hide = true)]
    DelayLine {
        #[arg(long)]
        socket: PathBuf,
    },
    /// Which fault mechanisms this kernel and container support, and why not.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every process and remove every namespace a cluster left behind,
    /// from the run state's records (after a crash, from any directory).
    Cleanup {
        /// The cluster's prefix.
        #[arg(long, default_value = "dyb", conflicts_with = "all")]
        prefix: String,
        /// Every prefix with run state on this machine.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start K nodes and write the cluster files.
    Up(Box<UpArgs>),
    /// Show each node's process, reachability, ring view and hints.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        file: ClusterFile,
    },
    /// Stop every node and remove the cluster files.
    Down(ClusterFile),
    /// Start a stopped node again with its recorded command line and data.
    Restart {
        /// The node's id, e.g. node3.
        node: String,
        #[command(flatten)]
        file: ClusterFile,
    },
}

#[derive(clap::Args)]
struct ClusterFile {
    #[arg(long = "cluster_procs", alias = "cluster-procs", default_value = "cluster_procs.json")]
    cluster_procs: PathBuf,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    dynabed::cli::raise_descriptor_limit();
    if let Err(e) = run(Cli::parse().command) {
        eprintln!("error: {e:#}");
        let violation = e.downcast_ref::<dynabed::experiment::Violation>().is_some();
        std::process::exit(if violation { dynabed::experiment::Violation::EXIT_CODE } else { 1 });
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node(mut config) => {
            let token = cluster::register::join(&mut config)?;
            dynabed::node::run(*config, token)
        }
        Command::Cluster(ClusterCommand::Up(args)) => cluster::launch::up(*args),
        Command::Cluster(ClusterCommand::Status { json, file }) => cluster::manage::status(&file.cluster_procs, json),
        Command::Cluster(ClusterCommand::Down(f)) => dynabed::cli::cleanup::down(&f.cluster_procs),
        Command::Cluster(ClusterCommand::Restart { node, file }) => {
            let record = cluster::manage::restart(&file.cluster_procs, &node)?;
            println!("restarted {node} as pid {}", record.pid);
            Ok(())
        }
        Command::Get(args) => kv::get(args),
        Command::Put(args) => kv::put(args),
        Command::Delete(args) => kv::delete(args),
        Command::Exec { file, command } => dynabed::cli::exec::exec(&file.cluster_procs, &command),
        Command::Cleanup { prefix, all } => dynabed::cli::cleanup::run(&prefix, all),
        Command::Fault(command) => dynabed::cli::fault::run(command),
        Command::Experiment(args) => dynabed::experiment::run(*args),
        Command::Check(args) => dynabed::cli::check::run(&args),
        Command::Matrix(args) => dynabed::matrix::run(*args),
        Command::Report { dirs, out } => {
            let out = out.unwrap_or_else(|| if dirs.len() == 1 { dirs[0].clone() } else { PathBuf::from("report") });
            let report = dynabed::report::runs(&dirs, &out)?;
            println!("report: {}", report.display());
            Ok(())
        }
        Command::DelayLine { socket } => dynabed::faults::delay_line::serve(&socket),
        Command::Doctor { json } => {
            let findings = dynabed::doctor::probe_all();
            if json {
                println!("{}", serde_json::to_string_pretty(&findings)?);
            } else {
                print!("{}", dynabed::doctor::render(&findings));
            }
            Ok(())
        }
    }
}
