//! Hot reload of the policies: on SIGHUP, and when a file under `DESKBOT_RULES` changes.
//!
//! Changes are noticed by polling modification times every 2 s rather than with inotify: polling
//! works the same on bind mounts, Docker volumes and network file systems, and costs a few stat
//! calls. A policy that fails to load never replaces the running one; the error, with its
//! file:line:col, is logged and shown on /healthz until a good version loads.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::policy::{PolicyHandle, PolicySet};

/// How often files are checked for changes.
const POLL: Duration = Duration::from_secs(2);

/// What the files looked like: (path, modified, length) of each, sorted.
fn fingerprint(root: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut files = vec![root.to_path_buf()];
    if root.is_dir() {
        if let Ok(entries) = std::fs::read_dir(root) {
            files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    let mut out: Vec<_> = files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (p, modified, len)
        })
        .collect();
    out.sort();
    out
}

/// A short digest of the policy files' contents: the policy version a re-apply's jobs are keyed
/// by (the same text twice is the same version, whatever the files' times).
pub fn version(root: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for (path, _, _) in fingerprint(root) {
        if let Ok(bytes) = std::fs::read(&path) {
            hash.update(path.to_string_lossy().as_bytes());
            hash.update(&bytes);
        }
    }
    hash.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Loads the policies again and installs them, or keeps the old ones and records the error.
/// Returns the new version when one was installed.
pub fn reload(root: &Path, handle: &PolicyHandle, why: &str) -> Option<String> {
    match PolicySet::load(root) {
        Ok((set, warnings)) => {
            for w in &warnings {
                warn!("{w}");
            }
            info!(reason = why, policies = ?set.names(), rules = set.rule_count(), "policies reloaded");
            handle.reloaded(Ok(set));
            Some(version(root))
        }
        Err(e) => {
            error!(
                reason = why,
                "policy reload failed; the previous policies stay in force:\n{e}"
            );
            handle.reloaded(Err(e.to_string()));
            None
        }
    }
}

/// Watches `root` until `shutdown`, announcing each installed version on `changes` when given
/// (a version equal to the running one is not announced: nothing changed).
pub async fn watch(
    root: PathBuf,
    handle: PolicyHandle,
    shutdown: CancellationToken,
    changes: Option<tokio::sync::watch::Sender<Option<String>>>,
) {
    let mut running = version(&root);
    let mut announce = |installed: Option<String>| {
        if let (Some(v), Some(tx)) = (installed, changes.as_ref()) {
            if v != running {
                running = v.clone();
                tx.send_replace(Some(v));
            }
        }
    };
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; policies reload on file change only");
            None
        }
    };
    let mut seen = fingerprint(&root);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup => {
                seen = fingerprint(&root);
                announce(reload(&root, &handle, "SIGHUP"));
            }
            _ = tokio::time::sleep(POLL) => {
                let now = fingerprint(&root);
                if now != seen {
                    seen = now;
                    announce(reload(&root, &handle, "file changed"));
                }
            }
        }
    }
}
