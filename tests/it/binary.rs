//! The `deskbot` binary as an operator runs it: start-up checks, logs, signals.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_port;

const SECRET: &str = "s3cr3t-never-logged";
const TOKEN: &str = "zd-token-never-logged";

fn deskbot() -> Command {
    crate::support::deskbot_command()
}

#[test]
fn credentials_without_secrets_refuse_to_start_and_say_why() {
    let out = deskbot()
        .args(["serve"])
        .env("ZENDESK_SUBDOMAIN", "acme")
        .env("ZENDESK_EMAIL", "bot@acme.com")
        .env("ZENDESK_API_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("deskbot: DESKBOT_WEBHOOK_SECRETS is not set"),
        "{err}"
    );
    assert!(!err.contains(TOKEN));
}

#[test]
fn a_broken_policy_refuses_to_start_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.toml");
    std::fs::write(&rules, "[policy]\nname = \"x\"\n[[rule]]\nname = \"r\"\nwhen = { subjet = { has_word = \"a\" } }\n").unwrap();
    let out = deskbot()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("DESKBOT_RULES", &rules)
        .env("DESKBOT_DB", dir.path().join("d.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy did not load:\n")
            && err.contains("bad.toml:5:10: unknown field `subjet` (did you mean `subject`?)\n    when = { subjet = { has_word = \"a\" } }\n             ^"),
        "{err}"
    );
    assert_eq!(
        err.matches("unknown field").count(),
        1,
        "printed once: {err}"
    );
}

/// Runs `serve` with its logs piped (as under systemd or Docker) in `format`, with Zendesk
/// credentials when `credentials`, calls `during` with its port once it listens, stops it with
/// SIGTERM and returns what it logged; the exit must be clean.
fn serve_then_sigterm(format: &str, credentials: bool, during: impl FnOnce(u16)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = deskbot();
    if credentials {
        cmd.env("DESKBOT_WEBHOOK_SECRETS", format!("{SECRET},other"))
            .env("ZENDESK_URL", "http://127.0.0.1:9")
            .env("ZENDESK_EMAIL", "bot@acme.com")
            .env("ZENDESK_API_TOKEN", TOKEN);
    }
    let mut child = cmd
        .args(["serve"])
        .env("DESKBOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("DESKBOT_DB", dir.path().join("d.db"))
        .env("DESKBOT_LOG_FORMAT", format)
        .env("RUST_LOG", "deskbot=debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    during(port);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let stopping = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(10),
            "did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    logs
}

#[test]
fn logs_into_a_pipe_carry_no_colour_codes() {
    let logs = serve_then_sigterm("pretty", true, |_| {});
    assert!(logs.contains("listening"), "{logs}");
    assert!(
        !logs.contains('\x1b'),
        "colour codes in piped logs:\n{logs}"
    );
}

#[test]
fn sigterm_stops_cleanly_json_logs_and_no_secret_in_them() {
    let logs = serve_then_sigterm("json", true, |_| {});
    assert!(
        !logs.contains(SECRET) && !logs.contains(TOKEN),
        "a secret reached the logs:\n{logs}"
    );
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.len() >= 3, "{logs}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{line}"
        );
    }
    assert!(
        logs.contains("SIGTERM: shutting down") && logs.contains("\"message\":\"stopped\""),
        "{logs}"
    );
}

/// POSTs `body` signed with Zendesk's public test secret; returns the status code.
fn post_test_signed(port: u16, body: &str) -> u16 {
    use std::io::Write;
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let sig = deskbot::webhook::signature::sign(
        deskbot::webhook::signature::ZENDESK_TEST_SECRET,
        &ts,
        body.as_bytes(),
    );
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "POST /webhooks/zendesk HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
         X-Zendesk-Webhook-Signature: {sig}\r\nX-Zendesk-Webhook-Signature-Timestamp: {ts}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn one_log_line_per_webhook_and_the_test_secret_warning_only_when_it_let_one_in() {
    let created = crate::support::event_body("one-line-1", "created", 9, "hello");
    let ignored = r#"{"type":"zen:event-type:user.active_changed","id":"u1","subject":"zen:user:1","detail":{}}"#;
    let logs = serve_then_sigterm("json", false, |port| {
        assert_eq!(post_test_signed(port, &created), 202);
        assert_eq!(post_test_signed(port, &created), 200);
        assert_eq!(post_test_signed(port, ignored), 200);
        assert_eq!(post_test_signed(port, r#"{"hello":"world"}"#), 400);
    });
    let webhook_lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "deskbot::webhook::routes")
        .collect();
    let summary: Vec<(String, String)> = webhook_lines
        .iter()
        .map(|v| {
            (
                v["level"].as_str().unwrap_or("").to_string(),
                v["message"]
                    .as_str()
                    .unwrap_or("")
                    .split(',')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("WARN".to_string(), "webhook queued".to_string()),
            ("WARN".to_string(), "webhook duplicate".to_string()),
            ("WARN".to_string(), "webhook ignored".to_string()),
            ("INFO".to_string(), "webhook rejected".to_string()),
        ],
        "{logs}"
    );
    assert_eq!(
        webhook_lines[1]["detail"],
        "ticket 9, created: this delivery was stored before, nothing new queued"
    );
    assert_eq!(
        webhook_lines[2]["detail"],
        "zen:event-type:user.active_changed: deskbot does not act on this event type"
    );
}

/// The README's sample of what `serve` logs for the first example comes from real output: each
/// line's text up to a `…` must appear in the logs (levels and timestamps aside).
#[test]
fn the_readme_serve_log_sample_is_real_output() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let intro =
        "and the server logs the webhook and the update it would send (abbreviated):\n\n```\n";
    let start = readme.find(intro).expect("the README shows the log sample") + intro.len();
    let sample = readme[start..].split("```").next().unwrap();
    let body = std::fs::read_to_string("examples/farapp-orders-not-syncing.json").unwrap();
    let logs = serve_then_sigterm("pretty", false, |port| {
        assert_eq!(post_test_signed(port, &body), 202);
        std::thread::sleep(Duration::from_millis(500));
    });
    // The logs without line breaks inside a record, as the sample's wrapped lines read.
    for line in sample.lines() {
        let fragment = line
            .trim()
            .trim_start_matches("WARN ")
            .trim_start_matches("INFO ")
            .split('…')
            .next()
            .unwrap_or("")
            .trim();
        assert!(
            fragment.is_empty() || logs.contains(fragment),
            "README log sample line not in the real logs: {fragment:?}\n{logs}"
        );
    }
}

#[test]
fn the_local_dry_run_prints_a_console_login_url_and_production_keeps_it_off() {
    let port = std::cell::Cell::new(0);
    let logs = serve_then_sigterm("pretty", false, |p| port.set(p));
    let url = format!("http://127.0.0.1:{}/admin/login?token=", port.get());
    let at = logs
        .find(&url)
        .unwrap_or_else(|| panic!("no login URL:\n{logs}"));
    let token: String = logs[at + url.len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(token.len(), 64, "{logs}");
    assert_eq!(logs.matches("token=").count(), 1, "printed once");
    let logs = serve_then_sigterm("pretty", true, |_| {});
    assert!(
        logs.contains("the admin console is off: set DESKBOT_ADMIN_TOKEN"),
        "{logs}"
    );
    assert!(!logs.contains("token="), "{logs}");
}
