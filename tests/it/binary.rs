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

/// Runs `serve` with its logs piped (as under systemd or Docker) in `format`, stops it with
/// SIGTERM once it listens, and returns what it logged; the exit must be clean.
fn serve_then_sigterm(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = deskbot()
        .args(["serve"])
        .env("DESKBOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("DESKBOT_DB", dir.path().join("d.db"))
        .env("DESKBOT_WEBHOOK_SECRETS", format!("{SECRET},other"))
        .env("ZENDESK_URL", "http://127.0.0.1:9")
        .env("ZENDESK_EMAIL", "bot@acme.com")
        .env("ZENDESK_API_TOKEN", TOKEN)
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
    let logs = serve_then_sigterm("pretty");
    assert!(logs.contains("listening"), "{logs}");
    assert!(
        !logs.contains('\x1b'),
        "colour codes in piped logs:\n{logs}"
    );
}

#[test]
fn sigterm_stops_cleanly_json_logs_and_no_secret_in_them() {
    let logs = serve_then_sigterm("json");
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
