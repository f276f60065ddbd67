//! Command-line interface: `deskbot serve`, `deskbot dead-letters`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{Config, LogFormat, ServeArgs};
use crate::queue::store::Store;
use crate::{server, telemetry};

/// Support-policy automation for Zendesk.
#[derive(Debug, Parser)]
#[command(name = "deskbot", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server and the worker.
    Serve(Box<ServeArgs>),
    /// List jobs that gave up after their last retry, or put them back in the queue.
    DeadLetters {
        /// SQLite file of the queue.
        #[arg(long, env = "DESKBOT_DB", default_value = "deskbot.db")]
        db: PathBuf,
        /// Requeue one dead letter by id, or `all`.
        #[arg(long, value_name = "ID|all")]
        requeue: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the parsed command; errors are printed for humans here, at the edge.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::DeadLetters { db, requeue, json } => dead_letters(db, requeue, json).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deskbot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let format = args.log_format;
    let cfg = Config::from_args(args)?;
    telemetry::init(format);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (DESKBOT_LISTEN): {e}", cfg.listen))?;
    server::run(cfg, listener, server::shutdown_on_signals()).await?;
    Ok(())
}

async fn dead_letters(db: PathBuf, requeue: Option<String>, json: bool) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Pretty);
    if !db.exists() {
        anyhow::bail!("no database at {} (set DESKBOT_DB or --db)", db.display());
    }
    let store = Store::open(&db)?;
    if let Some(which) = requeue {
        let id = match which.as_str() {
            "all" => None,
            n => Some(n.parse::<i64>().map_err(|_| {
                anyhow::anyhow!("--requeue takes a dead letter's id or `all`, not {n:?}")
            })?),
        };
        let n = store.requeue(id, chrono::Utc::now()).await?;
        println!("requeued {n} job(s); a running deskbot picks them up within seconds");
        return Ok(());
    }
    let dead = store.dead_letters().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&dead)?);
        return Ok(());
    }
    if dead.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    println!(
        "{:>6}  {:>10}  {:<16} {:>5}  {:<25}  last error",
        "id", "ticket", "event", "tries", "received"
    );
    for d in &dead {
        println!(
            "{:>6}  {:>10}  {:<16} {:>5}  {:<25}  {}",
            d.id,
            d.ticket_id,
            d.kind,
            d.attempts,
            d.received_at,
            d.last_error.as_deref().unwrap_or("")
        );
    }
    println!(
        "\n{} dead letter(s); `deskbot dead-letters --requeue ID|all` retries them",
        dead.len()
    );
    Ok(())
}
