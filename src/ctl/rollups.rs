//! `sqdctl rollups`: the latest lines of the leader's roll-up log
//! (`<state-dir>/rollups.jsonl`), read on the leader's host, as a table or as the JSON lines.

use std::path::PathBuf;

use clap::Args;

use super::CtlError;
use crate::leader::rollup::merge::Line;
use crate::leader::rollup::{FILE_NAME, last_lines};

#[derive(Debug, Args)]
pub struct RollupsArgs {
    /// How many of the latest lines to print (1-100000).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    last: u64,
    /// Print the lines as the log holds them (one JSON object per line).
    #[arg(long)]
    json: bool,
    /// The leader's state directory on this host (default: the leader's default, /var/lib/sqd/leader
    /// as root, else $XDG_STATE_HOME/sqd/leader or ~/.local/state/sqd/leader).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

pub(super) fn rollups(args: &RollupsArgs) -> Result<(), CtlError> {
    let dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => crate::config::UserEnv::current()
            .state_home()
            .map(|h| h.join("leader"))
            .map_err(|e| CtlError::Usage(format!("{e}; give the leader's --state-dir")))?,
    };
    let path = dir.join(FILE_NAME);
    let n = usize::try_from(args.last).unwrap_or(usize::MAX);
    let lines = last_lines(&path, n).map_err(|e| {
        CtlError::Refused(format!(
            "cannot read {}: {e}; run sqdctl on the leader's host and give its --state-dir",
            path.display()
        ))
    })?;
    if args.json {
        lines.iter().for_each(|l| println!("{l}"));
        return Ok(());
    }
    println!(
        "{:<24} {:>8} {:>8} {:>12} {:>10} {:>7} {:>7}  missing",
        "time (UTC)", "interval", "files", "bytes", "samples", "parse", "pull"
    );
    for text in &lines {
        match serde_json::from_str::<Line>(text) {
            Ok(l) => println!("{}", row(&l)),
            Err(e) => println!("(unreadable line: {e})"),
        }
    }
    Ok(())
}

fn row(l: &Line) -> String {
    let t = &l.totals;
    let missing = if l.missing_workers.is_empty() {
        "-".to_owned()
    } else {
        l.missing_workers.join(",")
    };
    format!(
        "{:<24} {:>7}s {:>8} {:>12} {:>10} {:>7} {:>7}  {missing}",
        utc(l.ts),
        l.interval_s,
        t.files,
        t.bytes,
        t.samples,
        t.parse_errors,
        t.pull_errors
    )
}

/// `YYYY-MM-DD HH:MM:SS.mmm` of Unix seconds.
fn utc(ts: f64) -> String {
    let ms = (ts * 1000.0).round() as i64;
    let (y, m, d) = crate::clock::civil_from_days(ms.div_euclid(86_400_000));
    let of_day = ms.rem_euclid(86_400_000);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_utc() {
        assert_eq!(super::utc(1_795_305_600.25), "2026-11-22 00:00:00.250");
        assert_eq!(super::utc(86_399.0), "1970-01-01 23:59:59.000");
    }
}
