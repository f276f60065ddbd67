//! Notifications: a rule's `notify` message POSTed as `{"text": ...}` to `DESKBOT_NOTIFY_URL`
//! (Slack's incoming-webhook body; Mattermost, Rocket.Chat and Teams workflows accept it too).
//! Each message is a job in the ticket's queue, so it is retried like any other and never lost.

use std::time::Duration;

use reqwest::StatusCode;

use crate::config::Secret;

/// How long one POST may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Worth another try later (timeout, connection refused, 5xx, 429).
    #[error("the notify URL did not take the message ({0}); trying again later")]
    Transient(String),
    /// The URL refuses the message (4xx): retrying will not help.
    #[error("the notify URL refused the message ({0}): check DESKBOT_NOTIFY_URL")]
    Refused(String),
}

/// Sends notifications.
#[derive(Clone)]
pub struct Notifier {
    http: reqwest::Client,
    url: Secret,
}

impl Notifier {
    /// A notifier posting to `url`.
    pub fn new(url: Secret) -> Result<Notifier, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        Ok(Notifier { http, url })
    }

    /// POSTs `{"text": text}`.
    pub async fn send(&self, text: &str) -> Result<(), NotifyError> {
        let sent = self
            .http
            .post(self.url.expose())
            .json(&serde_json::json!({ "text": text }))
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            // reqwest's message names the URL, which is a secret: say only what kind of failure.
            Err(e) if e.is_timeout() => return Err(NotifyError::Transient("timed out".into())),
            Err(e) if e.is_connect() => {
                return Err(NotifyError::Transient("could not connect".into()))
            }
            Err(_) => return Err(NotifyError::Transient("request failed".into())),
        };
        let status = response.status();
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
                Err(NotifyError::Transient(status.to_string()))
            }
            s if s.is_server_error() => Err(NotifyError::Transient(status.to_string())),
            _ => Err(NotifyError::Refused(status.to_string())),
        }
    }
}
