//! `sqd --mode leader|worker|client start|init|stop`: parse, build the config, run the role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use sqd::config::{
    self, ClientConfig, ClientFlags, LeaderConfig, LeaderFlags, Mode, WorkerConfig, WorkerFlags,
};
use sqd::daemon;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Control plane: membership, assignment, durable registry, admin API.
    Leader,
    /// Pulls the files of its assigned clients into its store.
    Worker,
    /// Optional agent on a producing host.
    Client,
}

#[derive(Debug, Parser)]
#[command(
    name = "sqd",
    version,
    about = "sqd daemons: move stats files from producing hosts into a store",
    long_about = "sqd daemons: move stats files from producing hosts into a store.\n\n\
        Every role runs in the foreground (systemd-friendly) and stops on SIGINT/SIGTERM.\n\
        See the flags of one role with `sqd --mode worker start --help`.",
    after_help = "Examples:\n  sqd --mode leader init --config leader.toml\n  \
        sqd --mode leader start --config leader.toml\n  \
        sqd --mode worker start --id w1 --leader 127.0.0.1:7070 --store /var/lib/sqd/store\n  \
        sqd --mode worker stop --store /var/lib/sqd/store"
)]
struct Cli {
    /// Which daemon to act on.
    #[arg(long, value_enum)]
    mode: ModeArg,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Run the daemon in the foreground.
    Start(StartArgs),
    /// Write the commented sample config for this mode.
    Init {
        /// Where to write it (default: ./<mode>.toml). Refuses to overwrite.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Stop the local daemon of this mode gracefully (SIGTERM via its pid file).
    Stop(StartArgs),
}

/// Flags of every mode; each mode accepts only its own (checked after parsing).
#[derive(Debug, Args)]
struct StartArgs {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// [leader, worker] Address to serve on (leader default 127.0.0.1:7070).
    #[arg(long)]
    listen: Option<String>,
    /// [leader] Directory of the durable registry (default ./sqd-state).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// [leader, worker] Cluster id (leader default "sqd"; a worker refuses other clusters).
    #[arg(long)]
    cluster: Option<String>,
    /// [leader] Heartbeat interval the nodes use, in ms (default 1000).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// [leader] Lease of a node, in ms; at least 2 x heartbeat (default 3000).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// [leader] Extra wait after a lease before a node is dead, in ms (default 500).
    #[arg(long)]
    grace_ms: Option<u64>,
    /// [worker] Unique worker id.
    #[arg(long)]
    id: Option<String>,
    /// [worker, client] Leader address HOST:PORT (default 127.0.0.1:7070).
    #[arg(long)]
    leader: Option<String>,
    /// [worker] Store directory (files and catalog).
    #[arg(long)]
    store: Option<PathBuf>,
    /// [worker] Most clients this worker takes (default 1000).
    #[arg(long)]
    capacity: Option<u32>,
    /// [worker] Private key for clients added without --key (mode 0600).
    #[arg(long)]
    ssh_key: Option<PathBuf>,
    /// [worker] known_hosts pinning host keys, for clients added without --known-hosts.
    #[arg(long)]
    known_hosts: Option<PathBuf>,
    /// [worker] Pause between listings of an idle client, in ms (default 1000).
    #[arg(long)]
    poll_ms: Option<u64>,
    /// [worker] How long a file must stay unchanged to count as complete, in ms (default 1000).
    #[arg(long)]
    settle_ms: Option<u64>,
    /// [client] Name of the client this agent runs for (as given to `sqdctl add-client`).
    #[arg(long)]
    name: Option<String>,
    /// [client] The stats directory on this host.
    #[arg(long)]
    watch: Option<PathBuf>,
    /// [client] Backlog age in seconds that makes the agent complain (default 60).
    #[arg(long)]
    complain_after_s: Option<u64>,
    /// Log filter (e.g. info, debug, sqd=debug); RUST_LOG wins when set.
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
}

impl StartArgs {
    /// Flags given that the mode does not take.
    fn foreign_flags(&self, mode: Mode) -> Vec<&'static str> {
        let given: [(&str, bool, &[Mode]); 17] = [
            (
                "--listen",
                self.listen.is_some(),
                &[Mode::Leader, Mode::Worker],
            ),
            ("--state-dir", self.state_dir.is_some(), &[Mode::Leader]),
            (
                "--cluster",
                self.cluster.is_some(),
                &[Mode::Leader, Mode::Worker],
            ),
            (
                "--heartbeat-ms",
                self.heartbeat_ms.is_some(),
                &[Mode::Leader],
            ),
            ("--lease-ms", self.lease_ms.is_some(), &[Mode::Leader]),
            ("--grace-ms", self.grace_ms.is_some(), &[Mode::Leader]),
            ("--id", self.id.is_some(), &[Mode::Worker]),
            (
                "--leader",
                self.leader.is_some(),
                &[Mode::Worker, Mode::Client],
            ),
            ("--store", self.store.is_some(), &[Mode::Worker]),
            ("--capacity", self.capacity.is_some(), &[Mode::Worker]),
            ("--ssh-key", self.ssh_key.is_some(), &[Mode::Worker]),
            ("--known-hosts", self.known_hosts.is_some(), &[Mode::Worker]),
            ("--poll-ms", self.poll_ms.is_some(), &[Mode::Worker]),
            ("--settle-ms", self.settle_ms.is_some(), &[Mode::Worker]),
            ("--name", self.name.is_some(), &[Mode::Client]),
            ("--watch", self.watch.is_some(), &[Mode::Client]),
            (
                "--complain-after-s",
                self.complain_after_s.is_some(),
                &[Mode::Client],
            ),
        ];
        given
            .iter()
            .filter(|(_, set, modes)| *set && !modes.contains(&mode))
            .map(|(flag, _, _)| *flag)
            .collect()
    }
}

fn main() {
    let cli = Cli::parse();
    let mode = match cli.mode {
        ModeArg::Leader => Mode::Leader,
        ModeArg::Worker => Mode::Worker,
        ModeArg::Client => Mode::Client,
    };
    if let Err(e) = run(mode, cli.action) {
        eprintln!("sqd: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(mode: Mode, action: Action) -> anyhow::Result<()> {
    match action {
        Action::Init { config } => init(mode, config),
        Action::Start(args) => start(mode, args),
        Action::Stop(args) => stop(mode, args),
    }
}

fn init(mode: Mode, path: Option<PathBuf>) -> anyhow::Result<()> {
    let path = path.unwrap_or_else(|| PathBuf::from(format!("{}.toml", mode.as_str())));
    if path.exists() {
        bail!(
            "{} already exists; remove it or pass another --config",
            path.display()
        );
    }
    std::fs::write(&path, config::sample(mode))
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote {}; edit it, then run: sqd --mode {} start --config {}",
        path.display(),
        mode.as_str(),
        path.display()
    );
    Ok(())
}

enum Loaded {
    Leader(LeaderConfig),
    Worker(WorkerConfig),
    Client(ClientConfig),
}

fn load(mode: Mode, args: StartArgs) -> anyhow::Result<Loaded> {
    let foreign = args.foreign_flags(mode);
    if !foreign.is_empty() {
        bail!(
            "{} not valid with --mode {}; see `sqd --mode {} start --help`",
            foreign.join(", "),
            mode.as_str(),
            mode.as_str()
        );
    }
    let file = args.config.as_deref();
    Ok(match mode {
        Mode::Leader => Loaded::Leader(LeaderConfig::load(
            file,
            &LeaderFlags {
                listen: args.listen,
                state_dir: args.state_dir,
                cluster: args.cluster,
                heartbeat_ms: args.heartbeat_ms,
                lease_ms: args.lease_ms,
                grace_ms: args.grace_ms,
                log_level: args.log_level,
                log_format: args.log_format,
            },
        )?),
        Mode::Worker => Loaded::Worker(WorkerConfig::load(
            file,
            &WorkerFlags {
                id: args.id,
                leader: args.leader,
                store: args.store,
                listen: args.listen,
                capacity: args.capacity,
                ssh_key: args.ssh_key,
                known_hosts: args.known_hosts,
                poll_ms: args.poll_ms,
                settle_ms: args.settle_ms,
                cluster: args.cluster,
                log_level: args.log_level,
                log_format: args.log_format,
            },
        )?),
        Mode::Client => Loaded::Client(ClientConfig::load(
            file,
            &ClientFlags {
                name: args.name,
                leader: args.leader,
                watch: args.watch,
                complain_after_s: args.complain_after_s,
                log_level: args.log_level,
                log_format: args.log_format,
            },
        )?),
    })
}

fn start(mode: Mode, args: StartArgs) -> anyhow::Result<()> {
    let loaded = load(mode, args)?;
    let log = match &loaded {
        Loaded::Leader(c) => &c.log,
        Loaded::Worker(c) => &c.log,
        Loaded::Client(c) => &c.log,
    };
    daemon::init_logging(log).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = daemon::shutdown_signal();
        match loaded {
            Loaded::Leader(c) => sqd::leader::run(c, shutdown)
                .await
                .map_err(anyhow::Error::from),
            Loaded::Worker(c) => sqd::worker::run(c, shutdown)
                .await
                .map_err(anyhow::Error::from),
            Loaded::Client(c) => sqd::agent::run(c, shutdown)
                .await
                .map_err(anyhow::Error::from),
        }
    })?;
    // Tasks still holding sessions must not keep the process alive after a clean stop.
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

fn stop(mode: Mode, mut args: StartArgs) -> anyhow::Result<()> {
    // Only the directory holding the pid file matters here: stand in for required keys that
    // do not locate it, so `stop --store DIR` works without the worker id.
    match mode {
        Mode::Worker if args.id.is_none() => args.id = Some("stopping".into()),
        Mode::Client if args.name.is_none() => args.name = Some("stopping".into()),
        _ => {}
    }
    let loaded = load(mode, args)?;
    let dir: &Path;
    let holder;
    match &loaded {
        Loaded::Leader(c) => dir = &c.state_dir,
        Loaded::Worker(c) => dir = &c.store,
        Loaded::Client(c) => {
            holder = sqd::agent::runtime_dir(&c.watch);
            dir = &holder;
        }
    }
    let pid = daemon::stop(dir, mode.as_str(), Duration::from_secs(30))?;
    println!("stopped {} (pid {pid})", mode.as_str());
    Ok(())
}
