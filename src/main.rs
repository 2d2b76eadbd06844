//! The `dynabed` command: parses the command line and dispatches.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

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
    #[command(
        after_help = "Examples:\n  dynabed node --port 60000 --id node1\n  dynabed node --id node4 --port 60003 --seeds 127.0.0.1:61000 --storage fjall"
    )]
    Node(Box<NodeConfig>),
    /// Start, inspect and stop clusters of nodes.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  dynabed cluster up --nodes 5\n  dynabed cluster status --json\n  dynabed cluster down"
    )]
    Cluster(ClusterCommand),
    /// Read a key.
    #[command(
        after_help = "Examples:\n  dynabed get user1\n  dynabed get user1 --node node2 --R 3\n  dynabed get user1 --entry 127.0.0.1:60000"
    )]
    Get(kv::GetArgs),
    /// Write a key.
    #[command(
        after_help = "Examples:\n  dynabed put user1 hello\n  dynabed put user1 - --W 3 < value.bin\n  dynabed put user1 v2 --context \"$CONTEXT\""
    )]
    Put(kv::PutArgs),
    /// Delete a key.
    #[command(after_help = "Examples:\n  dynabed delete user1 --context \"$CONTEXT\"")]
    Delete(kv::DeleteArgs),
    /// Run a command (curl, a shell, a benchmark) inside the cluster's client namespace.
    #[command(
        after_help = "Examples:\n  dynabed exec -- curl -s http://198.18.0.2:60000/status\n  dynabed exec -- bash"
    )]
    Exec {
        #[command(flatten)]
        file: ClusterFile,
        /// The command and its arguments, after `--`.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Run a workload while injecting a failure; record every request
    /// (the seed's experiment_driver.py).
    #[command(
        after_help = "Examples:\n  dynabed experiment --workload A --duration 60 --concurrency 10 --failure_mode partition --post_repair\n  dynabed experiment --failure_mode slow --slow_ms 500 --fault_layer app --out runs/slow\n  dynabed experiment --plan plan.json --post_repair --hint_delivery off --read_repair off"
    )]
    Experiment(Box<dynabed::experiment::args::ExperimentArgs>),
    /// Check a run's history_<stamp>.jsonl for lost writes and stale reads
    /// (exit 0 valid, 3 lost writes, 1 an error).
    #[command(after_help = "Examples:\n  dynabed check runs/slow/history_20261126_120000.jsonl")]
    Check(dynabed::cli::check::CheckArgs),
    /// Run the evaluation matrix (the seed's, or --matrix FILE) and write its report.
    #[command(
        after_help = "Examples:\n  dynabed matrix --quick\n  dynabed matrix --matrix my_matrix.csv --layers kernel,app --out matrix"
    )]
    Matrix(Box<dynabed::matrix::MatrixArgs>),
    /// Write report.html, report.md and the plots for existing run folders.
    #[command(after_help = "Examples:\n  dynabed report runs/slow\n  dynabed report runs/a runs/b --out report")]
    Report {
        /// Folders holding experiment files (the newest run in each is shown).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the report goes [default: the folder, when one is given; else ./report].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Apply, list and heal faults by hand.
    #[command(
        subcommand,
        after_help = "Examples:\n  dynabed fault partition --node node2 --duration 20\n  dynabed fault list\n  dynabed fault heal"
    )]
    Fault(dynabed::cli::fault::FaultCommand),
    /// The NFQUEUE delay-line daemon (started by the fault layer in a hub namespace).
    #[command(hide = true)]
    DelayLine {
        #[arg(long)]
        socket: PathBuf,
        /// The NFQUEUE queue number it reads.
        #[arg(long, default_value_t = dynabed::faults::delay_line::QUEUE)]
        queue: u16,
    },
    /// What the control machine asks a host to do with processes (run over SSH by `cluster up --hosts`).
    #[command(subcommand, hide = true, name = "host-agent")]
    HostAgent(dynabed::cluster::agent::AgentCommand),
    /// Which fault mechanisms this kernel and container support, and why not.
    #[command(after_help = "Examples:\n  dynabed doctor\n  dynabed doctor --json")]
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a completion script for a shell.
    #[command(
        after_help = "Examples:\n  dynabed completions bash > /etc/bash_completion.d/dynabed\n  dynabed completions zsh > ~/.zfunc/_dynabed"
    )]
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), generated from these definitions.
    #[command(after_help = "Examples:\n  dynabed man > /usr/local/share/man/man1/dynabed.1\n  dynabed man | man -l -")]
    Man,
    /// Render the cluster, the driver and a fault plan as Kubernetes and Chaos Mesh objects.
    #[command(
        subcommand,
        after_help = "Examples:\n  dynabed k8s render --nodes 5 --out k8s\n  dynabed k8s render --nodes 5 --plan plan.json --out k8s"
    )]
    K8s(dynabed::k8s::K8sCommand),
    /// Stop every process and remove every namespace a cluster left behind,
    /// from the run state's records (after a crash, from any directory).
    #[command(after_help = "Examples:\n  dynabed cleanup --prefix dyb\n  dynabed cleanup --all")]
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
    #[command(
        after_help = "Examples:\n  dynabed cluster up --nodes 5\n  dynabed cluster up --loopback --nodes 3 --storage fjall\n  dynabed cluster up --netns --nodes 100 --prefix big"
    )]
    Up(Box<UpArgs>),
    /// Show each node's process, reachability, ring view and hints.
    #[command(after_help = "Examples:\n  dynabed cluster status\n  dynabed cluster status --json")]
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        file: ClusterFile,
    },
    /// Stop every node and remove the cluster files.
    #[command(
        after_help = "Examples:\n  dynabed cluster down\n  dynabed cluster down --cluster_procs runs/cluster_procs.json"
    )]
    Down(ClusterFile),
    /// Start a stopped node again with its recorded command line and data.
    #[command(after_help = "Examples:\n  dynabed cluster restart node2")]
    Restart {
        /// The node's id, e.g. node3.
        node: String,
        #[command(flatten)]
        file: ClusterFile,
    },
}

#[derive(clap::Args)]
struct ClusterFile {
    #[arg(long = "cluster_procs", visible_alias = "cluster-procs", default_value = "cluster_procs.json")]
    cluster_procs: PathBuf,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    dynabed::cli::raise_descriptor_limit();
    let command = Cli::parse().command;
    if only_reads_and_prints(&command) {
        // Like any Unix filter, end quietly when the reader goes away
        // (`dynabed cluster status --json | head`) instead of panicking in
        // println!. Only here: the node and the driver write to sockets
        // and to their children's pipes, where EPIPE must be an error.
        // SAFETY: no other thread runs yet; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if let Err(e) = run(command) {
        eprintln!("error: {e:#}");
        let violation = e.downcast_ref::<dynabed::experiment::Violation>().is_some();
        std::process::exit(if violation { dynabed::experiment::Violation::EXIT_CODE } else { 1 });
    }
}

/// Commands that change nothing, so that ending them half-way is harmless.
fn only_reads_and_prints(command: &Command) -> bool {
    matches!(
        command,
        Command::Cluster(ClusterCommand::Status { .. })
            | Command::Fault(dynabed::cli::fault::FaultCommand::List { .. })
            | Command::Get(_)
            | Command::Check(_)
            | Command::Doctor { .. }
            | Command::Completions { .. }
            | Command::Man
    )
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
        Command::K8s(command) => dynabed::k8s::run(command),
        Command::Check(args) => dynabed::cli::check::run(&args),
        Command::Matrix(args) => dynabed::matrix::run(*args),
        Command::Report { dirs, out } => {
            let out = out.unwrap_or_else(|| if dirs.len() == 1 { dirs[0].clone() } else { PathBuf::from("report") });
            let report = dynabed::report::runs(&dirs, &out)?;
            println!("report: {}", report.display());
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "dynabed", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?),
        Command::HostAgent(command) => cluster::agent::run(command),
        Command::DelayLine { socket, queue } => dynabed::faults::delay_line::serve(&socket, queue),
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
