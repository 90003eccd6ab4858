//! `sqdctl`: the operator's commands against the leader's admin API.

mod alerts;
mod client_list;
mod diagnose;
mod emitters;
mod fleet;
mod output;
mod query;
mod rollups;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::proto::{self, admin_service_client::AdminServiceClient};
use crate::spec::{ClientSpec, IngestSpec};

#[derive(Debug, Parser)]
#[command(
    name = "sqdctl",
    version,
    about = "Operate an sqd cluster: add and remove clients, drain workers, show status",
    after_help = "Exit codes: 0 success; 1 the leader refused the request (unknown or duplicate name, \
                  invalid value); 2 bad command line or unusable token/TLS file; 3 the leader could \
                  not be reached; 4 not authorised (missing or wrong admin token)."
)]
pub struct Cli {
    /// Leader address (HOST:PORT).
    #[arg(
        long,
        env = "SQD_LEADER",
        default_value = "127.0.0.1:7070",
        global = true
    )]
    pub leader: String,
    /// How long to wait for the leader (default 5s); for query, series and metrics the query's
    /// deadline (default 10s), after which missing shards are named. 10s, 500ms, or seconds.
    #[arg(long, global = true, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// File holding the leader's admin token (mode 0600).
    #[arg(long, env = "SQD_TOKEN_FILE", value_name = "FILE", global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// CA of the leader's certificate (PEM); turns TLS on.
    #[arg(long, env = "SQD_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM), for a leader that requires one (mTLS).
    #[arg(
        long,
        env = "SQD_TLS_CERT",
        value_name = "FILE",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "SQD_TLS_KEY",
        value_name = "FILE",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// Send the token in plaintext to a non-loopback leader (trusted networks only).
    #[arg(long, global = true)]
    pub allow_insecure: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register a producing host; answered once the leader made it durable.
    AddClient(Box<AddClientArgs>),
    /// Register many producing hosts from a file (TOML, CSV or JSON lines) in one
    /// transaction: all or none; every problem is listed with its line (exit 2), a name the
    /// leader already has refuses the whole list (exit 1).
    AddClients(fleet::AddClientsArgs),
    /// Forget a client; its worker stops pulling from it.
    RemoveClient { name: String },
    /// Move every client off a worker and give it nothing new until `undrain-worker`.
    DrainWorker { id: String },
    /// Let a drained worker take clients again.
    UndrainWorker { id: String },
    /// Forget a dead worker that will never come back: it leaves status, and the files it had
    /// claimed are adopted by its clients' new owners now instead of after orphan_after_s.
    /// Refused (exit 1) while the worker is alive or suspect.
    ForgetWorker { id: String },
    /// Show workers and their clients: progress, lag, backlog, rate, last commit, errors.
    Status {
        /// One JSON object instead of tables (stable keys, for scripts).
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Refresh in place until interrupted (Ctrl-C).
        #[arg(long)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
        interval: u64,
    },
    /// Show one client's state and the history of its assignments, with why each move happened.
    Explain {
        client: String,
        /// Most history entries shown (the newest are kept).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: u32,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Query every shard of the cluster: a table of time x series (partial answers warned on
    /// stderr), or --json / --csv.
    Query(Box<query::QueryArgs>),
    /// List series (metric and labels) in any shard, optionally of one METRIC and matchers.
    Series(query::SeriesArgs),
    /// List every metric name in any shard.
    Metrics(query::MetricsArgs),
    /// Print the latest roll-ups (files, bytes, samples, parse and pull errors per interval,
    /// and the workers that did not answer) from the leader's rollups.jsonl; run it on the
    /// leader's host.
    Rollups(rollups::RollupsArgs),
    /// Show what is firing, pending or unknown now; --follow prints notifications as they
    /// come (exactly once across reconnects); --history the newest notifications.
    Alerts(alerts::AlertsArgs),
    /// Make the leader re-read its alert rules file; a bad file keeps the rules in force and
    /// the problems are printed (exit 1).
    ReloadRules,
    /// List every node reporting host values (CPU %, RAM and disk used): host, role, id, last
    /// seen, latest values. Emitters that stopped reporting stay until forget_emitter_after.
    Emitters(emitters::EmittersArgs),
    /// The last values (default 10) of one emitter's CPU %, RAM and disk, oldest first. An
    /// unknown host prints nothing and exits 1.
    Emitter(emitters::EmitterArgs),
    /// Print a shell completion script: `sqdctl completions bash > /etc/bash_completion.d/sqdctl`.
    Completions {
        shell: clap_complete::Shell,
        /// Which program the script completes.
        #[arg(long, value_enum, default_value = "sqdctl")]
        program: Program,
    },
    /// Write man pages of sqd and sqdctl (and their subcommands) into a directory.
    Man {
        /// Directory to write the .1 files into (created if missing).
        #[arg(long, default_value = ".")]
        out_dir: std::path::PathBuf,
    },
}

/// The arguments of `add-client`: the client's spec as the operator writes it.
#[derive(Debug, Args)]
pub struct AddClientArgs {
    /// Unique client name (letters, digits, '_', '.', '-').
    name: String,
    /// SSH target the workers pull from: USER@HOST[:PORT].
    #[arg(long)]
    ssh: String,
    /// Absolute directory holding the stats files on that host.
    #[arg(long)]
    path: String,
    /// Private key file on the workers (default: the worker's configured key).
    #[arg(long)]
    key: Option<String>,
    /// known_hosts file on the workers pinning the host key (default: the worker's).
    #[arg(long)]
    known_hosts: Option<String>,
    /// Only pull file names matching this glob (default: every complete file).
    #[arg(long)]
    pattern: Option<String>,
    /// How the files' stats are parsed: auto (by extension and first line), influx, prom,
    /// jsonl, csv, or none (files only).
    #[arg(long, default_value = "auto")]
    format: String,
    /// JSON lines / CSV time field (default: ts, time or timestamp).
    #[arg(long)]
    time_field: Option<String>,
    /// JSON lines / CSV fields that are labels, comma-separated (default: every JSON string).
    #[arg(long, value_delimiter = ',')]
    label_fields: Vec<String>,
    /// Unit of InfluxDB line-protocol timestamps: ns, us, ms or s.
    #[arg(long, default_value = "ns")]
    precision: String,
}

impl AddClientArgs {
    /// The spec these arguments describe, checked here so a bad one needs no leader to be
    /// explained.
    fn spec(&self) -> Result<ClientSpec, CtlError> {
        let spec = ClientSpec {
            name: self.name.clone(),
            ssh: self.ssh.clone(),
            path: self.path.clone(),
            key_file: self.key.clone().unwrap_or_default(),
            known_hosts: self.known_hosts.clone().unwrap_or_default(),
            pattern: self.pattern.clone().unwrap_or_default(),
            ingest: Box::new(IngestSpec {
                format: self.format.clone(),
                time_field: self.time_field.clone().unwrap_or_default(),
                label_fields: self.label_fields.clone(),
                precision: self.precision.clone(),
            }),
        };
        let problems = spec.problems();
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(CtlError::Usage(problems.join("; ")))
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Program {
    Sqd,
    Sqdctl,
}

/// A failure with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(
        "cannot reach the leader at {addr}: {reason}; is it running? point at it with --leader or SQD_LEADER"
    )]
    Unreachable { addr: String, reason: String },
    #[error(
        "no sqd leader at {addr}: {found}; point --leader or SQD_LEADER at the leader's gRPC address"
    )]
    NotALeader { addr: String, found: String },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
    #[error("not authorised: {0}")]
    Unauthorised(String),
}

impl CtlError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Refused(_) => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable { .. } | CtlError::NotALeader { .. } => 3,
            CtlError::Unauthorised(_) => 4,
        }
    }
}

/// The leader's admin API, and the address it was reached at (named when it goes away).
struct Admin<'a> {
    client: AdminServiceClient<InterceptedService<Channel, crate::security::Bearer>>,
    leader: &'a str,
    /// How long a failed call's peer is probed for what it is.
    probe_for: Duration,
    /// Whether the connection is TLS (for the hint on a failed handshake).
    tls: bool,
}

/// How long to wait for the leader when `--timeout` is not given.
const LEADER_WAIT: Duration = Duration::from_secs(5);

impl<'a> Admin<'a> {
    async fn connect(cli: &'a Cli) -> Result<Self, CtlError> {
        let wait = match &cli.timeout {
            Some(t) => query::parse_timeout(t)?,
            None => LEADER_WAIT,
        };
        Self::connect_for(cli, wait).await
    }

    /// Connects within `--timeout` (at most 5 s by default) and lets each call take `rpc`.
    async fn connect_for(cli: &'a Cli, rpc: Duration) -> Result<Self, CtlError> {
        let connect = rpc.min(LEADER_WAIT);
        diagnose::check_leader_addr(&cli.leader).map_err(CtlError::Usage)?;
        let security = crate::security::NodeSecurity {
            token_file: cli.token_file.clone(),
            tls_ca: cli.tls_ca.clone(),
            tls_cert: cli.tls_cert.clone(),
            tls_key: cli.tls_key.clone(),
            allow_insecure: cli.allow_insecure,
        };
        let connector =
            crate::security::Connector::new(&cli.leader, &security).map_err(|e| match e {
                crate::security::ConnectError::BadAddr { reason, .. } => CtlError::Usage(format!(
                    "--leader {:?} is not a valid HOST:PORT: {reason}",
                    cli.leader
                )),
                crate::security::ConnectError::Security(e) => CtlError::Usage(e.to_string()),
            })?;
        let endpoint = connector.endpoint.connect_timeout(connect).timeout(rpc);
        let probe_for = connect.clamp(Duration::from_secs(1), Duration::from_secs(2));
        let channel = endpoint.connect().await.map_err(|e| {
            match diagnose::probe(&cli.leader, probe_for).not_a_leader() {
                Some(found) => CtlError::NotALeader {
                    addr: cli.leader.clone(),
                    found,
                },
                None => CtlError::Unreachable {
                    addr: cli.leader.clone(),
                    reason: error_chain(&e),
                },
            }
        })?;
        Ok(Admin {
            client: AdminServiceClient::with_interceptor(channel, connector.bearer)
                .max_decoding_message_size(crate::codec::MAX_MESSAGE_BYTES),
            leader: &cli.leader,
            probe_for,
            tls: cli.tls_ca.is_some(),
        })
    }

    /// A failed call: the leader gone or too slow, or its refusal.
    fn failed(&self, s: tonic::Status) -> CtlError {
        use tonic::Code;
        if diagnose::below_grpc(&s)
            && let Some(found) = diagnose::probe(self.leader, self.probe_for).not_a_leader()
        {
            return CtlError::NotALeader {
                addr: self.leader.to_owned(),
                found,
            };
        }
        match s.code() {
            Code::Unavailable | Code::DeadlineExceeded => CtlError::Unreachable {
                addr: self.leader.to_owned(),
                reason: s.message().to_owned(),
            },
            Code::Unauthenticated | Code::PermissionDenied => {
                CtlError::Unauthorised(s.message().to_owned())
            }
            // The connection failed after it was opened: with TLS, the leader refusing our
            // certificate (or its absence) looks like this.
            Code::Unknown | Code::Cancelled if self.tls => CtlError::Unreachable {
                addr: self.leader.to_owned(),
                reason: format!(
                    "{}; over TLS this is often a refused client certificate: does the leader \
                     require one (--tls-cert, --tls-key) signed by its tls_client_ca?",
                    status_chain(&s)
                ),
            },
            _ => CtlError::Refused(s.message().to_owned()),
        }
    }
}

/// The `--json` form of a view: one pretty-printed object on stdout.
fn print_json(view: &impl serde::Serialize) -> Result<(), CtlError> {
    let text = serde_json::to_string_pretty(view).map_err(|e| CtlError::Refused(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// A status's message and the errors under it, without the status's debug dump.
fn status_chain(s: &tonic::Status) -> String {
    match std::error::Error::source(s) {
        Some(source) => format!("{}: {}", s.message(), error_chain(source)),
        None => s.message().to_owned(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    crate::text::causes(e)
}

/// Writes the completion script of `program` for `shell` on stdout.
fn completions(shell: clap_complete::Shell, program: Program) {
    use clap::CommandFactory;
    let (mut cmd, name) = match program {
        Program::Sqd => (crate::cli::command(None), "sqd"),
        Program::Sqdctl => (Cli::command(), "sqdctl"),
    };
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

fn write_man_pages(dir: &std::path::Path) -> Result<(), CtlError> {
    use clap::CommandFactory;
    let fail = |e: std::io::Error| {
        CtlError::Refused(format!(
            "cannot write man pages into {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut written = Vec::new();
    for cmd in [crate::cli::command(None), Cli::command()] {
        let name = cmd.get_name().to_owned();
        let mut pages = vec![(name.clone(), cmd.clone())];
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let full = format!("{name}-{}", sub.get_name());
            pages.push((full.clone(), sub.clone().name(full)));
        }
        for (page, cmd) in pages {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf).map_err(fail)?;
            let path = dir.join(format!("{page}.1"));
            std::fs::write(&path, buf).map_err(fail)?;
            written.push(path.display().to_string());
        }
    }
    println!("wrote {}", written.join(" "));
    Ok(())
}

/// Runs one command, printing its result on stdout. Only the commands that need the leader
/// connect to it, and a bad argument is explained before that.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    match &cli.command {
        Command::AddClient(args) => add_client(&cli, args.spec()?).await,
        Command::AddClients(args) => fleet::add_clients(&cli, args).await,
        Command::RemoveClient { name } => remove_client(&cli, name).await,
        Command::DrainWorker { id } => drain_worker(&cli, id).await,
        Command::UndrainWorker { id } => undrain_worker(&cli, id).await,
        Command::ForgetWorker { id } => fleet::forget_worker(&cli, id).await,
        Command::Status {
            json,
            watch,
            interval,
        } => status(&cli, *json, *watch, *interval).await,
        Command::Explain {
            client,
            limit,
            json,
        } => explain(&cli, client, *limit, *json).await,
        Command::Query(args) => query::query(&cli, args).await,
        Command::Series(args) => query::series(&cli, args).await,
        Command::Metrics(args) => query::metrics(&cli, args).await,
        Command::Rollups(args) => rollups::rollups(args),
        Command::Alerts(args) => alerts::alerts(&cli, args).await,
        Command::ReloadRules => alerts::reload_rules(&cli).await,
        Command::Emitters(args) => emitters::emitters(&cli, args).await,
        Command::Emitter(args) => emitters::emitter(&cli, args).await,
        Command::Completions { shell, program } => {
            completions(*shell, *program);
            Ok(())
        }
        Command::Man { out_dir } => write_man_pages(out_dir),
    }
}

async fn add_client(cli: &Cli, spec: ClientSpec) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let name = spec.name.clone();
    let request = proto::AddClientRequest {
        client: Some(spec.into()),
    };
    let resp = admin
        .client
        .add_client(request)
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner();
    if resp.worker.is_empty() {
        println!(
            "added client {name}; no worker is available yet, it will be assigned when one registers"
        );
    } else {
        println!(
            "added client {name} -> worker {} (epoch {})",
            resp.worker, resp.epoch
        );
    }
    Ok(())
}

async fn remove_client(cli: &Cli, name: &str) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let request = proto::RemoveClientRequest {
        name: name.to_owned(),
    };
    admin
        .client
        .remove_client(request)
        .await
        .map_err(|s| admin.failed(s))?;
    println!("removed client {name}");
    Ok(())
}

async fn drain_worker(cli: &Cli, id: &str) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let request = proto::DrainWorkerRequest { id: id.to_owned() };
    let resp = admin
        .client
        .drain_worker(request)
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner();
    println!(
        "draining worker {id}: {} client(s) moving to other workers",
        resp.moved.len()
    );
    if !resp.unassigned.is_empty() {
        println!(
            "warning: no other worker can take {} client(s), they are unassigned: {}",
            resp.unassigned.len(),
            resp.unassigned.join(", ")
        );
    }
    Ok(())
}

async fn undrain_worker(cli: &Cli, id: &str) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let request = proto::DrainWorkerRequest { id: id.to_owned() };
    admin
        .client
        .undrain_worker(request)
        .await
        .map_err(|s| admin.failed(s))?;
    println!("worker {id} takes clients again");
    Ok(())
}

/// `status`, once or (`watch`) every `interval` seconds until Ctrl-C.
async fn status(cli: &Cli, json: bool, watch: bool, interval: u64) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let style = output::Style::detect();
    loop {
        let status = admin
            .client
            .status(proto::StatusRequest {})
            .await
            .map_err(|s| admin.failed(s))?
            .into_inner();
        let mut view = output::StatusView::from(status);
        view.attach_hosts(emitters::of_workers(&mut admin).await);
        if json {
            print_json(&view)?;
        } else if watch && style.tty {
            // Home + clear, then the frame: refreshes in place on a terminal.
            print!(
                "\x1b[H\x1b[2J{}",
                view.human(&style, crate::clock::unix_ms())
            );
            println!("\nevery {interval}s; Ctrl-C to stop");
        } else {
            print!("{}", view.human(&style, crate::clock::unix_ms()));
        }
        if !watch {
            return Ok(());
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(interval)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        if !style.tty {
            println!();
        }
    }
}

async fn explain(cli: &Cli, client: &str, limit: u32, json: bool) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let request = proto::ExplainRequest {
        client: client.to_owned(),
        limit,
    };
    let resp = admin
        .client
        .explain(request)
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner();
    let view = output::ExplainView::from(resp);
    if json {
        print_json(&view)
    } else {
        print!(
            "{}",
            view.human(&output::Style::detect(), crate::clock::unix_ms())
        );
        Ok(())
    }
}
