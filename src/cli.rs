//! The `sqd` command line: `--mode`, the actions, and the flags of `start`/`stop`, gathered
//! from the flag structs each mode declares in [`crate::config`]. It lives in the library so
//! `sqdctl` can render its man page and shell completions too.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, CommandFactory, FromArgMatches};
use clap::{Parser, Subcommand};

use crate::config::{ClientFlags, LeaderFlags, Mode, WorkerFlags};

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
    pub mode: Mode,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Run the daemon in the foreground.
    Start(StartArgs),
    /// Write the commented sample config for this mode (leader: or new tokens, with
    /// --generate-tokens).
    Init {
        /// Where to write it (default: ./<mode>.toml). Refuses to overwrite.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Leader only: write a new admin token and node token (mode 0600) instead of the
        /// sample config; never overwrites an existing token file.
        #[arg(long, conflicts_with = "config")]
        generate_tokens: bool,
        /// Where --generate-tokens writes admin.token and node.token (default: the leader's
        /// state directory).
        #[arg(long, value_name = "DIR", requires = "generate_tokens")]
        token_dir: Option<PathBuf>,
    },
    /// Stop the local daemon of this mode gracefully (SIGTERM via its pid file).
    Stop(StartArgs),
    /// Put a backup of the leader's state in place (leader only, with the leader stopped).
    /// The next start confirms no assignment from it until every lease the previous leader
    /// granted has run out, and issues epochs above everything the workers report.
    Restore(RestoreArgs),
    /// Check an alert rules file without starting (leader only): every problem with file,
    /// rule and key; exit 0 when usable, 2 otherwise.
    CheckRules {
        /// The rules file (TOML; see config/rules.toml).
        file: PathBuf,
    },
    /// Query one store's samples offline (worker only; works while the worker runs).
    Query(QueryArgs),
    /// Seal and apply retention to one store's samples now (worker only).
    Compact(CompactArgs),
}

/// The flags of `sqd --mode worker query`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  sqd --mode worker query --store /var/lib/sqd/store cpu \
    --from -1h --step 1m --agg avg --where host=web-1 --json"
)]
pub struct QueryArgs {
    /// The worker's store directory.
    #[arg(long, value_name = "DIR")]
    pub store: PathBuf,
    /// Metric name, e.g. cpu (a JSON lines field, `measurement_field` of line protocol).
    pub metric: String,
    /// Start (inclusive): now, -15m, RFC 3339 or unix seconds.
    #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
    pub from: String,
    /// End (exclusive), as --from.
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    pub to: String,
    /// Bucket width: 1m, 30s, 500ms, 1h.
    #[arg(long, default_value = "1m")]
    pub step: String,
    /// Per bucket: avg, min, max, sum, count, last or first.
    #[arg(long, default_value = "avg")]
    pub agg: String,
    /// Label matcher NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX; repeatable.
    #[arg(long = "where", value_name = "MATCHER")]
    pub matchers: Vec<String>,
    /// `{"series": [{"labels": {..}, "points": [[unix_s, value]]}]}` instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The flags of `sqd --mode worker compact`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompactArgs {
    /// The worker's store directory.
    #[arg(long, value_name = "DIR")]
    pub store: PathBuf,
    /// The worker's config file, for its ooo_window_s and retention_days (default: defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The flags of `sqd --mode leader restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The backup: a file written by `sqlite3 leader.sqlite ".backup FILE"` while the leader
    /// ran, or a copy of a stopped leader's leader.sqlite.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// TOML config file of the leader (for state_dir and cluster); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The leader's state directory (default as for `start`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Cluster id the backup must belong to (default "sqd").
    #[arg(long)]
    pub cluster: Option<String>,
}

/// The flags of `start` and `stop`: every mode's, so that a flag of another mode is explained
/// (see [`StartArgs::check_mode`]) rather than refused as unknown. Each mode's struct holds
/// what was given of its own flags.
#[derive(Debug, Clone, Default)]
pub struct StartArgs {
    /// TOML config file; flags override its values.
    pub config: Option<PathBuf>,
    pub leader: LeaderFlags,
    pub worker: WorkerFlags,
    pub client: ClientFlags,
    /// Long names of the mode flags given on the command line, in help order.
    given: Vec<String>,
}

/// Flags given that the mode does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} not valid with --mode {mode}; see `sqd --mode {mode} start --help`", flags.join(", "))]
pub struct ForeignFlags {
    pub flags: Vec<String>,
    pub mode: &'static str,
}

impl StartArgs {
    /// Refuses the flags given that `mode` does not take, naming them all.
    pub fn check_mode(&self, mode: Mode) -> Result<(), ForeignFlags> {
        let own = mode_flags(mode);
        let flags: Vec<String> = self
            .given
            .iter()
            .filter(|long| {
                !own.get_arguments()
                    .any(|a| a.get_long() == Some(long.as_str()))
            })
            .map(|long| format!("--{long}"))
            .collect();
        if flags.is_empty() {
            Ok(())
        } else {
            Err(ForeignFlags {
                flags,
                mode: mode.as_str(),
            })
        }
    }
}

/// The flags `mode` takes, as declared by its flag struct.
fn mode_flags(mode: Mode) -> Command {
    let cmd = Command::new(mode.as_str());
    match mode {
        Mode::Leader => LeaderFlags::augment_args(cmd),
        Mode::Worker => WorkerFlags::augment_args(cmd),
        Mode::Client => ClientFlags::augment_args(cmd),
    }
}

/// Every mode's flags once, each with the modes that take it; flags of every mode come last.
fn all_flags() -> Vec<(Arg, Vec<Mode>)> {
    let mut all: Vec<(Arg, Vec<Mode>)> = Vec::new();
    for mode in Mode::ALL {
        for arg in mode_flags(mode).get_arguments() {
            match all.iter_mut().find(|(a, _)| a.get_id() == arg.get_id()) {
                Some((_, modes)) => modes.push(mode),
                None => all.push((arg.clone(), vec![mode])),
            }
        }
    }
    all.sort_by_key(|(_, modes)| modes.len() == Mode::ALL.len());
    all
}

/// Leads the help of a flag that not every mode takes with those modes, e.g. `[leader]`.
fn tag_modes(arg: Arg, modes: &[Mode]) -> Arg {
    if modes.len() == Mode::ALL.len() {
        return arg;
    }
    let names: Vec<&str> = modes.iter().map(|m| m.as_str()).collect();
    let tag = format!("[{}]", names.join(", "));
    let help = arg.get_help().map(|h| format!("{tag} {h}"));
    let long_help = arg.get_long_help().map(|h| format!("{tag} {h}"));
    let arg = match help {
        Some(h) => arg.help(h),
        None => arg,
    };
    match long_help {
        Some(h) => arg.long_help(h),
        None => arg,
    }
}

impl Args for StartArgs {
    fn augment_args(cmd: Command) -> Command {
        let config = Arg::new("config")
            .long("config")
            .value_name("CONFIG")
            .action(ArgAction::Set)
            .value_parser(clap::value_parser!(PathBuf))
            .help("TOML config file; flags override its values");
        let cmd = cmd.arg(config.display_order(0));
        all_flags()
            .into_iter()
            .enumerate()
            .fold(cmd, |cmd, (i, (arg, modes))| {
                cmd.arg(tag_modes(arg, &modes).display_order(i + 1))
            })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for StartArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let given = all_flags()
            .iter()
            .filter(|(a, _)| m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
            .filter_map(|(a, _)| a.get_long().map(str::to_owned))
            .collect();
        Ok(StartArgs {
            config: m.get_one::<PathBuf>("config").cloned(),
            leader: LeaderFlags::from_arg_matches(m)?,
            worker: WorkerFlags::from_arg_matches(m)?,
            client: ClientFlags::from_arg_matches(m)?,
            given,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// The `sqd` command, with the flags of modes other than `mode` (when known) left out of
/// `start --help` and `stop --help`; they are still parsed, to be explained by
/// [`StartArgs::check_mode`].
pub(crate) fn command(mode: Option<Mode>) -> Command {
    let cmd = Cli::command();
    let Some(mode) = mode else {
        return cmd;
    };
    let own = mode_flags(mode);
    let foreign: Vec<String> = all_flags()
        .into_iter()
        .map(|(a, _)| a.get_id().to_string())
        .filter(|id| !own.get_arguments().any(|a| a.get_id() == id.as_str()))
        .collect();
    ["start", "stop"].into_iter().fold(cmd, |cmd, action| {
        cmd.mut_subcommand(action, |sub| {
            foreign
                .iter()
                .fold(sub, |sub, id| sub.mut_arg(id, |a| a.hide(true)))
        })
    })
}

/// The mode named on a command line (`--mode M` or `--mode=M`), before it is parsed, so that
/// help can show that mode's flags alone. Anything unclear is `None`: parsing reports it.
fn mode_in(args: &[OsString]) -> Option<Mode> {
    use clap::ValueEnum;
    let mut words = args.iter().skip(1).map(|a| a.to_str());
    while let Some(word) = words.next() {
        let value = match word {
            Some("--mode") => words.next()??,
            Some(w) => match w.strip_prefix("--mode=") {
                Some(v) => v,
                None => continue,
            },
            None => continue,
        };
        return Mode::from_str(value, false).ok();
    }
    None
}

/// Parses `sqd`'s command line; the error (also for `--help` and `--version`) is clap's, to be
/// shown with [`clap::Error::exit`].
pub fn try_parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let matches = command(mode_in(&args)).try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

#[cfg(test)]
mod tests;
