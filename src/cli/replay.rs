//! `deskbot replay`: decides a corpus of tickets and reports, per policy, what it decided; with
//! labels, how often it agreed with them; with `--against`, where two versions of the rules differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::policy::{Decision, Policy, PolicySet};
use crate::ticket::Ticket;

/// What `replay` was asked.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON lines (one ticket per line, in any form `explain` reads, optionally with
    /// "expect": {"level": "..."}), or a directory of such files, one ticket each.
    pub file: PathBuf,
    /// A policy file or a directory of them.
    #[arg(long, env = "DESKBOT_RULES", default_value = "rules")]
    pub rules: PathBuf,
    /// Another version of the rules: list the tickets the two decide differently.
    #[arg(long, value_name = "PATH")]
    pub against: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when more tickets than this are unclassified: a share (`2%`) or a count (`3`).
    #[arg(long, value_name = "LIMIT")]
    pub max_unclassified: Option<Limit>,
    /// Exit 1 when fewer labelled tickets than this get their expected level (`97%`).
    #[arg(long, value_name = "SHARE")]
    pub min_agreement: Option<Limit>,
    /// Creation time to assume for tickets that give none (RFC 3339; default: now).
    #[arg(long)]
    pub at: Option<String>,
}

/// A threshold: a share of the tickets, or a number of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Percent.
    Share(f64),
    /// Tickets.
    Count(usize),
}

impl std::str::FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(v) if (0.0..=100.0).contains(&v) => Ok(Limit::Share(v)),
                _ => Err(format!("{s:?}: a share is a percentage from 0% to 100%")),
            },
            None => s
                .parse()
                .map(Limit::Count)
                .map_err(|_| format!("{s:?}: write a share like 2% or a number of tickets like 3")),
        }
    }
}

impl Limit {
    fn allows(self, n: usize, of: usize) -> bool {
        match self {
            Limit::Count(c) => n <= c,
            Limit::Share(p) => of == 0 || (n as f64) * 100.0 <= p * (of as f64) + 1e-9,
        }
    }

    fn at_least(self, n: usize, of: usize) -> bool {
        match self {
            Limit::Count(c) => n >= c,
            Limit::Share(p) => of == 0 || (n as f64) * 100.0 + 1e-9 >= p * (of as f64),
        }
    }
}

/// One ticket of the corpus.
struct Case {
    /// Where it came from: `file:line`, or the file of a directory.
    place: String,
    ticket: Ticket,
    /// The level a support lead would give it, when labelled.
    expected: Option<String>,
}

/// The level a decision gives, as the report counts it.
fn label(d: &Decision, ticket: &Ticket) -> String {
    if d.unclassified {
        return UNCLASSIFIED.to_string();
    }
    d.level
        .clone()
        .or_else(|| d.priority.or(ticket.priority).map(|p| p.to_string()))
        .unwrap_or_else(|| "none".to_string())
}

const UNCLASSIFIED: &str = "unclassified";

/// One level's row of the report.
#[derive(Debug, Serialize, Default, Clone, PartialEq)]
pub struct LevelRow {
    /// Level (or priority) name.
    pub level: String,
    /// Tickets decided at this level.
    pub decided: usize,
    /// Labelled tickets that expect it.
    pub expected: usize,
    /// Both.
    pub agreed: usize,
    /// `agreed / decided` among labelled tickets, in percent.
    pub precision: Option<f64>,
    /// `agreed / expected`, in percent.
    pub recall: Option<f64>,
}

/// A labelled ticket decided otherwise.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Disagreement {
    /// `file:line`.
    pub place: String,
    /// Ticket id.
    pub ticket: u64,
    /// Subject.
    pub subject: String,
    /// The label.
    pub expected: String,
    /// The decision.
    pub decided: String,
    /// Rules that matched.
    pub rules: Vec<String>,
}

/// What one policy decided over the corpus.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct PolicyReport {
    /// Policy name.
    pub policy: String,
    /// Its file.
    pub source: String,
    /// Tickets it decided.
    pub tickets: usize,
    /// Tickets no rule gave a level.
    pub unclassified: usize,
    /// Per level, most severe first as the policy orders them.
    pub levels: Vec<LevelRow>,
    /// Tags added, with how many tickets got each.
    pub tags: BTreeMap<String, usize>,
    /// Tickets with a label.
    pub labelled: usize,
    /// Labelled tickets decided as labelled.
    pub agreed: usize,
    /// The others.
    pub disagreements: Vec<Disagreement>,
}

/// A ticket two versions of the rules decide differently.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Difference {
    /// `file:line`.
    pub place: String,
    /// Ticket id.
    pub ticket: u64,
    /// Subject.
    pub subject: String,
    /// Level under `--rules`.
    pub before: String,
    /// Level under `--against`.
    pub after: String,
    /// Tags only `--against` adds.
    pub tags_added: Vec<String>,
    /// Tags only `--rules` adds.
    pub tags_dropped: Vec<String>,
}

/// The whole report.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Report {
    /// Tickets read.
    pub tickets: usize,
    /// Tickets no policy took (no scope matched).
    pub unmatched: usize,
    /// Per policy.
    pub policies: Vec<PolicyReport>,
    /// With `--against`: the tickets decided differently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differences: Option<Vec<Difference>>,
    /// Lines that could not be read.
    pub errors: Vec<String>,
}

/// Reads the corpus: every ticket, and a message for every line that is not one.
fn read_corpus(path: &Path) -> anyhow::Result<(Vec<Case>, Vec<String>)> {
    // (where, its text or why it could not be read)
    let mut items: Vec<(String, Result<Vec<u8>, String>)> = Vec::new();
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        if files.is_empty() {
            anyhow::bail!(
                "{} holds no .json file: give a JSON-lines file or a directory of tickets",
                path.display()
            );
        }
        for f in files {
            let read = std::fs::read(&f).map_err(|e| format!("cannot read: {e}"));
            items.push((f.display().to_string(), read));
        }
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with("//") {
                continue;
            }
            let place = format!("{}:{}", path.display(), i + 1);
            items.push((place, Ok(line.as_bytes().to_vec())));
        }
    }
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for (place, read) in items {
        let parsed = read.and_then(|bytes| {
            let (ticket, _) = super::explain_input(&bytes).map_err(|e| e.to_string())?;
            let expected = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.pointer("/expect/level")
                        .and_then(|l| l.as_str())
                        .map(str::to_string)
                })
                .map(|l| l.trim().to_lowercase());
            Ok((ticket, expected))
        });
        match parsed {
            Ok((ticket, expected)) => cases.push(Case {
                place,
                ticket,
                expected,
            }),
            Err(e) => problems.push(format!("{place}: {e}")),
        }
    }
    Ok((cases, problems))
}

/// The report being counted, one decided ticket at a time.
pub(super) struct Tally {
    reports: Vec<PolicyReport>,
    tickets: usize,
    unmatched: usize,
    differences: Option<Vec<Difference>>,
}

impl Tally {
    /// An empty count over the policies of `set`.
    pub(super) fn new(set: &PolicySet) -> Self {
        Tally {
            reports: set
                .policies()
                .iter()
                .map(|p| PolicyReport {
                    policy: p.name().to_string(),
                    source: p.source().display().to_string(),
                    tickets: 0,
                    unclassified: 0,
                    levels: Vec::new(),
                    tags: BTreeMap::new(),
                    labelled: 0,
                    agreed: 0,
                    disagreements: Vec::new(),
                })
                .collect(),
            tickets: 0,
            unmatched: 0,
            differences: None,
        }
    }

    /// A ticket no policy's scope took.
    pub(super) fn unmatched(&mut self) {
        self.tickets += 1;
        self.unmatched += 1;
    }

    /// Counts `ticket`, decided `d` by `policy` of `set`; returns the level it got.
    pub(super) fn add(
        &mut self,
        set: &PolicySet,
        policy: &Policy,
        place: &str,
        expected: Option<&str>,
        ticket: &Ticket,
        d: &Decision,
    ) -> String {
        self.tickets += 1;
        let index = set
            .policies()
            .iter()
            .position(|p| std::ptr::eq(p, policy))
            .unwrap_or(0);
        let decided = label(d, ticket);
        let r = &mut self.reports[index];
        r.tickets += 1;
        if d.unclassified {
            r.unclassified += 1;
        }
        row(&mut r.levels, &decided).decided += 1;
        for t in &d.add_tags {
            *r.tags.entry(t.clone()).or_default() += 1;
        }
        if let Some(want) = expected {
            r.labelled += 1;
            row(&mut r.levels, want).expected += 1;
            if want == decided {
                r.agreed += 1;
                row(&mut r.levels, want).agreed += 1;
            } else {
                r.disagreements.push(Disagreement {
                    place: place.to_string(),
                    ticket: ticket.id,
                    subject: ticket.subject.clone(),
                    expected: want.to_string(),
                    decided: decided.clone(),
                    rules: d.matched_rules.clone(),
                });
            }
        }
        decided
    }

    /// The report: precision and recall per level, levels in report order.
    pub(super) fn finish(self, errors: Vec<String>) -> Report {
        let mut reports = self.reports;
        for r in &mut reports {
            let labelled_decided: BTreeMap<String, usize> = r
                .disagreements
                .iter()
                .map(|x| x.decided.clone())
                .fold(BTreeMap::new(), |mut m, l| {
                    *m.entry(l).or_default() += 1;
                    m
                });
            for row in &mut r.levels {
                let wrongly = labelled_decided.get(&row.level).copied().unwrap_or(0);
                let claimed = row.agreed + wrongly;
                row.precision = (claimed > 0).then(|| pct(row.agreed, claimed));
                row.recall = (row.expected > 0).then(|| pct(row.agreed, row.expected));
            }
            r.levels.sort_by_key(|l| order(&l.level));
        }
        Report {
            tickets: self.tickets,
            unmatched: self.unmatched,
            policies: reports.into_iter().filter(|r| r.tickets > 0).collect(),
            differences: self.differences,
            errors,
        }
    }
}

/// Decides every case (and with `against`, again by the other rules); returns the report.
fn replay(
    cases: &[Case],
    set: &PolicySet,
    against: Option<&PolicySet>,
    now: DateTime<Utc>,
    errors: Vec<String>,
    progress: &indicatif::ProgressBar,
) -> Report {
    let mut tally = Tally::new(set);
    let mut differences = against.map(|_| Vec::new());
    for case in cases {
        progress.inc(1);
        let mut ticket = case.ticket.clone();
        ticket.created_at.get_or_insert(now);
        let Some(policy) = set.select(&ticket) else {
            tally.unmatched();
            continue;
        };
        let d = policy.decide(&ticket, now);
        let decided = tally.add(
            set,
            policy,
            &case.place,
            case.expected.as_deref(),
            &ticket,
            &d,
        );
        if let (Some(other), Some(diffs)) = (against, differences.as_mut()) {
            let o = other.decide(&ticket, now);
            let after = label(&o, &ticket);
            let added: Vec<String> = o
                .add_tags
                .iter()
                .filter(|t| !d.add_tags.contains(t))
                .cloned()
                .collect();
            let dropped: Vec<String> = d
                .add_tags
                .iter()
                .filter(|t| !o.add_tags.contains(t))
                .cloned()
                .collect();
            if after != decided || !added.is_empty() || !dropped.is_empty() {
                diffs.push(Difference {
                    place: case.place.clone(),
                    ticket: ticket.id,
                    subject: ticket.subject.clone(),
                    before: decided,
                    after,
                    tags_added: added,
                    tags_dropped: dropped,
                });
            }
        }
    }
    tally.differences = differences;
    tally.finish(errors)
}

fn row<'a>(rows: &'a mut Vec<LevelRow>, level: &str) -> &'a mut LevelRow {
    match rows.iter().position(|r| r.level == level) {
        Some(i) => &mut rows[i],
        None => {
            rows.push(LevelRow {
                level: level.to_string(),
                ..LevelRow::default()
            });
            let last = rows.len() - 1;
            &mut rows[last]
        }
    }
}

/// Report order: Zendesk's priorities and the usual level names, most severe first; others after.
fn order(level: &str) -> (usize, String) {
    const KNOWN: &[&str] = &[
        "critical",
        "urgent",
        "high",
        "medium",
        "normal",
        "low",
        "none",
        UNCLASSIFIED,
    ];
    (
        KNOWN
            .iter()
            .position(|k| *k == level)
            .unwrap_or(KNOWN.len() - 2),
        level.to_string(),
    )
}

fn pct(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        (n as f64 * 1000.0 / of as f64).round() / 10.0
    }
}

fn show(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |v| format!("{v:.1} %"))
}

/// The report as a table, under `heading` (what was read, from where).
pub(super) fn print(report: &Report, heading: &str, against: Option<&Path>) {
    println!("{heading}");
    if report.unmatched > 0 {
        println!(
            "{} tickets matched no policy's scope (not counted below)",
            report.unmatched
        );
    }
    for r in &report.policies {
        println!(
            "\npolicy {:?} ({}): {} tickets, {} unclassified",
            r.policy, r.source, r.tickets, r.unclassified
        );
        let labelled = r.labelled > 0;
        if labelled {
            println!(
                "  {:<14} {:>8} {:>9} {:>7} {:>10} {:>8}",
                "level", "decided", "expected", "agreed", "precision", "recall"
            );
        } else {
            println!("  {:<14} {:>8}", "level", "decided");
        }
        for l in &r.levels {
            if labelled {
                println!(
                    "  {:<14} {:>8} {:>9} {:>7} {:>10} {:>8}",
                    l.level,
                    l.decided,
                    l.expected,
                    l.agreed,
                    show(l.precision),
                    show(l.recall)
                );
            } else {
                println!("  {:<14} {:>8}", l.level, l.decided);
            }
        }
        if !r.tags.is_empty() {
            println!("  tags:");
            let mut tags: Vec<(&String, &usize)> = r.tags.iter().collect();
            tags.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (t, n) in tags {
                println!("    {n:>5}  {t}");
            }
        }
        if labelled {
            println!(
                "  agreement: {} of {} labelled tickets ({:.1} %)",
                r.agreed,
                r.labelled,
                pct(r.agreed, r.labelled)
            );
            for x in &r.disagreements {
                let rules = if x.rules.is_empty() {
                    "no rule".to_string()
                } else {
                    x.rules.join(", ")
                };
                println!(
                    "    {} #{} {:?}: expected {}, decided {} ({rules})",
                    x.place, x.ticket, x.subject, x.expected, x.decided
                );
            }
        }
    }
    if let (Some(diffs), Some(other)) = (&report.differences, against) {
        println!(
            "\n{} of {} tickets are decided differently by {}:",
            diffs.len(),
            report.tickets,
            other.display()
        );
        for d in diffs {
            let mut change = if d.before == d.after {
                d.before.clone()
            } else {
                format!("{} → {}", d.before, d.after)
            };
            for t in &d.tags_added {
                change.push_str(&format!(" +{t}"));
            }
            for t in &d.tags_dropped {
                change.push_str(&format!(" -{t}"));
            }
            println!("  {} #{} {:?}: {change}", d.place, d.ticket, d.subject);
        }
    }
    for e in &report.errors {
        println!("error: {e}");
    }
}

/// Runs `deskbot replay`; `Ok(false)` when a threshold is missed or a line could not be read.
pub fn run(args: &Args) -> anyhow::Result<bool> {
    let now = match &args.at {
        Some(s) => crate::ticket::parse_time(s)
            .ok_or_else(|| anyhow::anyhow!("--at {s:?} is not an RFC 3339 time"))?,
        None => Utc::now(),
    };
    let (set, _) = PolicySet::load(&args.rules).map_err(|e| anyhow::anyhow!("{e}"))?;
    let other = match &args.against {
        Some(p) => Some(
            PolicySet::load(p)
                .map_err(|e| anyhow::anyhow!("--against {}: {e}", p.display()))?
                .0,
        ),
        None => None,
    };
    let (cases, errors) = read_corpus(&args.file)?;
    // A bar on a terminal only, and only for runs long enough to watch.
    let progress = if cases.len() >= 2_000 {
        indicatif::ProgressBar::new(cases.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let report = replay(&cases, &set, other.as_ref(), now, errors, &progress);
    progress.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let heading = format!(
            "replay: {} tickets from {}",
            report.tickets,
            args.file.display()
        );
        print(&report, &heading, args.against.as_deref());
    }
    let mut ok = report.errors.is_empty();
    for r in &report.policies {
        if let Some(limit) = args.max_unclassified {
            if !limit.allows(r.unclassified, r.tickets) {
                eprintln!(
                    "deskbot: policy {:?}: {} of {} tickets unclassified, more than --max-unclassified allows",
                    r.policy, r.unclassified, r.tickets
                );
                ok = false;
            }
        }
        if let Some(limit) = args.min_agreement {
            if r.labelled > 0 && !limit.at_least(r.agreed, r.labelled) {
                eprintln!(
                    "deskbot: policy {:?}: {} of {} labelled tickets agree ({:.1} %), less than --min-agreement",
                    r.policy,
                    r.agreed,
                    r.labelled,
                    pct(r.agreed, r.labelled)
                );
                ok = false;
            }
        }
    }
    if !report.errors.is_empty() {
        eprintln!(
            "deskbot: {} line(s) could not be read as tickets",
            report.errors.len()
        );
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_shares_and_counts() {
        assert_eq!("2%".parse::<Limit>(), Ok(Limit::Share(2.0)));
        assert_eq!(" 3 ".parse::<Limit>(), Ok(Limit::Count(3)));
        assert!("-1%".parse::<Limit>().is_err());
        assert!("two".parse::<Limit>().is_err());
        assert!(Limit::Share(2.0).allows(2, 100));
        assert!(!Limit::Share(2.0).allows(3, 100));
        assert!(Limit::Count(0).allows(0, 5));
        assert!(!Limit::Count(0).allows(1, 5));
        assert!(Limit::Share(97.0).at_least(97, 100));
        assert!(!Limit::Share(97.0).at_least(96, 100));
    }

    #[test]
    fn percentages_round_to_a_tenth() {
        assert_eq!(pct(2, 3), 66.7);
        assert_eq!(pct(0, 0), 0.0);
        assert_eq!(pct(150, 150), 100.0);
    }
}
