//! `sqdctl`: parse the command line and run it against the leader.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = sqd::ctl::Cli::parse();
    if let Err(e) = sqd::ctl::run(cli).await {
        eprintln!("sqdctl: error: {e}");
        std::process::exit(e.exit_code());
    }
}
