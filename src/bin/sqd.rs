//! `sqd --mode leader|worker|client start|init|stop`: parse, build the config, run the role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use sqd::cli::{Action, CompactArgs, QueryArgs, RestoreArgs, StartArgs};
use sqd::config::{self, ClientConfig, LeaderConfig, LogConfig, Mode, WorkerConfig};
use sqd::daemon;
use sqd::worker::offline::{self, OfflineError, QueryText, UsageError};

fn main() {
    let cli = sqd::cli::try_parse(std::env::args_os().collect()).unwrap_or_else(|e| e.exit());
    if let Err(e) = run(cli.mode, cli.action) {
        let causes = sqd::text::join_causes(e.chain().map(ToString::to_string));
        eprintln!("sqd: error: {causes}");
        // A bad value on the command line, as clap's own errors.
        let usage = e.downcast_ref::<UsageError>().is_some()
            || matches!(
                e.downcast_ref::<OfflineError>(),
                Some(OfflineError::Usage(_))
            );
        std::process::exit(if usage { 2 } else { 1 });
    }
}

fn run(mode: Mode, action: Action) -> anyhow::Result<()> {
    match action {
        Action::Init {
            generate_tokens: true,
            token_dir,
            ..
        } => generate_tokens(mode, token_dir),
        Action::Init { config, .. } => init(mode, config),
        Action::Start(args) => start(mode, &args),
        Action::Stop(args) => stop(mode, args),
        Action::Restore(args) => restore(mode, args),
        Action::CheckRules { file } => check_rules(mode, &file),
        Action::Query(args) => query(mode, &args),
        Action::Compact(args) => compact(mode, args),
    }
}

fn worker_only(mode: Mode, action: &str) -> Result<(), UsageError> {
    if mode == Mode::Worker {
        return Ok(());
    }
    Err(UsageError(format!(
        "{action} works on a worker's store; run: sqd --mode worker {action} --store DIR"
    )))
}

fn query(mode: Mode, args: &QueryArgs) -> anyhow::Result<()> {
    worker_only(mode, "query")?;
    let text = QueryText {
        metric: args.metric.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
        step: args.step.clone(),
        agg: args.agg.clone(),
        matchers: args.matchers.clone(),
    };
    let q = text.check(sqd::clock::unix_ms())?;
    let answer = offline::query(&args.store, &q)?;
    if args.json {
        println!("{}", offline::render_json(&answer, q.agg, &args.store));
    } else {
        print!("{}", offline::render_table(&answer, q.agg));
    }
    Ok(())
}

fn compact(mode: Mode, args: CompactArgs) -> anyhow::Result<()> {
    worker_only(mode, "compact")?;
    // Only the shard keys matter: stand in for the required id.
    let flags = sqd::config::WorkerFlags {
        id: Some("compacting".into()),
        store: Some(args.store.clone()),
        ..Default::default()
    };
    let cfg = WorkerConfig::load(args.config.as_deref(), &flags)?;
    let done = offline::compact(&args.store, cfg.shard, sqd::clock::unix_ms())?;
    println!(
        "compacted {}: sealed {} samples of {} series, dropped {} blocks past retention ({} days)",
        args.store.display(),
        done.sealed_samples,
        done.sealed_series,
        done.dropped_blocks,
        cfg.shard.retention_days,
    );
    Ok(())
}

/// `check-rules FILE`: every problem on stderr and exit 2, or a summary and exit 0.
fn check_rules(mode: Mode, file: &Path) -> anyhow::Result<()> {
    if mode != Mode::Leader {
        return Err(UsageError(
            "check-rules checks the leader's alert rules; run: sqd --mode leader check-rules FILE"
                .into(),
        )
        .into());
    }
    match sqd::leader::check_rules(file) {
        Ok(summary) => {
            println!("{}: ok, {summary}", file.display());
            Ok(())
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "sqd: {}: {} problem(s); the file was not loaded",
                file.display(),
                problems.len()
            );
            std::process::exit(2);
        }
    }
}

fn restore(mode: Mode, args: RestoreArgs) -> anyhow::Result<()> {
    if mode != Mode::Leader {
        bail!("restore is for the leader's state; run: sqd --mode leader restore --from FILE");
    }
    let mut flags = sqd::config::LeaderFlags {
        state_dir: args.state_dir,
        ..Default::default()
    };
    flags.serve.cluster = args.cluster;
    let cfg = LeaderConfig::load(args.config.as_deref(), &flags)?;
    let done = sqd::leader::restore_backup(&cfg, &args.from)?;
    println!(
        "restored {} into {} ({} clients, backup epoch counter {}, next epoch at least {}); \
         start the leader: it waits {} ms (lease + grace) before placing clients the backup \
         gives to workers, and continues epochs above everything the workers report",
        args.from.display(),
        cfg.state_dir.display(),
        done.clients,
        done.backup_epoch,
        done.next_epoch,
        cfg.lease_ms + cfg.grace_ms,
    );
    Ok(())
}

fn generate_tokens(mode: Mode, dir: Option<PathBuf>) -> anyhow::Result<()> {
    if mode != Mode::Leader {
        return Err(UsageError(
            "tokens are generated on the leader: sqd --mode leader init --generate-tokens".into(),
        )
        .into());
    }
    let dir = match dir {
        Some(dir) => dir,
        None => LeaderConfig::load(None, &config::LeaderFlags::default())?.state_dir,
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let (admin, node) = (dir.join("admin.token"), dir.join("node.token"));
    sqd::security::generate_tokens(&admin, &node)?;
    println!(
        "wrote {admin} and {node} (mode 0600)\n\
         start the leader with: --admin-token-file {admin} --node-token-file {node}\n\
         give {node} to workers and agents (--token-file) and {admin} to sqdctl \
         (--token-file or SQD_TOKEN_FILE)",
        admin = admin.display(),
        node = node.display(),
    );
    Ok(())
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

impl Loaded {
    fn log(&self) -> &LogConfig {
        match self {
            Loaded::Leader(c) => &c.log,
            Loaded::Worker(c) => &c.log,
            Loaded::Client(c) => &c.log,
        }
    }
}

fn load(mode: Mode, args: &StartArgs) -> anyhow::Result<Loaded> {
    args.check_mode(mode)?;
    let file = args.config.as_deref();
    Ok(match mode {
        Mode::Leader => Loaded::Leader(LeaderConfig::load(file, &args.leader)?),
        Mode::Worker => Loaded::Worker(WorkerConfig::load(file, &args.worker)?),
        Mode::Client => Loaded::Client(ClientConfig::load(file, &args.client)?),
    })
}

fn start(mode: Mode, args: &StartArgs) -> anyhow::Result<()> {
    let loaded = load(mode, args)?;
    daemon::init_logging(loaded.log())?;
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
    args.worker.id.get_or_insert_with(|| "stopping".into());
    args.client.name.get_or_insert_with(|| "stopping".into());
    let loaded = load(mode, &args)?;
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
