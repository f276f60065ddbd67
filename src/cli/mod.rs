//! Command-line interface: `serve`, `check`, `test`, `explain`, `replay`, `schema`, `dead-letters`,
//! `sla`, and the set-up commands.
//! Errors become one message for humans here, at the edge.

mod backfill;
mod init;
mod replay;
mod sla;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{Config, LogFormat, ServeArgs, ZendeskArgs};
use crate::policy::diagnostic::Severity;
use crate::policy::{schema, PolicySet};
use crate::ticket::{parse_time, EventKind, Ticket};
use crate::webhook::payload::{self, Parsed};
use crate::zendesk::model::{ApiOrganization, TicketResponse};
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
    /// Check policy files: every error as file:line:col, plus warnings.
    Check(RulesArg),
    /// Run the [[test]] cases of policy files.
    Test(RulesArg),
    /// Show the decision for one ticket, the rules that matched and why, and those that nearly did.
    Explain {
        /// A webhook body (event or trigger), or {"ticket": ..., "organization": ...} from the API.
        file: PathBuf,
        /// A policy file or a directory of them.
        #[arg(long, env = "DESKBOT_RULES", default_value = "rules")]
        rules: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Creation time to assume when the file gives none (RFC 3339).
        #[arg(long)]
        at: Option<String>,
    },
    /// Decide a corpus of tickets: per policy, the count per level and tag and the unclassified;
    /// with labels, the agreement; with --against, the tickets two versions decide differently.
    Replay(replay::Args),
    /// Decide the tickets already in Zendesk (a dry run: the replay report and what would change);
    /// --apply queues the updates for the worker, resumably.
    Backfill(Box<backfill::Args>),
    /// Print the JSON Schema of the policy format (for editor completion).
    Schema,
    /// Bring a PostgreSQL database's schema up to this version (SQLite files upgrade themselves).
    Migrate {
        /// The database: postgres://USER:PASSWORD@HOST:5432/DATABASE (`?sslmode=disable` for no TLS).
        #[arg(long, env = "DESKBOT_DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Move a deployment between databases.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Create (or update) the Zendesk webhook and trigger that send tickets to deskbot.
    Register {
        /// deskbot's public webhook URL, e.g. https://<app>.fly.dev/webhooks/zendesk.
        // The doc comment is the `--help` text, shown as written: Markdown would show in the terminal.
        #[allow(rustdoc::invalid_html_tags)]
        #[arg(long)]
        url: String,
        /// What to subscribe to: ticket events (recommended), a trigger, or both.
        #[arg(long, value_enum, default_value_t = crate::register::Mode::Events)]
        mode: crate::register::Mode,
        /// Name prefix of the webhook(s), trigger and trigger category.
        #[arg(long, default_value = "deskbot")]
        name: String,
        /// Ticket events the events webhook subscribes to (SLA clocks need all four defaults).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "created,comment_added,status_changed,priority_changed"
        )]
        events: Vec<String>,
        /// Print the requests instead of sending them.
        #[arg(long)]
        dry_run: bool,
        /// Write the signing secret to this file (mode 600) instead of printing it.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Zendesk connection.
        #[command(flatten)]
        zendesk: ZendeskArgs,
    },
    /// Check the set-up: credentials, permissions, fields, policy, webhook, database, clock.
    Doctor {
        /// deskbot's public webhook URL, to check that a webhook points at it.
        #[arg(long)]
        url: Option<String>,
        /// A policy file or a directory of them.
        #[arg(long, env = "DESKBOT_RULES", default_value = "rules")]
        rules: PathBuf,
        /// The queue's database.
        #[command(flatten)]
        db: crate::config::DatabaseArgs,
        /// Signature timestamp tolerance, in seconds.
        #[arg(long, env = "DESKBOT_SIGNATURE_TOLERANCE_SECS", default_value_t = 300)]
        signature_tolerance_secs: u64,
        /// Zendesk connection.
        #[command(flatten)]
        zendesk: ZendeskArgs,
    },
    /// List jobs that gave up after their last retry, or put them back in the queue.
    DeadLetters {
        /// The queue's database.
        #[command(flatten)]
        db: crate::config::DatabaseArgs,
        /// Requeue one dead letter by id, or `all`.
        #[arg(long, value_name = "ID|all")]
        requeue: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print deskbot's version (as --version does).
    Version,
    /// Write a starting policy for a new account: it passes `check` and `test` at once.
    Init {
        /// Where to write it (never over an existing file); `-` prints it.
        #[arg(default_value = "policy.toml")]
        path: PathBuf,
        /// The account's hours, holidays and targets.
        #[command(flatten)]
        answers: init::Answers,
    },
    /// List open SLA clocks, soonest breach first (or every clock of one ticket).
    Sla {
        /// The queue's database.
        #[command(flatten)]
        db: crate::config::DatabaseArgs,
        /// One ticket's clocks, fulfilled ones included.
        #[arg(long)]
        ticket: Option<u64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The policies a command reads: `--rules PATH`, or the path as its argument (as the other
/// commands take `--rules`, `check` and `test` accept both).
#[derive(Debug, clap::Args)]
pub struct RulesArg {
    /// A policy file or a directory of them.
    #[arg(value_name = "PATH")]
    path: Option<PathBuf>,
    /// A policy file or a directory of them.
    #[arg(long, env = "DESKBOT_RULES", default_value = "rules")]
    rules: PathBuf,
}

impl RulesArg {
    fn path(&self) -> &std::path::Path {
        self.path.as_deref().unwrap_or(&self.rules)
    }
}

/// Runs the parsed command; errors are printed for humans here, at the edge.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Check(r) => return check(r.path()),
        Command::Test(r) => return test(r.path()),
        Command::Explain {
            file,
            rules,
            json,
            at,
        } => explain(&file, &rules, json, at.as_deref()),
        Command::Register {
            url,
            mode,
            name,
            events,
            dry_run,
            secret_file,
            zendesk,
        } => {
            let plan = crate::register::Plan {
                url,
                mode,
                name,
                events,
            };
            register(plan, dry_run, secret_file, &zendesk).await
        }
        Command::Doctor {
            url,
            rules,
            db,
            signature_tolerance_secs,
            zendesk,
        } => {
            return doctor(
                url.as_deref(),
                &rules,
                &db,
                signature_tolerance_secs,
                &zendesk,
            )
            .await
        }
        Command::Backfill(args) => match backfill::run(&args).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Replay(args) => match replay::run(&args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Migrate { database_url } => migrate(&database_url).await,
        Command::Db {
            command: DbCommand::Copy { from, to },
        } => db_copy(&from, &to).await,
        Command::Schema => serde_json::to_string_pretty(&schema::schema())
            .map(|s| println!("{s}"))
            .map_err(anyhow::Error::from),
        Command::DeadLetters { db, requeue, json } => dead_letters(db, requeue, json).await,
        Command::Sla { db, ticket, json } => sla::run(&db, ticket, json).await,
        Command::Init { path, answers } => init(&path, &answers),
        Command::Version => {
            println!("deskbot {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deskbot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `deskbot db` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DbCommand {
    /// Copy a stopped deployment (every job, waiting ones included, the SLA clocks and timers,
    /// kept positions, the console's log) from its SQLite file into an empty PostgreSQL database,
    /// or from PostgreSQL back into a new SQLite file.
    Copy {
        /// Where it is now: sqlite:deskbot.db (or just its path), or postgres://….
        #[arg(long)]
        from: String,
        /// Where it goes: postgres://USER:PASSWORD@HOST:5432/DATABASE, or sqlite:PATH.
        #[arg(long, env = "DESKBOT_DATABASE_URL", hide_env_values = true)]
        to: String,
    },
}

/// A SQLite file named as `sqlite:PATH`, `sqlite://PATH` or a bare path.
fn sqlite_path(s: &str) -> &std::path::Path {
    std::path::Path::new(
        s.strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
            .unwrap_or(s),
    )
}

/// `deskbot db copy`: moves a deployment between SQLite and PostgreSQL.
async fn db_copy(from: &str, to: &str) -> anyhow::Result<()> {
    use crate::queue::{copy, postgres, store::Store};
    let (copied, note) = match (postgres::is_postgres(from), postgres::is_postgres(to)) {
        (false, true) => {
            let path = sqlite_path(from);
            if !path.is_file() {
                anyhow::bail!(
                    "--from {}: no such SQLite file (give the DESKBOT_DB of the deployment to move, e.g. sqlite:/data/deskbot.db)",
                    path.display()
                );
            }
            let store = Store::connect(to).await?;
            let copied = copy::sqlite_to_postgres(path, &store).await?;
            let note = format!(
                "copied {} into PostgreSQL; {} jobs waiting will be done by the first instance started with DESKBOT_DATABASE_URL set. Do not start deskbot on the file again: its jobs now live in PostgreSQL.",
                path.display(),
                copied.pending
            );
            (copied, note)
        }
        (true, false) => {
            let path = sqlite_path(to);
            let store = Store::connect(from).await?;
            let copied = copy::postgres_to_sqlite(&store, path).await?;
            let note = format!(
                "copied PostgreSQL into {}; {} jobs waiting will be done by deskbot started with DESKBOT_DB={} and DESKBOT_DATABASE_URL unset. Stop every instance on PostgreSQL first: jobs they take now are not in the file.",
                path.display(),
                copied.pending,
                path.display()
            );
            (copied, note)
        }
        (true, true) => anyhow::bail!(
            "--from and --to are both PostgreSQL: copy between PostgreSQL databases with pg_dump"
        ),
        (false, false) => anyhow::bail!(
            "--from and --to are both SQLite files: copy the file itself while deskbot is stopped"
        ),
    };
    for (table, rows) in &copied.tables {
        println!("{table:>14}: {rows} rows");
    }
    println!("{note}");
    Ok(())
}

/// `deskbot migrate`: applies the PostgreSQL schema versions this build knows.
async fn migrate(url: &str) -> anyhow::Result<()> {
    use crate::queue::postgres;
    if !postgres::is_postgres(url) {
        anyhow::bail!(
            "DESKBOT_DATABASE_URL must be a postgres:// URL; the SQLite file in DESKBOT_DB needs no migrate (it upgrades itself when opened)"
        );
    }
    let mut client = postgres::connect(url).await?;
    let done = postgres::migrate(&mut client).await?;
    if done.from == done.to {
        println!("PostgreSQL schema: already at version {}", done.to);
    } else {
        println!(
            "PostgreSQL schema: version {} → {} ({} applied)",
            done.from,
            done.to,
            done.to - done.from
        );
    }
    Ok(())
}

fn init(path: &std::path::Path, answers: &init::Answers) -> anyhow::Result<()> {
    let text = init::render(answers).map_err(|e| anyhow::anyhow!("{e}"))?;
    if path.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    // create_new: an existing policy is never overwritten.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e} (init never overwrites a file; choose another path)",
                path.display()
            )
        })?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    println!(
        "wrote {p}: check it with `deskbot check {p}` and `deskbot test {p}`, then run it with DESKBOT_RULES={p}\n(for editor completion: `deskbot schema > deskbot.schema.json` beside it)",
        p = path.display()
    );
    Ok(())
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

async fn dead_letters(
    db: crate::config::DatabaseArgs,
    requeue: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Pretty);
    let store = db.open(false).await.map_err(anyhow::Error::msg)?;
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

fn check(path: &std::path::Path) -> ExitCode {
    match PolicySet::load(path) {
        Ok((set, warnings)) => {
            for w in &warnings {
                println!("{w}");
            }
            for p in set.policies() {
                println!(
                    "{}: ok: policy {:?}, {} rules, {} tests",
                    p.source().display(),
                    p.name(),
                    p.rule_count(),
                    p.tests().len()
                );
            }
            let n = warnings.len();
            println!("0 errors, {n} warning{}", if n == 1 { "" } else { "s" });
            ExitCode::SUCCESS
        }
        Err(e) => {
            let errors = e
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            let warnings = e.diagnostics.len() - errors;
            eprintln!(
                "{errors} error{}, {warnings} warning{}",
                if errors == 1 { "" } else { "s" },
                if warnings == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

fn test(path: &std::path::Path) -> ExitCode {
    let set = match PolicySet::load(path) {
        Ok((set, _)) => set,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "no test ran: the policy does not load (the errors above; `deskbot check {}` lists them)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for p in set.policies() {
        let text = std::fs::read_to_string(p.source()).unwrap_or_default();
        for case in p.tests() {
            match case.run(p) {
                Ok(()) => passed += 1,
                Err(diffs) => {
                    failed += 1;
                    // Point at the test's name (or its table) as an editor jumps to it.
                    let mut at = case.path.clone();
                    at.push("name".into());
                    let d = crate::policy::diagnostic::locate(
                        Severity::Error,
                        p.source(),
                        &text,
                        &crate::policy::diagnostic::Located::new(&at, ""),
                    );
                    println!("FAIL {}:{}: {}", p.source().display(), d.line, case.name);
                    for d in diffs {
                        println!("    {d}");
                    }
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads the ticket an `explain` file describes.
fn explain_input(bytes: &[u8]) -> anyhow::Result<(Ticket, Option<&'static str>)> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    if let Some(t) = value.get("ticket") {
        let response = TicketResponse {
            ticket: serde_json::from_value(t.clone())
                .map_err(|e| anyhow::anyhow!("\"ticket\" is not a Zendesk API ticket: {e}"))?,
            users: serde_json::from_value(value.get("users").cloned().unwrap_or_default())
                .unwrap_or_default(),
        };
        let mut ticket = response.into_ticket();
        if let Some(o) = value.get("organization").filter(|o| !o.is_null()) {
            let org: ApiOrganization = serde_json::from_value(o.clone()).map_err(|e| {
                anyhow::anyhow!("\"organization\" is not a Zendesk API organization: {e}")
            })?;
            ticket.organization = Some(org.into());
        }
        let event = value
            .get("event")
            .and_then(|e| e.as_str())
            .unwrap_or(EventKind::CREATED);
        ticket.event = Some(EventKind::new(event));
        ticket.latest_comment = value
            .get("comment")
            .and_then(|c| c.as_str())
            .map(str::to_string);
        return Ok((ticket, None));
    }
    match payload::parse(bytes).map_err(|e| anyhow::anyhow!("{e}"))? {
        Parsed::Ticket(ev) => {
            let note = (ev.source == payload::Source::Trigger).then_some(
                "a trigger body carries only the ticket id: the running service reads the rest from Zendesk",
            );
            Ok((ev.snapshot, note))
        }
        Parsed::Ignored { event_type } => anyhow::bail!("{event_type} is an event deskbot ignores"),
    }
}

fn explain(
    file: &std::path::Path,
    rules: &std::path::Path,
    json: bool,
    at: Option<&str>,
) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let (mut ticket, caveat) =
        explain_input(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let now = match at {
        Some(s) => {
            parse_time(s).ok_or_else(|| anyhow::anyhow!("--at {s:?} is not an RFC 3339 time"))?
        }
        None => chrono::Utc::now(),
    };
    if ticket.created_at.is_none() {
        ticket.created_at = Some(now);
    }
    let (set, _) = PolicySet::load(rules).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(policy) = set.select(&ticket) else {
        anyhow::bail!(
            "no policy in {} applies to this ticket (no scope matches)",
            rules.display()
        );
    };
    let e = policy.evaluate(&ticket, now, true);
    let d = &e.decision;
    let timeline = sla_timeline(&bytes, policy, &ticket, d)
        .map_err(|err| anyhow::anyhow!("{}: {err}", file.display()))?;
    let rfc = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    if json {
        // One entry per passing test: rule, condition, field, and the matched text with its span.
        let evidence: Vec<serde_json::Value> = e
            .matched
            .iter()
            .flat_map(|m| {
                m.evidence.iter().map(|ev| {
                    serde_json::json!({"rule": m.rule, "condition": ev.condition,
                                       "field": ev.field, "matched": ev.matched})
                })
            })
            .collect();
        let out = serde_json::json!({
            "ticket_id": ticket.id,
            "policy": e.policy,
            "priority": d.priority,
            "level": d.level,
            "add_tags": d.add_tags,
            "remove_tags": d.remove_tags,
            "first_response_due": rfc(d.first_response_due),
            "resolution_due": rfc(d.resolution_due),
            "fields": d.fields,
            "group_id": d.group_id,
            "note": d.note,
            "matched_rules": d.matched_rules,
            "unclassified": d.unclassified,
            "evidence": evidence,
            "near_misses": e.near_misses,
            "sla_timeline": timeline,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let cal = policy.calendar();
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| match (t, cal) {
        (Some(t), Some(c)) => format!(
            "{} ({})",
            c.describe(t),
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        (Some(t), None) => t.to_rfc3339(),
        (None, _) => "no target".into(),
    };
    println!(
        "ticket {} → policy {:?} ({})",
        ticket.id,
        e.policy,
        policy.source().display()
    );
    if let Some(c) = caveat {
        println!("note: {c}");
    }
    // Why the scoped policies before the chosen one did not take the ticket.
    for other in set.policies() {
        if std::ptr::eq(other, policy) || other.in_scope(&ticket) != Some(false) {
            continue;
        }
        let scope = other.scope_text().unwrap_or_default();
        println!(
            "not {:?}: its scope ({scope}) does not hold for this ticket{}",
            other.name(),
            unset_in_scope(other.source())
        );
    }
    let was = ticket
        .priority
        .map_or("none".to_string(), |p| p.to_string());
    if d.unclassified {
        println!("unclassified: no rule gave this ticket a level");
    }
    match (d.priority, &d.level) {
        (Some(p), Some(l)) => println!("priority: {p} (level {l}; was {was})"),
        (Some(p), None) => println!("priority: {p} (was {was})"),
        (None, _) => println!("priority: unchanged ({was})"),
    }
    if !d.add_tags.is_empty() {
        println!("add tags: {}", d.add_tags.join(", "));
    }
    // Only tags the ticket has can be removed.
    let removed: Vec<&String> = d
        .remove_tags
        .iter()
        .filter(|t| ticket.tags.iter().any(|have| have.eq_ignore_ascii_case(t)))
        .collect();
    if !removed.is_empty() {
        let removed: Vec<&str> = removed.iter().map(|t| t.as_str()).collect();
        println!("remove tags: {}", removed.join(", "));
    }
    println!("first response due: {}", when(d.first_response_due));
    println!("resolution due: {}", when(d.resolution_due));
    for (id, v) in &d.fields {
        println!("field {id}: {v}");
    }
    if let Some(g) = d.group_id {
        println!("group: {g}");
    }
    if e.matched.is_empty() {
        println!("matched: no rule");
    } else {
        println!("matched:");
        for m in &e.matched {
            println!("  {}", m.rule);
            for ev in &m.evidence {
                println!("      {}", ev.plain());
            }
        }
    }
    if !e.near_misses.is_empty() {
        println!("nearly matched:");
        for n in &e.near_misses {
            println!("  {}: {}", n.rule, n.reason);
        }
    }
    if let Some(n) = &d.note {
        println!("note:\n    {}", n.replace('\n', "\n    "));
    }
    if let (Some(c), false) = (cal, timeline.is_empty()) {
        println!("SLA clocks ({}):", c.timezone().name());
        for m in &timeline {
            let metric = format!("{} #{}", m.metric, m.instance);
            println!("  {:<24} {:<18} {}", c.describe(m.at), metric, m.what);
        }
    }
    Ok(())
}

/// `; STORECONNECT_BRAND_ID is unset` when the scope line of `file` names variables that are
/// not set (the policy then compares with their empty default).
fn unset_in_scope(file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let path = ["policy".to_string(), "scope".to_string()];
    let Some(span) = crate::policy::diagnostic::span_of(&text, &path) else {
        return String::new();
    };
    let line_end = text[span.start..]
        .find('\n')
        .map_or(text.len(), |i| span.start + i);
    let unset: Vec<&str> = text[span.start..line_end]
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split(['}', ':']).next())
        .filter(|var| std::env::var(var).is_err())
        .collect();
    match unset.as_slice() {
        [] => String::new(),
        [one] => format!("; {one} is unset"),
        many => format!("; {} are unset", many.join(", ")),
    }
}

/// Each SLA clock's timeline for `explain`: from creation, through the file's `"events"` (the
/// same keys as a `[[test]]`'s), to the instants still to come. Empty when the policy runs none.
fn sla_timeline(
    bytes: &[u8],
    policy: &crate::policy::Policy,
    ticket: &Ticket,
    d: &crate::policy::Decision,
) -> Result<Vec<crate::policy::sequence::Moment>, String> {
    if policy.clock_rules().is_none() {
        return Ok(Vec::new());
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let scenario = match value.get("events") {
        Some(events) => crate::policy::sequence::Scenario::from_json(events)?,
        None => Default::default(),
    };
    scenario.timeline(policy, ticket, d)
}

fn client(zendesk: &ZendeskArgs) -> anyhow::Result<Option<crate::zendesk::ZendeskClient>> {
    let Some(cfg) = zendesk.resolve()? else {
        return Ok(None);
    };
    Ok(crate::zendesk::ZendeskClient::new(
        &cfg,
        crate::metrics::Metrics::new(),
    )?)
}

async fn register(
    plan: crate::register::Plan,
    dry_run: bool,
    secret_file: Option<PathBuf>,
    zendesk: &ZendeskArgs,
) -> anyhow::Result<()> {
    crate::register::validate_url(&plan.url).map_err(anyhow::Error::msg)?;
    if let Some(bad) = plan
        .events
        .iter()
        .find(|e| !crate::policy::KNOWN_EVENTS.contains(&e.as_str()) || e.as_str() == "updated")
    {
        anyhow::bail!("--events: {bad:?} is not a Zendesk ticket event (e.g. created, comment_added, priority_changed)");
    }
    if dry_run {
        print!("{}", crate::register::dry_run(&plan));
        return Ok(());
    }
    let Some(z) = client(zendesk)? else {
        anyhow::bail!("register needs Zendesk credentials: set ZENDESK_SUBDOMAIN with ZENDESK_EMAIL + ZENDESK_API_TOKEN (or ZENDESK_OAUTH_TOKEN) of an admin");
    };
    let done = crate::register::register(&z, &plan)
        .await
        .map_err(anyhow::Error::msg)?;
    for line in &done.lines {
        println!("{line}");
    }
    let next = crate::register::next_step(&done.secrets, secret_file.as_ref())
        .map_err(anyhow::Error::msg)?;
    println!("{next}");
    Ok(())
}

async fn doctor(
    url: Option<&str>,
    rules: &std::path::Path,
    db: &crate::config::DatabaseArgs,
    tolerance_secs: u64,
    zendesk: &ZendeskArgs,
) -> ExitCode {
    let z = match client(zendesk) {
        Ok(z) => z,
        Err(e) => {
            println!("FAIL  configuration: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let target = crate::doctor::Target {
        rules,
        db,
        url,
        tolerance_secs,
    };
    let checks = crate::doctor::run(z.as_ref(), &target).await;
    for c in &checks {
        println!("{c}");
    }
    let count = |s: crate::doctor::Status| checks.iter().filter(|c| c.status == s).count();
    let failed = count(crate::doctor::Status::Fail);
    match count(crate::doctor::Status::Skip) {
        0 => println!("{} checks, {failed} failed", checks.len()),
        n => println!("{} checks, {failed} failed, {n} skipped", checks.len()),
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
