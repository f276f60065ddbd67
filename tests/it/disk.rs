//! A database that cannot be written (full disk, files the filesystem refuses to write) makes the
//! webhook answer 503, which Zendesk retries, instead of a 202 for an event that was not stored;
//! once writes work again, the retries are stored, each once. (A database locked by another process
//! is `unstorable_event_gets_503_with_retry_after` in `pipeline.rs`.)

use std::process::{Command, Stdio};

use crate::support::{
    event_body, free_port, post_signed_to, spawn_app, wait_listening, Reaped, SECRET,
};

/// Sets (`+i`) or clears (`-i`) the immutable attribute: the filesystem then refuses every write to
/// the file, even through descriptors deskbot already holds, and even for root.
fn chattr(flag: &str, files: &[std::path::PathBuf]) -> bool {
    Command::new("chattr")
        .arg(flag)
        .args(files)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn a_database_the_filesystem_will_not_write_answers_503_until_it_will() {
    let app = spawn_app().await;
    let body = |id: &str| event_body(id, "created", 1, "x");
    assert_eq!(app.post_signed(body("before")).await.status(), 202);
    let files = vec![app.db.clone(), app.db.with_extension("db-wal")];
    if !chattr("+i", &files) {
        eprintln!("SKIPPED a_database_the_filesystem_will_not_write_answers_503_until_it_will: chattr +i is not available here (needs root and ext4, xfs or btrfs)");
        app.stop().await;
        return;
    }
    let mut refused = Vec::new();
    for i in 0..3 {
        let r = app.post_signed(body(&format!("refused-{i}"))).await;
        refused.push((r.status().as_u16(), r.headers().contains_key("retry-after")));
    }
    assert!(
        chattr("-i", &files),
        "could not clear the immutable attribute"
    );
    assert_eq!(refused, vec![(503, true); 3]);
    for i in 0..3 {
        let r = app.post_signed(body(&format!("refused-{i}"))).await;
        assert_eq!(r.status(), 202, "Zendesk's retry {i}");
    }
    assert_eq!(app.stored_events(), 4);
    app.stop().await;
}

/// Runs `deskbot serve` in its own mount namespace with the database on a 4 MiB tmpfs, so the test
/// can fill that disk without touching the machine's. `None` when mount namespaces are unavailable.
fn serve_on_small_disk(
    disk: &std::path::Path,
    rules: &std::path::Path,
    port: u16,
) -> Option<Reaped> {
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return None;
    }
    let deskbot = env!("CARGO_BIN_EXE_deskbot");
    // `unshare` without --fork execs, and so does the shell: the child's pid is deskbot's.
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=4m tmpfs \"$0\" && exec \"$@\"")
        .arg(disk)
        .args([deskbot, "serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DESKBOT_DB", disk.join("q.db"))
        .env("DESKBOT_RULES", rules)
        .env("DESKBOT_WEBHOOK_SECRETS", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .map(Reaped)
}

/// Runs `sh -c script` inside the mount namespace of `pid`.
fn in_namespace(pid: u32, script: &str) {
    let ok = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--", "sh", "-c", script])
        .status()
        .unwrap()
        .success();
    assert!(ok, "in deskbot's namespace: {script}");
}

#[tokio::test]
async fn a_full_disk_answers_503_until_space_returns() {
    let outside = tempfile::tempdir().unwrap();
    let disk = outside.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let rules = outside.path().join("p.toml");
    std::fs::write(&rules, crate::support::POLICY).unwrap();
    let port = free_port();
    let Some(mut child) = serve_on_small_disk(&disk, &rules, port) else {
        eprintln!("SKIPPED a_full_disk_answers_503_until_space_returns: this machine does not allow mount namespaces (unshare --mount)");
        return;
    };
    let pid = child.id();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/webhooks/zendesk");
    let post = |id: &str| post_signed_to(&http, &url, event_body(id, "created", 1, "x"));
    wait_listening(port).await;
    assert_eq!(post("before").await.unwrap().status(), 202);

    let d = disk.display();
    in_namespace(
        pid,
        &format!("dd if=/dev/zero of={d}/fill bs=4k 2>/dev/null; true"),
    );
    for i in 0..5 {
        let r = post(&format!("full-{i}")).await.unwrap();
        assert_eq!(r.status(), 503, "event {i} on a full disk");
        assert!(r.headers().contains_key("retry-after"));
    }
    in_namespace(pid, &format!("rm {d}/fill"));
    // Zendesk's retries now succeed, each event stored once.
    for i in 0..5 {
        assert_eq!(post(&format!("full-{i}")).await.unwrap().status(), 202);
    }
    let copy = outside.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    in_namespace(pid, &format!("cp {d}/q.db* {}/", copy.display()));
    child.terminate();
    let stored = crate::support::count(
        &copy.join("q.db"),
        "SELECT COUNT(*) FROM events WHERE dedup_key LIKE '%full-%' OR dedup_key LIKE '%before%'",
    );
    assert_eq!(stored, 6);
}
