//! The `sqd` command line. It lives in the library so `sqdctl` can render its man page and
//! shell completions too.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Mode;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
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
pub struct Cli {
    /// Which daemon to act on.
    #[arg(long, value_enum)]
    pub mode: ModeArg,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
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
pub struct StartArgs {
    /// TOML config file; flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// [leader, worker] Address to serve on (leader default 127.0.0.1:7070).
    #[arg(long)]
    pub listen: Option<String>,
    /// [leader, worker] Serve Prometheus /metrics, /healthz and /readyz on this IP:PORT.
    #[arg(long)]
    pub metrics: Option<String>,
    /// [leader] Directory of the durable registry (default ./sqd-state).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// [leader, worker] Cluster id (leader default "sqd"; a worker refuses other clusters).
    #[arg(long)]
    pub cluster: Option<String>,
    /// [leader] Heartbeat interval the nodes use, in ms (default 1000).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// [leader] Lease of a node, in ms; at least 2 x heartbeat (default 3000).
    #[arg(long)]
    pub lease_ms: Option<u64>,
    /// [leader] Extra wait after a lease before a node is dead, in ms (default 500).
    #[arg(long)]
    pub grace_ms: Option<u64>,
    /// [worker] Unique worker id.
    #[arg(long)]
    pub id: Option<String>,
    /// [worker, client] Leader address HOST:PORT (default 127.0.0.1:7070).
    #[arg(long)]
    pub leader: Option<String>,
    /// [worker] Store directory (files and catalog).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// [worker] Most clients this worker takes (default 1000).
    #[arg(long)]
    pub capacity: Option<u32>,
    /// [worker] Private key for clients added without --key (mode 0600).
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// [worker] known_hosts pinning host keys, for clients added without --known-hosts.
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// [worker] Pause between listings of an idle client, in ms (default 1000).
    #[arg(long)]
    pub poll_ms: Option<u64>,
    /// [worker] How long a file must stay unchanged to count as complete, in ms (default 1000).
    #[arg(long)]
    pub settle_ms: Option<u64>,
    /// [worker] How files travel: "auto" (batch mode where the host lets the key run GNU tar
    /// and mv, else SFTP) or "sftp" (never runs commands on producing hosts). Default auto.
    #[arg(long, value_name = "auto|sftp")]
    pub transfer: Option<String>,
    /// [client] Name of the client this agent runs for (as given to `sqdctl add-client`).
    #[arg(long)]
    pub name: Option<String>,
    /// [client] The stats directory on this host.
    #[arg(long)]
    pub watch: Option<PathBuf>,
    /// [client] Backlog age in seconds that makes the agent complain (default 60).
    #[arg(long)]
    pub complain_after_s: Option<u64>,
    /// Log filter (e.g. info, debug, sqd=debug); RUST_LOG wins when set.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
}

impl StartArgs {
    /// Flags given that the mode does not take.
    pub fn foreign_flags(&self, mode: Mode) -> Vec<&'static str> {
        let given: [(&str, bool, &[Mode]); 19] = [
            (
                "--listen",
                self.listen.is_some(),
                &[Mode::Leader, Mode::Worker],
            ),
            (
                "--metrics",
                self.metrics.is_some(),
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
            ("--transfer", self.transfer.is_some(), &[Mode::Worker]),
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
