//! Typed calls to the Zendesk Support API, each classified for the retry policy.
//!
//! The client does not retry by itself: the worker decides (and stores) when to try again, so a
//! retry survives a restart. Every call is counted in the metrics by endpoint and status.

use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;

use crate::config::{Auth, ZendeskConfig};
use crate::metrics::Metrics;
use crate::ticket::{Organization, Ticket};

use super::model::{
    ApiOrganization, ApiUser, AuditsPage, CommentsResponse, ExportPage, OrganizationResponse,
    OrganizationsResponse, PastChange, SearchPage, SeenComment, TicketResponse, TicketUpdate,
    TicketUpdateRequest, UsersResponse,
};
use super::ratelimit::{Kind, RateLimiter};

/// How much of an error body is kept for logs and the dead-letter list.
const ERROR_BODY_LIMIT: usize = 300;

/// A failed Zendesk call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZendeskError {
    /// Zendesk answered with a non-success status.
    #[error("Zendesk answered {status} to {endpoint}: {body}")]
    Status {
        /// Which call.
        endpoint: &'static str,
        /// HTTP status.
        status: u16,
        /// Parsed `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// Start of the response body.
        body: String,
    },
    /// The request did not get an answer (connect error, timeout, reset).
    #[error("could not reach Zendesk for {endpoint}: {message}")]
    Network {
        /// Which call.
        endpoint: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A success answer whose body is not what the API documents.
    #[error("Zendesk's answer to {endpoint} was not understood: {message}")]
    Decode {
        /// Which call.
        endpoint: &'static str,
        /// Parser message.
        message: String,
    },
}

/// What the worker should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 409: the ticket changed under us; re-read and decide again.
    Conflict,
    /// 429: wait (for `Retry-After` if given); the whole account is throttled.
    RateLimited(Option<Duration>),
    /// 500 and other 5xx, or an undecodable answer: retry with backoff (at least `Retry-After`
    /// if given); these tries count toward the limit, since the request itself may be the cause.
    Transient(Option<Duration>),
    /// Zendesk cannot be reached or says it is down (timeout, refused or dropped connection, 502,
    /// 503, 504): every call would fail alike, so the whole worker waits and no job is charged.
    Unavailable(Option<Duration>),
    /// 404: the ticket is gone; end the job quietly.
    NotFound,
    /// Any other 4xx: retrying cannot help.
    Permanent,
}

impl ZendeskError {
    /// One plain sentence saying what went wrong and how to fix it, for admin commands.
    pub fn advice(&self) -> String {
        match self {
            ZendeskError::Status { status: 401, .. } => "Zendesk refused the credentials (401): check ZENDESK_EMAIL and ZENDESK_API_TOKEN (or ZENDESK_OAUTH_TOKEN), and that token access is on in Admin Center > Apps and integrations > APIs.".into(),
            ZendeskError::Status { status: 403, .. } => "The Zendesk user may not do this (403): webhooks, triggers and fields need an admin, so use an admin's e-mail and API token.".into(),
            ZendeskError::Status { status: 404, endpoint, .. } => format!("Zendesk has no such resource for {endpoint} (404): check ZENDESK_SUBDOMAIN (or ZENDESK_URL)."),
            ZendeskError::Status { status: 422, endpoint, body, .. } => format!(
                "Zendesk rejected the {endpoint} request as invalid (422): {}. Fix the value it names and run the command again.",
                body.trim()
            ),
            ZendeskError::Status { status: 429, .. } => "Zendesk is rate limiting this account (429): wait a minute and run the command again.".into(),
            ZendeskError::Status { status, endpoint, .. } => format!("Zendesk answered {status} to {endpoint}: try again in a minute; if it persists, check status.zendesk.com."),
            // The library's chain ("error sending request for url (...): client error (Connect):
            // tcp connect error: Connection refused") ends with the cause a person can act on.
            ZendeskError::Network { message, .. } => format!(
                "Could not reach Zendesk: {}. Check ZENDESK_SUBDOMAIN (or ZENDESK_URL) and this machine's network.",
                message.rsplit(": ").next().unwrap_or(message).trim()
            ),
            ZendeskError::Decode { endpoint, .. } => format!("Zendesk's answer to {endpoint} was not what the API documents: is ZENDESK_URL pointing at Zendesk?"),
        }
    }

    /// Classifies the error for the retry policy.
    pub fn class(&self) -> ErrorClass {
        match self {
            ZendeskError::Status {
                status,
                retry_after,
                ..
            } => match *status {
                409 => ErrorClass::Conflict,
                429 => ErrorClass::RateLimited(*retry_after),
                404 => ErrorClass::NotFound,
                502..=504 => ErrorClass::Unavailable(*retry_after),
                s if s >= 500 => ErrorClass::Transient(*retry_after),
                _ => ErrorClass::Permanent,
            },
            ZendeskError::Network { .. } => ErrorClass::Unavailable(None),
            ZendeskError::Decode { .. } => ErrorClass::Transient(None),
        }
    }
}

/// A Zendesk API client for one account.
#[derive(Clone)]
pub struct ZendeskClient {
    http: reqwest::Client,
    base_url: String,
    authorization: String,
    metrics: Metrics,
    limiter: std::sync::Arc<RateLimiter>,
}

impl std::fmt::Debug for ZendeskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZendeskClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ZendeskClient {
    /// A client for `cfg`; `None` when it has no credentials.
    pub fn new(cfg: &ZendeskConfig, metrics: Metrics) -> Result<Option<Self>, reqwest::Error> {
        let Some(auth) = &cfg.auth else {
            return Ok(None);
        };
        let authorization = match auth {
            Auth::ApiToken { email, token } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{email}/token:{}", token.expose()))
            ),
            Auth::Bearer(token) => format!("Bearer {}", token.expose()),
        };
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("deskbot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(ZendeskClient {
            http,
            base_url: cfg.base_url.clone(),
            authorization,
            metrics,
            limiter: std::sync::Arc::new(RateLimiter::new(
                cfg.requests_per_window,
                cfg.updates_per_window,
                cfg.rate_window,
            )),
        }))
    }

    /// Takes every request from `budget` too, shared with other instances of deskbot.
    pub fn share_budget(&self, budget: std::sync::Arc<dyn super::ratelimit::SharedBudget>) {
        self.limiter.share(budget);
    }

    /// One page of the Incremental Ticket Export (cursor-based), with users and organizations
    /// side-loaded so a backfill costs no read per ticket: from `start_time` (Unix seconds) for
    /// the first page, from the previous page's cursor after that.
    pub async fn export_tickets(
        &self,
        from: &ExportFrom,
        per_page: u32,
    ) -> Result<ExportPage, ZendeskError> {
        let endpoint = "export_tickets";
        let position = match from {
            ExportFrom::Start(t) => ("start_time", t.to_string()),
            ExportFrom::Cursor(c) => ("cursor", c.clone()),
        };
        let url = format!("{}/api/v2/incremental/tickets/cursor.json", self.base_url);
        let request = self.http.get(url).query(&[
            position,
            ("per_page", per_page.to_string()),
            ("include", "users,organizations".to_string()),
        ]);
        let body = self.send(endpoint, Kind::Read, request).await?;
        decode(endpoint, &body.body)
    }

    /// One page of the Search Export for tickets matching `query` (Zendesk search syntax),
    /// asking for users and organizations side-loaded.
    pub async fn search_tickets(
        &self,
        query: &str,
        after: Option<&str>,
        per_page: u32,
    ) -> Result<SearchPage, ZendeskError> {
        let endpoint = "search_export";
        let url = format!("{}/api/v2/search/export.json", self.base_url);
        let mut params = vec![
            ("query", query.to_string()),
            ("filter[type]", "ticket".to_string()),
            ("page[size]", per_page.to_string()),
            ("include", "tickets(users,organizations)".to_string()),
        ];
        if let Some(a) = after {
            params.push(("page[after]", a.to_string()));
        }
        let body = self
            .send(endpoint, Kind::Read, self.http.get(url).query(&params))
            .await?;
        decode(endpoint, &body.body)
    }

    /// `GET /api/v2/search/count.json`: how many tickets a search finds (`query` includes
    /// `type:ticket`).
    pub async fn count_tickets(&self, query: &str) -> Result<u64, ZendeskError> {
        #[derive(serde::Deserialize)]
        struct Count {
            count: u64,
        }
        let endpoint = "search_count";
        let url = format!("{}/api/v2/search/count.json", self.base_url);
        let request = self.http.get(url).query(&[("query", query)]);
        let body = self.send(endpoint, Kind::Read, request).await?;
        Ok(decode::<Count>(endpoint, &body.body)?.count)
    }

    /// `GET /api/v2/users/show_many.json?ids=…` (at most 100 ids).
    pub async fn users_many(&self, ids: &[u64]) -> Result<Vec<ApiUser>, ZendeskError> {
        let endpoint = "show_many_users";
        let body = self.show_many("users", endpoint, ids).await?;
        Ok(decode::<UsersResponse>(endpoint, &body)?.users)
    }

    /// `GET /api/v2/organizations/show_many.json?ids=…` (at most 100 ids).
    pub async fn organizations_many(
        &self,
        ids: &[u64],
    ) -> Result<Vec<ApiOrganization>, ZendeskError> {
        let endpoint = "show_many_organizations";
        let body = self.show_many("organizations", endpoint, ids).await?;
        Ok(decode::<OrganizationsResponse>(endpoint, &body)?.organizations)
    }

    async fn show_many(
        &self,
        what: &str,
        endpoint: &'static str,
        ids: &[u64],
    ) -> Result<Vec<u8>, ZendeskError> {
        let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
        let url = format!("{}/api/v2/{what}/show_many.json", self.base_url);
        let request = self.http.get(url).query(&[("ids", ids.join(","))]);
        Ok(self.send(endpoint, Kind::Read, request).await?.body)
    }

    /// `GET /api/v2/tickets/{id}.json?include=users`: the ticket with its requester's e-mail.
    pub async fn show_ticket(&self, id: u64) -> Result<Ticket, ZendeskError> {
        let endpoint = "show_ticket";
        let url = format!("{}/api/v2/tickets/{id}.json?include=users", self.base_url);
        let body = self.send(endpoint, Kind::Read, self.http.get(url)).await?;
        let parsed: TicketResponse = decode(endpoint, &body.body)?;
        Ok(parsed.into_ticket())
    }

    /// `GET /api/v2/tickets/{id}/comments.json?sort_order=desc&include=users`: the latest page of
    /// comments (newest first), each with whether an agent wrote it.
    pub async fn latest_comments(&self, id: u64) -> Result<Vec<SeenComment>, ZendeskError> {
        let endpoint = "list_comments";
        let url = format!(
            "{}/api/v2/tickets/{id}/comments.json?sort_order=desc&include=users",
            self.base_url
        );
        let body = self.send(endpoint, Kind::Read, self.http.get(url)).await?;
        let parsed: CommentsResponse = decode(endpoint, &body.body)?;
        Ok(parsed.seen())
    }

    /// A ticket's past comments and status changes, from `GET /api/v2/tickets/{id}/audits.json`
    /// (cursor pages of 100, at most [`MAX_AUDIT_PAGES`]; a longer history is cut, and the
    /// ticket's current status then stands for what came after).
    pub async fn ticket_history(
        &self,
        id: u64,
        requester: Option<u64>,
    ) -> Result<Vec<PastChange>, ZendeskError> {
        let endpoint = "list_audits";
        let url = format!("{}/api/v2/tickets/{id}/audits.json", self.base_url);
        let mut changes = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_AUDIT_PAGES {
            let mut query = vec![
                ("page[size]", "100".to_string()),
                ("include", "users".to_string()),
            ];
            if let Some(a) = after.take() {
                query.push(("page[after]", a));
            }
            let request = self.http.get(&url).query(&query);
            let body = self.send(endpoint, Kind::Read, request).await?;
            let page: AuditsPage = decode(endpoint, &body.body)?;
            changes.extend(page.changes(requester));
            match page.meta.after_cursor {
                Some(c) if page.meta.has_more => after = Some(c),
                _ => break,
            }
        }
        Ok(changes)
    }

    /// `GET /api/v2/organizations/{id}.json`.
    pub async fn show_organization(&self, id: u64) -> Result<Organization, ZendeskError> {
        let endpoint = "show_organization";
        let url = format!("{}/api/v2/organizations/{id}.json", self.base_url);
        let body = self.send(endpoint, Kind::Read, self.http.get(url)).await?;
        let parsed: OrganizationResponse = decode(endpoint, &body.body)?;
        Ok(parsed.organization.into())
    }

    /// `PUT /api/v2/tickets/{id}.json` with one update.
    pub async fn update_ticket(&self, id: u64, update: &TicketUpdate) -> Result<(), ZendeskError> {
        let endpoint = "update_ticket";
        let url = format!("{}/api/v2/tickets/{id}.json", self.base_url);
        let request = TicketUpdateRequest {
            ticket: update.clone(),
        };
        self.send(
            endpoint,
            Kind::Update(id),
            self.http.put(url).json(&request),
        )
        .await
        .map(drop)
    }

    /// The rate budget in use.
    pub fn budget(&self) -> super::ratelimit::Budget {
        self.limiter.budget()
    }

    /// How long until `ticket` may be updated under Zendesk's per-ticket limit (zero: now).
    pub fn ticket_update_wait(&self, ticket: u64) -> Duration {
        self.limiter.ticket_wait(ticket)
    }

    /// An admin call: `method path` (below the base URL) with an optional JSON body. Returns the
    /// answer as JSON (null when empty) and Zendesk's clock (the `Date` header).
    pub async fn call(
        &self,
        endpoint: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(serde_json::Value, Option<DateTime<Utc>>), ZendeskError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(b) = body {
            request = request.json(b);
        }
        let reply = self.send(endpoint, Kind::Read, request).await?;
        let value = if reply.body.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Null
        } else {
            decode(endpoint, &reply.body)?
        };
        Ok((value, reply.date))
    }

    async fn send(
        &self,
        endpoint: &'static str,
        kind: Kind,
        request: reqwest::RequestBuilder,
    ) -> Result<Reply, ZendeskError> {
        self.limiter.acquire(kind).await;
        let started = Instant::now();
        let result = request
            .header(AUTHORIZATION, &self.authorization)
            .header(ACCEPT, "application/json")
            .send()
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                self.metrics.api_call(endpoint, "error", elapsed);
                return Err(ZendeskError::Network {
                    endpoint,
                    message: error_chain(&e),
                });
            }
        };
        let status = response.status();
        self.metrics.api_call(endpoint, status.as_str(), elapsed);
        self.limiter.observe(response.headers());
        let retry_after = retry_after(response.headers(), Utc::now());
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.limiter
                .paused_for(retry_after.unwrap_or(Duration::from_secs(60)));
        }
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| DateTime::parse_from_rfc2822(s).ok())
            .map(|d| d.with_timezone(&Utc));
        let body = response.bytes().await.map_err(|e| ZendeskError::Network {
            endpoint,
            message: error_chain(&e),
        })?;
        if status.is_success() {
            return Ok(Reply {
                body: body.to_vec(),
                date,
            });
        }
        Err(ZendeskError::Status {
            endpoint,
            status: status.as_u16(),
            retry_after: if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                retry_after
            } else {
                None
            },
            body: String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT)]).into_owned(),
        })
    }
}

/// A successful answer.
struct Reply {
    body: Vec<u8>,
    /// Zendesk's `Date` header.
    date: Option<DateTime<Utc>>,
}

fn decode<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    body: &[u8],
) -> Result<T, ZendeskError> {
    serde_json::from_slice(body).map_err(|e| ZendeskError::Decode {
        endpoint,
        message: e.to_string(),
    })
}

/// The most audit pages read for one ticket's history (100 audits each).
pub const MAX_AUDIT_PAGES: usize = 10;

/// Where an export page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportFrom {
    /// The first page: tickets changed at or after this Unix time.
    Start(i64),
    /// A later page: the previous page's `after_cursor`.
    Cursor(String),
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Parses `Retry-After` as delta-seconds or an HTTP date (RFC 9110 allows both).
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_both_forms() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn classes() {
        let status = |s: u16| ZendeskError::Status {
            endpoint: "x",
            status: s,
            retry_after: None,
            body: String::new(),
        };
        assert_eq!(status(409).class(), ErrorClass::Conflict);
        assert_eq!(status(429).class(), ErrorClass::RateLimited(None));
        assert_eq!(status(404).class(), ErrorClass::NotFound);
        assert_eq!(status(500).class(), ErrorClass::Transient(None));
        assert_eq!(status(503).class(), ErrorClass::Unavailable(None));
        assert_eq!(status(422).class(), ErrorClass::Permanent);
        assert_eq!(status(401).class(), ErrorClass::Permanent);
    }
}
