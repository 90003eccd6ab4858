//! sqdctl's fleet commands: `add-clients --from FILE` (a whole fleet in one transaction) and
//! `forget-worker`, for a worker that died and never comes back.

use super::client_list::{self, ListFormat, Listed};
use super::{Admin, Cli, CtlError};
use crate::proto;

/// Forgets a dead worker: it leaves `status`, and the owners of its former clients adopt the
/// files it had claimed now instead of after `orphan_after`.
pub(super) async fn forget_worker(cli: &Cli, id: &str) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let request = proto::ForgetWorkerRequest { id: id.to_owned() };
    let resp = admin
        .client
        .forget_worker(request)
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner();
    println!(
        "forgot worker {}; {} live worker(s) adopt its claims now",
        crate::text::clip(id),
        resp.told
    );
    Ok(())
}

/// `sqdctl add-clients --from FILE`: the list is read and checked here (every problem with
/// its line, exit 2), then sent whole: the leader adds all or none in one transaction.
#[derive(Debug, clap::Args)]
pub struct AddClientsArgs {
    /// The client list: TOML ([[client]] tables), CSV (a header line naming the columns) or
    /// JSON lines; keys as add-client's flags: name, ssh, path, key, known_hosts, pattern,
    /// format, time_field, label_fields, precision. `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    from: String,
    /// The list's syntax when the file name does not say it (.toml, .csv, .jsonl).
    #[arg(long, value_enum)]
    input_format: Option<ListFormat>,
    /// Check the list here and on the leader (names already taken) without adding anything.
    #[arg(long)]
    dry_run: bool,
    /// Print where each client went as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(super) async fn add_clients(cli: &Cli, args: &AddClientsArgs) -> Result<(), CtlError> {
    let listed = read_list(args)?;
    let mut admin = Admin::connect(cli).await?;
    let request = proto::AddClientsRequest {
        clients: listed.iter().map(|l| l.spec.clone().into()).collect(),
        dry_run: args.dry_run,
    };
    let resp = admin
        .client
        .add_clients(request)
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner();
    if !resp.problems.is_empty() {
        for p in &resp.problems {
            let line = listed.get(p.index as usize).map_or(0, |l| l.line);
            eprintln!("{}:{line}: {}", args.from, p.message);
        }
        return Err(CtlError::Refused(format!(
            "the leader refused {} client(s) of {}; nothing was added",
            resp.problems.len(),
            args.from
        )));
    }
    print_added(args, listed.len(), &resp.added);
    Ok(())
}

fn read_list(args: &AddClientsArgs) -> Result<Vec<Listed>, CtlError> {
    let format = args
        .input_format
        .or_else(|| ListFormat::of_path(&args.from))
        .ok_or_else(|| {
            CtlError::Usage(format!(
                "cannot tell the syntax of {:?} from its name; say --input-format toml|csv|jsonl",
                crate::text::clip(&args.from)
            ))
        })?;
    let text = if args.from == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&args.from)
    }
    .map_err(|e| CtlError::Usage(format!("cannot read --from {:?}: {e}", args.from)))?;
    client_list::parse(&text, format).map_err(|problems| {
        for p in &problems {
            eprintln!("{}:{}: {}", args.from, p.line, p.message);
        }
        CtlError::Usage(format!(
            "{} problem(s) in {}; nothing was added",
            problems.len(),
            args.from
        ))
    })
}

fn print_added(args: &AddClientsArgs, listed: usize, added: &[proto::AddedClient]) {
    if args.json {
        let added: Vec<_> = added
            .iter()
            .map(|a| serde_json::json!({"name": a.name, "worker": a.worker, "epoch": a.epoch}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"dry_run": args.dry_run, "checked": listed, "added": added})
        );
        return;
    }
    if args.dry_run {
        println!("dry run: {listed} client(s) checked, none taken; nothing was added");
        return;
    }
    let waiting = added.iter().filter(|a| a.worker.is_empty()).count();
    let workers: std::collections::BTreeSet<&str> = added
        .iter()
        .filter(|a| !a.worker.is_empty())
        .map(|a| a.worker.as_str())
        .collect();
    println!(
        "added {} client(s) in one transaction: {} placed on {} worker(s), {waiting} waiting for a worker",
        added.len(),
        added.len() - waiting,
        workers.len()
    );
}
