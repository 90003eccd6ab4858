//! `sqd --mode leader|worker|client start|init|stop`: parse, build the config, run the role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use sqd::cli::{Action, Cli, ModeArg, StartArgs};
use sqd::config::{
    self, ClientConfig, ClientFlags, LeaderConfig, LeaderFlags, Mode, WorkerConfig, WorkerFlags,
};
use sqd::daemon;

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
                metrics: args.metrics,
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
                metrics: args.metrics,
                capacity: args.capacity,
                ssh_key: args.ssh_key,
                known_hosts: args.known_hosts,
                poll_ms: args.poll_ms,
                settle_ms: args.settle_ms,
                transfer: args.transfer,
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
