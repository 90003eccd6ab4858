//! `sqdctl`: the operator's commands against the leader's admin API.

pub mod output;

use std::time::Duration;

use clap::{Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};

use crate::proto::{self, admin_service_client::AdminServiceClient};
use crate::spec::ClientSpec;

#[derive(Debug, Parser)]
#[command(
    name = "sqdctl",
    version,
    about = "Operate an sqd cluster: add and remove clients, drain workers, show status",
    after_help = "Exit codes: 0 success; 1 the leader refused the request (unknown or duplicate name, \
                  invalid value); 2 bad command line; 3 the leader could not be reached."
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
    /// Seconds to wait for the leader before giving up.
    #[arg(long, default_value_t = 5, global = true)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register a producing host; answered once the leader made it durable.
    AddClient {
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
    },
    /// Forget a client; its worker stops pulling from it.
    RemoveClient { name: String },
    /// Move every client off a worker and give it nothing new until `undrain-worker`.
    DrainWorker { id: String },
    /// Let a drained worker take clients again.
    UndrainWorker { id: String },
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
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
}

impl CtlError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Refused(_) => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable { .. } => 3,
        }
    }
}

async fn connect(cli: &Cli) -> Result<AdminServiceClient<Channel>, CtlError> {
    let unreachable = |reason: String| CtlError::Unreachable {
        addr: cli.leader.clone(),
        reason,
    };
    let endpoint = Endpoint::from_shared(format!("http://{}", cli.leader))
        .map_err(|e| {
            CtlError::Usage(format!(
                "--leader {:?} is not a valid HOST:PORT: {e}",
                cli.leader
            ))
        })?
        .connect_timeout(Duration::from_secs(cli.timeout))
        .timeout(Duration::from_secs(cli.timeout));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    Ok(AdminServiceClient::new(channel))
}

/// The `--json` form of a view: one pretty-printed object on stdout.
fn print_json(view: &impl serde::Serialize) -> Result<(), CtlError> {
    let text = serde_json::to_string_pretty(view).map_err(|e| CtlError::Refused(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

fn from_status(cli: &Cli, s: tonic::Status) -> CtlError {
    use tonic::Code;
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded => CtlError::Unreachable {
            addr: cli.leader.clone(),
            reason: s.message().to_owned(),
        },
        _ => CtlError::Refused(s.message().to_owned()),
    }
}

/// Commands that need no leader.
fn run_local(command: &Command) -> Option<Result<(), CtlError>> {
    use clap::CommandFactory;
    match command {
        Command::Completions { shell, program } => {
            let (mut cmd, name) = match program {
                Program::Sqd => (crate::cli::Cli::command(), "sqd"),
                Program::Sqdctl => (Cli::command(), "sqdctl"),
            };
            clap_complete::generate(*shell, &mut cmd, name, &mut std::io::stdout());
            Some(Ok(()))
        }
        Command::Man { out_dir } => Some(write_man_pages(out_dir)),
        _ => None,
    }
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
    for cmd in [crate::cli::Cli::command(), Cli::command()] {
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

/// Runs one command, printing its result on stdout.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    if let Some(result) = run_local(&cli.command) {
        return result;
    }
    // Validate locally first: a bad argument needs no leader to be explained.
    if let Command::AddClient {
        name,
        ssh,
        path,
        key,
        known_hosts,
        pattern,
    } = &cli.command
    {
        let spec = ClientSpec {
            name: name.clone(),
            ssh: ssh.clone(),
            path: path.clone(),
            key_file: key.clone().unwrap_or_default(),
            known_hosts: known_hosts.clone().unwrap_or_default(),
            pattern: pattern.clone().unwrap_or_default(),
        };
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(CtlError::Usage(problems.join("; ")));
        }
    }
    let mut admin = connect(&cli).await?;
    match &cli.command {
        Command::AddClient {
            name,
            ssh,
            path,
            key,
            known_hosts,
            pattern,
        } => {
            let client = proto::ClientSpec {
                name: name.clone(),
                ssh: ssh.clone(),
                path: path.clone(),
                key_file: key.clone().unwrap_or_default(),
                known_hosts: known_hosts.clone().unwrap_or_default(),
                pattern: pattern.clone().unwrap_or_default(),
            };
            let resp = admin
                .add_client(proto::AddClientRequest {
                    client: Some(client),
                })
                .await
                .map_err(|s| from_status(&cli, s))?
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
        }
        Command::RemoveClient { name } => {
            admin
                .remove_client(proto::RemoveClientRequest { name: name.clone() })
                .await
                .map_err(|s| from_status(&cli, s))?;
            println!("removed client {name}");
        }
        Command::DrainWorker { id } => {
            let resp = admin
                .drain_worker(proto::DrainWorkerRequest { id: id.clone() })
                .await
                .map_err(|s| from_status(&cli, s))?
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
        }
        Command::UndrainWorker { id } => {
            admin
                .undrain_worker(proto::DrainWorkerRequest { id: id.clone() })
                .await
                .map_err(|s| from_status(&cli, s))?;
            println!("worker {id} takes clients again");
        }
        Command::Status {
            json,
            watch,
            interval,
        } => {
            let style = output::Style::detect();
            loop {
                let status = admin
                    .status(proto::StatusRequest {})
                    .await
                    .map_err(|s| from_status(&cli, s))?
                    .into_inner();
                let view = output::StatusView::from(status);
                if *json {
                    print_json(&view)?;
                } else if *watch && style.tty {
                    // Home + clear, then the frame: refreshes in place on a terminal.
                    print!(
                        "\x1b[H\x1b[2J{}",
                        view.human(&style, crate::clock::unix_ms())
                    );
                    println!("\nevery {interval}s; Ctrl-C to stop");
                } else {
                    print!("{}", view.human(&style, crate::clock::unix_ms()));
                }
                if !*watch {
                    break;
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(*interval)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
                if !style.tty {
                    println!();
                }
            }
        }
        Command::Explain {
            client,
            limit,
            json,
        } => {
            let resp = admin
                .explain(proto::ExplainRequest {
                    client: client.clone(),
                    limit: *limit,
                })
                .await
                .map_err(|s| from_status(&cli, s))?
                .into_inner();
            let view = output::ExplainView::from(resp);
            if *json {
                print_json(&view)?;
            } else {
                print!(
                    "{}",
                    view.human(&output::Style::detect(), crate::clock::unix_ms())
                );
            }
        }
        Command::Completions { .. } | Command::Man { .. } => {}
    }
    Ok(())
}
