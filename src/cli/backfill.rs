//! `deskbot backfill`: decides the tickets already in Zendesk and prints the report `replay`
//! prints, plus the tickets whose update would change something. A dry run unless `--apply`,
//! which queues those tickets for the worker (same diff, `safe_update` and rate limits as a
//! webhook's), keeping its place so that an interrupted run resumes and a second run queues
//! nothing new.

use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::replay::{self, Tally};
use crate::backfill::{job, Pacing, Position, Reader, Selection};
use crate::config::ZendeskArgs;
use crate::policy::PolicySet;
use crate::queue::store::{Enqueued, NewEvent};
use crate::ticket::EventKind;

/// What `backfill` was asked.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A policy file or a directory of them.
    #[arg(long, env = "DESKBOT_RULES", default_value = "rules")]
    pub rules: PathBuf,
    /// The queue's database (`--apply` queues there and keeps its place).
    #[command(flatten)]
    pub db: crate::config::DatabaseArgs,
    /// Only tickets changed since: `30d`, `12h`, or a date (`2026-11-01`); default every ticket.
    #[arg(long)]
    pub since: Option<String>,
    /// Statuses to decide, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "new,open,pending,hold")]
    pub status: Vec<String>,
    /// Queue the updates (without it, nothing is written anywhere).
    #[arg(long)]
    pub apply: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Only tickets a Zendesk search finds, e.g. `"tags:vip created>2026-11-01"` (read through
    /// the Search Export; `type:` is implied).
    #[arg(long, value_parser = query)]
    pub query: Option<String>,
    /// Export requests per minute [default: 10 (Zendesk's limit, 30 with High Volume); 100
    /// with --query (the Search Export's)].
    #[arg(long, env = "ZENDESK_EXPORT_PER_MINUTE",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub export_per_minute: Option<u32>,
    /// Tickets per export page (at most 1,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_page: u32,
    /// Zendesk connection.
    #[command(flatten)]
    pub zendesk: ZendeskArgs,
}

/// The Incremental Ticket Export's limit (requests a minute).
const EXPORT_PER_MINUTE: u32 = 10;
/// The Search Export's limit.
const SEARCH_PER_MINUTE: u32 = 100;

/// A `--query`: not empty, and without `type:` (the Search Export refuses it: the type is a
/// parameter there).
fn query(s: &str) -> Result<String, String> {
    let q = s.trim();
    if q.is_empty() {
        return Err("the query is empty; write a Zendesk search, e.g. \"tags:vip\"".into());
    }
    if q.split_whitespace()
        .any(|w| w.to_ascii_lowercase().starts_with("type:"))
    {
        return Err("leave out type:, the backfill searches tickets only".into());
    }
    Ok(q.to_string())
}

const STATUSES: &[&str] = &["new", "open", "pending", "hold", "solved", "closed"];

/// A ticket whose update would change something.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    /// Ticket id.
    pub ticket: u64,
    /// Subject.
    pub subject: String,
    /// What the update does: `priority none → urgent`, `+tag`, `-tag`, `field 360001`, `note`.
    pub what: Vec<String>,
}

/// The backfill's own figures, beside the replay report.
#[derive(Debug, Clone, Serialize, PartialEq)]
struct Summary {
    /// Tickets the export returned.
    read: usize,
    /// Of those, in a wanted status.
    decided: usize,
    /// Tickets whose update would change something.
    changes: Vec<Change>,
    /// With `--apply`: queued now.
    queued: usize,
    /// With `--apply`: already queued by an earlier run (same ticket, same change).
    already_queued: usize,
    /// Tickets without a change to make, queued (or, in a dry run, to be queued) only so that
    /// their SLA clocks start from their history: the policy runs clocks.
    timed: usize,
    /// Whether anything was written.
    applied: bool,
}

/// `30d`, `12h`, `90m`, or a date or RFC 3339 time.
fn since(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let t = s.trim();
    let relative = |unit: char, per: i64| {
        t.strip_suffix(unit)
            .and_then(|n| n.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .map(|n| now - Duration::seconds(n.saturating_mul(per)))
    };
    relative('d', 86_400)
        .or_else(|| relative('h', 3_600))
        .or_else(|| relative('m', 60))
        .or_else(|| crate::policy::condition::time_of(t))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--since {s:?}: write a span like 30d, 12h or 90m, or a date like 2026-11-01"
            )
        })
}

/// Runs `deskbot backfill`; `Ok(false)` when it stopped before the end of the export.
pub async fn run(args: &Args) -> anyhow::Result<bool> {
    let now = Utc::now();
    for s in &args.status {
        if !STATUSES.contains(&s.as_str()) {
            anyhow::bail!(
                "--status: {}",
                crate::policy::condition::unknown("status", s, STATUSES)
            );
        }
    }
    let selection = Selection {
        since: match &args.since {
            Some(s) => since(s, now)?,
            None => DateTime::UNIX_EPOCH,
        },
        statuses: args.status.clone(),
        query: args.query.clone(),
    };
    let (set, _) = PolicySet::load(&args.rules).map_err(|e| {
        anyhow::anyhow!("the policy does not load, so backfill does not start:\n{e}")
    })?;
    let client = super::client(&args.zendesk)?.ok_or_else(|| {
        anyhow::anyhow!("backfill reads tickets from Zendesk: set ZENDESK_SUBDOMAIN (or ZENDESK_URL) and ZENDESK_EMAIL with ZENDESK_API_TOKEN (or ZENDESK_OAUTH_TOKEN)")
    })?;
    let store = if args.apply {
        Some(args.db.open(true).await.map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let place = format!("backfill {}", selection.key());
    let kept = match &store {
        Some(s) => s.cursor(&place).await?,
        None => None,
    };
    let start = match &kept {
        Some(c) => Position::resume(c),
        None => selection.start(),
    };
    if kept.is_some() {
        eprintln!("deskbot: resuming the backfill where the last run stopped");
    }
    let pacing = Pacing {
        per_minute: args.export_per_minute.unwrap_or(if args.query.is_some() {
            SEARCH_PER_MINUTE
        } else {
            EXPORT_PER_MINUTE
        }),
        per_page: args.per_page,
        ..Pacing::default()
    };
    let mut reader = Reader::new(&client, pacing, start);
    // The exports give no total: a search count estimates it (one read), for the bar and the ETA.
    let total = client.count_tickets(&selection.count_query()).await.ok();
    let progress = match total {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} tickets read, {per_sec}, {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos} tickets read, {per_sec} [{elapsed}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        ),
    };
    let eta = |read: usize| {
        total.map(|n| {
            let left = pacing.eta(n.saturating_sub(read as u64)).as_secs();
            let left = match left {
                0..60 => "under a minute".to_string(),
                s => format!("about {} min", s.div_ceil(60)),
            };
            format!("{left} left at {} requests a minute", pacing.per_minute)
        })
    };
    let mut tally = Tally::new(&set);
    let mut summary = Summary {
        read: 0,
        decided: 0,
        changes: Vec::new(),
        queued: 0,
        already_queued: 0,
        timed: 0,
        applied: args.apply,
    };
    let mut stopped = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let page = match reader.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(e) => {
                stopped = Some(e.to_string());
                break;
            }
        };
        for mut ticket in page.tickets {
            summary.read += 1;
            progress.inc(1);
            // A restarted cursor reads some tickets again: each is decided once a run.
            if !selection.wants(&ticket) || !seen.insert(ticket.id) {
                continue;
            }
            summary.decided += 1;
            ticket.event = Some(EventKind::new(EventKind::CREATED));
            let Some(policy) = set.select(&ticket) else {
                tally.unmatched();
                continue;
            };
            let d = policy.decide(&ticket, now);
            tally.add(&set, policy, &format!("#{}", ticket.id), None, &ticket, &d);
            let what = crate::update::described(&ticket, &d);
            // A policy that runs clocks needs every open ticket queued, changed or not: the
            // worker rebuilds its clocks from its audits (a ticket already timed costs nothing).
            let timed = what.is_none() && policy.clock_rules().is_some();
            summary.timed += usize::from(timed);
            if what.is_some() || timed {
                if let Some(s) = &store {
                    let queued = s
                        .enqueue(NewEvent {
                            event: job(&ticket),
                            invocation_key: None,
                            received_at: now,
                            background: true,
                        })
                        .await?;
                    match queued {
                        Enqueued::Queued(_) => summary.queued += 1,
                        Enqueued::Duplicate => summary.already_queued += 1,
                    }
                }
            }
            if let Some(what) = what {
                summary.changes.push(Change {
                    ticket: ticket.id,
                    subject: ticket.subject.clone(),
                    what,
                });
            }
        }
        let left = eta(summary.read);
        if let Some(l) = &left {
            progress.set_message(l.clone());
        }
        // Off a terminal (a log, CI), a plain line per page instead of the bar.
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!(
                "deskbot: backfill read {}{} tickets ({} decided, {} to change){}",
                summary.read,
                total.map(|n| format!(" of about {n}")).unwrap_or_default(),
                summary.decided,
                summary.changes.len(),
                left.map(|l| format!("; {l}")).unwrap_or_default()
            );
        }
        // Kept after the page's tickets are queued: a stop in between re-reads the page, and
        // the queue's keys make the second enqueue of a ticket a no-op.
        if let Some(s) = &store {
            let position = reader.position().and_then(Position::keep);
            s.set_cursor(&place, position.as_deref()).await?;
        }
    }
    progress.finish_and_clear();
    let report = tally.finish(Vec::new());
    if args.json {
        let out = serde_json::json!({"backfill": summary, "report": report, "stopped": stopped});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let heading = format!(
            "backfill: {} tickets read from Zendesk, {} in status {} decided",
            summary.read,
            summary.decided,
            selection.statuses.join("/")
        );
        replay::print(&report, &heading, None);
        println!(
            "\n{} tickets would change{}",
            summary.changes.len(),
            if summary.changes.is_empty() { "." } else { ":" }
        );
        for c in &summary.changes {
            println!("  #{} {:?}: {}", c.ticket, c.subject, c.what.join(", "));
        }
        if summary.timed > 0 {
            println!(
                "{} more open tickets {} only their SLA clocks, rebuilt from each ticket's history",
                summary.timed,
                if args.apply {
                    "are queued for"
                } else {
                    "would get"
                }
            );
        }
        if args.apply {
            println!(
                "queued {} for the worker ({} already queued by an earlier run); `deskbot serve` sends them at the account's rate",
                summary.queued, summary.already_queued
            );
        } else {
            println!("dry run: nothing was written; add --apply to queue these updates");
        }
    }
    if let Some(why) = &stopped {
        eprintln!("deskbot: the backfill stopped before the end: {why}");
    }
    Ok(stopped.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::parse_time;

    #[test]
    fn since_reads_spans_and_dates() {
        let now = parse_time("2026-11-30T12:00:00Z").unwrap();
        assert_eq!(
            since("30d", now).unwrap(),
            parse_time("2026-10-31T12:00:00Z").unwrap()
        );
        assert_eq!(
            since(" 12h", now).unwrap(),
            parse_time("2026-11-30T00:00:00Z").unwrap()
        );
        assert_eq!(
            since("90m", now).unwrap(),
            parse_time("2026-11-30T10:30:00Z").unwrap()
        );
        assert_eq!(
            since("2026-11-01", now).unwrap(),
            parse_time("2026-11-01T00:00:00Z").unwrap()
        );
        let e = since("last week", now).unwrap_err().to_string();
        assert!(e.contains("write a span like 30d"), "{e}");
        assert!(since("-3d", now).is_err());
    }
}
