//! Settings for `serve`, from flags mirrored by environment variables, validated once at start-up.
//!
//! Secrets are wrapped in [`Secret`], whose `Debug` prints `[redacted]`, so a logged config never
//! leaks them. Every validation error names the variable to fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;

/// A string that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is used, never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a command finds the deployment's store: PostgreSQL when `DESKBOT_DATABASE_URL` is set,
/// else the SQLite file in `DESKBOT_DB`.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// SQLite file of the queue (when DESKBOT_DATABASE_URL is not set).
    #[arg(long, env = "DESKBOT_DB", default_value = "deskbot.db")]
    pub db: PathBuf,
    /// PostgreSQL shared by the instances: postgres://USER:PASSWORD@HOST:5432/DATABASE.
    #[arg(long, env = "DESKBOT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// Which database, for messages (a URL without its password).
    pub fn describe(&self) -> String {
        match self.url() {
            Some(u) => match tokio_postgres::Config::from_str(u) {
                Ok(c) => format!(
                    "PostgreSQL {}/{}",
                    c.get_hosts()
                        .first()
                        .map(|h| match h {
                            tokio_postgres::config::Host::Tcp(h) => h.clone(),
                            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                        })
                        .unwrap_or_default(),
                    c.get_dbname().unwrap_or_default()
                ),
                Err(_) => "PostgreSQL".into(),
            },
            None => self.db.display().to_string(),
        }
    }

    fn url(&self) -> Option<&str> {
        self.database_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    /// Opens the store. A missing SQLite file is made only when `create` is set: a command that
    /// reads the queue must not leave an empty one behind a mistyped path.
    pub async fn open(&self, create: bool) -> Result<crate::queue::store::Store, String> {
        use crate::queue::{postgres, store::Store};
        match self.url() {
            Some(u) if postgres::is_postgres(u) => {
                Store::connect(u).await.map_err(|e| e.to_string())
            }
            Some(_) => Err("DESKBOT_DATABASE_URL must be a postgres:// URL; leave it unset to use the SQLite file in DESKBOT_DB".into()),
            None if !create && !self.db.exists() => Err(format!(
                "no database at {} (set DESKBOT_DB or --db, or DESKBOT_DATABASE_URL for PostgreSQL)",
                self.db.display()
            )),
            None => Store::open(&self.db).map_err(|e| e.to_string()),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// What `serve` does with open tickets after it loads a changed policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Reapply {
    /// Nothing: the new policy decides tickets from their next event on.
    #[default]
    Off,
    /// Re-decides every open ticket in the background and queues the updates that change something.
    Open,
}

/// Zendesk API settings shared by every command that calls Zendesk.
#[derive(Debug, Clone, Args)]
pub struct ZendeskArgs {
    /// Zendesk base URL, e.g. https://acme.zendesk.com (tests point it at a local fake).
    // The doc comment is the `--help` text, shown as written: Markdown would show in the terminal.
    #[allow(rustdoc::bare_urls)]
    #[arg(long, env = "ZENDESK_URL")]
    pub zendesk_url: Option<String>,
    /// Zendesk subdomain, used when ZENDESK_URL is not set.
    #[arg(long, env = "ZENDESK_SUBDOMAIN")]
    pub zendesk_subdomain: Option<String>,
    /// Agent e-mail for API-token auth.
    #[arg(long, env = "ZENDESK_EMAIL")]
    pub zendesk_email: Option<String>,
    /// API token (with ZENDESK_EMAIL).
    #[arg(long, env = "ZENDESK_API_TOKEN", hide_env_values = true)]
    pub zendesk_api_token: Option<String>,
    /// OAuth access token, instead of e-mail + API token.
    #[arg(long, env = "ZENDESK_OAUTH_TOKEN", hide_env_values = true)]
    pub zendesk_oauth_token: Option<String>,
}

/// Zendesk's rate limits, for `serve` (the admin commands make a handful of calls).
#[derive(Debug, Clone, Args)]
pub struct RateArgs {
    /// The account's API requests per minute (by plan: Team 200, Growth/Professional 400, Enterprise 700).
    #[arg(long, env = "ZENDESK_RATE_LIMIT_PER_MINUTE", default_value_t = DEFAULT_REQUESTS_PER_MINUTE)]
    pub zendesk_rate_limit_per_minute: u32,
    /// Ticket updates per minute (Zendesk's separate bucket: 100, 300 with High Volume).
    #[arg(long, env = "ZENDESK_TICKET_UPDATES_PER_MINUTE", default_value_t = DEFAULT_UPDATES_PER_MINUTE)]
    pub zendesk_ticket_updates_per_minute: u32,
}

/// A Team plan's API requests per minute: the safe default.
const DEFAULT_REQUESTS_PER_MINUTE: u32 = 200;
/// Zendesk's ticket-update bucket without High Volume.
const DEFAULT_UPDATES_PER_MINUTE: u32 = 100;

impl RateArgs {
    /// `z` paced at these limits.
    fn apply(&self, z: ZendeskConfig) -> Result<ZendeskConfig, ConfigError> {
        if self.zendesk_rate_limit_per_minute == 0 || self.zendesk_ticket_updates_per_minute == 0 {
            return Err(ConfigError(
                "ZENDESK_RATE_LIMIT_PER_MINUTE and ZENDESK_TICKET_UPDATES_PER_MINUTE must be at least 1".into(),
            ));
        }
        Ok(ZendeskConfig {
            requests_per_window: self.zendesk_rate_limit_per_minute,
            updates_per_window: self.zendesk_ticket_updates_per_minute,
            ..z
        })
    }
}

/// Flags and environment of `deskbot serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A policy file, or a directory of them.
    #[arg(long, env = "DESKBOT_RULES", default_value = "rules")]
    pub rules: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "DESKBOT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// SQLite file of the queue and audit log.
    #[arg(long, env = "DESKBOT_DB", default_value = "deskbot.db")]
    pub db: PathBuf,
    /// Signing secrets, comma-separated (several during rotation).
    #[arg(long, env = "DESKBOT_WEBHOOK_SECRETS", hide_env_values = true)]
    pub webhook_secrets: Option<String>,
    /// Also accept Zendesk's fixed test secret (for the "Test webhook" button while setting up).
    #[arg(long, env = "DESKBOT_ACCEPT_TEST_SECRET")]
    pub accept_test_secret: bool,
    /// Accept unsigned webhooks. Never in production.
    #[arg(long, env = "DESKBOT_INSECURE_SKIP_VERIFY")]
    pub insecure_skip_verify: bool,
    /// How far a signature timestamp may be from now, in seconds.
    #[arg(long, env = "DESKBOT_SIGNATURE_TOLERANCE_SECS", default_value_t = 300)]
    pub signature_tolerance_secs: u64,
    /// Decide and log, never write to Zendesk (default: on when no credentials are set).
    #[arg(long, env = "DESKBOT_DRY_RUN", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub dry_run: Option<bool>,
    /// Log format: pretty or json.
    #[arg(long, env = "DESKBOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Where rules' `notify` messages are POSTed as {"text": ...} (a Slack incoming webhook or alike).
    #[arg(long, env = "DESKBOT_NOTIFY_URL", hide_env_values = true)]
    pub notify_url: Option<String>,
    /// First retry delay after a failed Zendesk call, in milliseconds (doubles each try).
    #[arg(long, env = "DESKBOT_RETRY_BASE_MS", default_value_t = 2_000)]
    pub retry_base_ms: u64,
    /// Longest retry delay, in seconds.
    #[arg(long, env = "DESKBOT_RETRY_MAX_SECS", default_value_t = 600)]
    pub retry_max_secs: u64,
    /// Failed tries per job before it becomes a dead letter (Zendesk outages and 429s do not count).
    #[arg(long, env = "DESKBOT_MAX_ATTEMPTS", default_value_t = 8)]
    pub max_attempts: u32,
    /// A PostgreSQL database instead of the SQLite file (not yet usable by `serve`).
    #[arg(long, env = "DESKBOT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The admin console's login token (at least 16 characters). Unset: generated and printed
    /// in the local dry run, the console off otherwise.
    #[arg(long, env = "DESKBOT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// After a policy change, re-decide open tickets (`open`) or not (`off`).
    #[arg(long, env = "DESKBOT_REAPPLY", value_enum, default_value_t = Reapply::Off)]
    pub reapply: Reapply,
    /// Minutes without any webhook after which `serve` asks Zendesk what changed (catch-up).
    #[arg(long, env = "DESKBOT_CATCH_UP_IDLE_MINS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub catch_up_idle_mins: u64,
    /// Zendesk connection.
    #[command(flatten)]
    pub zendesk: ZendeskArgs,
    /// Zendesk's rate limits.
    #[command(flatten)]
    pub rates: RateArgs,
}

/// How deskbot authenticates to Zendesk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `email/token:TOKEN` basic auth.
    ApiToken {
        /// Agent e-mail.
        email: String,
        /// API token.
        token: Secret,
    },
    /// OAuth bearer token.
    Bearer(Secret),
}

/// A Zendesk account to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZendeskConfig {
    /// Base URL without trailing slash.
    pub base_url: String,
    /// Credentials; `None` means deskbot cannot call the API.
    pub auth: Option<Auth>,
    /// Requests deskbot may send per `rate_window`.
    pub requests_per_window: u32,
    /// Ticket updates deskbot may send per `rate_window`.
    pub updates_per_window: u32,
    /// The window of both limits: a minute (tests shorten it).
    pub rate_window: Duration,
    /// How long one API call may take before it counts as Zendesk being unreachable.
    pub request_timeout: Duration,
}

/// How webhooks are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Check signatures against these secrets (and the test secret if `accept_test_secret`).
    Secrets {
        /// Configured secrets.
        secrets: Vec<Secret>,
        /// Also accept Zendesk's test secret.
        accept_test_secret: bool,
    },
    /// Accept anything (`DESKBOT_INSECURE_SKIP_VERIFY=1`).
    Skip,
}

/// How failed Zendesk calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// First delay.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Tries before a job is dead-lettered.
    pub max_attempts: u32,
}

/// Validated settings of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Policy file or directory.
    pub rules: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// SQLite file (when `database_url` is not set).
    pub db: PathBuf,
    /// PostgreSQL (`postgres://…`): the queue lives there instead, shared by every instance.
    pub database_url: Option<Secret>,
    /// Webhook authentication.
    pub verification: Verification,
    /// Allowed timestamp skew, in seconds.
    pub signature_tolerance_secs: u64,
    /// Zendesk account; `None` when neither ZENDESK_URL nor ZENDESK_SUBDOMAIN is set.
    pub zendesk: Option<ZendeskConfig>,
    /// Never write to Zendesk.
    pub dry_run: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Retry schedule.
    pub retry: RetryConfig,
    /// Where `notify` messages go; `None`: they are logged, not sent.
    pub notify_url: Option<Secret>,
    /// After a policy change, re-decide open tickets or not.
    pub reapply: Reapply,
    /// The admin console's token, when set.
    pub admin_token: Option<Secret>,
    /// How long without a webhook before a catch-up asks Zendesk what changed.
    pub catch_up_idle: Duration,
}

/// A setting that prevents start-up. The message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ZendeskArgs {
    /// Resolves base URL and credentials; `Ok(None)` when no account is configured at all.
    pub fn resolve(&self) -> Result<Option<ZendeskConfig>, ConfigError> {
        let nonempty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let base_url = match (
            nonempty(&self.zendesk_url),
            nonempty(&self.zendesk_subdomain),
        ) {
            (Some(url), _) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(ConfigError(format!(
                        "ZENDESK_URL must start with https:// (got {url:?}); for example https://acme.zendesk.com"
                    )));
                }
                url.trim_end_matches('/').to_string()
            }
            (None, Some(sub)) => {
                if !sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(ConfigError(format!(
                        "ZENDESK_SUBDOMAIN must be the bare subdomain, like \"acme\" for acme.zendesk.com (got {sub:?})"
                    )));
                }
                format!("https://{sub}.zendesk.com")
            }
            (None, None) => {
                if self.zendesk_email.is_some()
                    || self.zendesk_api_token.is_some()
                    || self.zendesk_oauth_token.is_some()
                {
                    return Err(ConfigError(
                        "Zendesk credentials are set but not the account: set ZENDESK_SUBDOMAIN (or ZENDESK_URL)".into(),
                    ));
                }
                return Ok(None);
            }
        };
        let auth = match (
            nonempty(&self.zendesk_email),
            nonempty(&self.zendesk_api_token),
            nonempty(&self.zendesk_oauth_token),
        ) {
            (_, _, Some(oauth)) => Some(Auth::Bearer(Secret::new(oauth))),
            (Some(email), Some(token), None) => Some(Auth::ApiToken {
                email,
                token: Secret::new(token),
            }),
            (Some(_), None, None) => {
                return Err(ConfigError(
                    "ZENDESK_EMAIL is set without ZENDESK_API_TOKEN: set both, or ZENDESK_OAUTH_TOKEN instead".into(),
                ))
            }
            (None, Some(_), None) => {
                return Err(ConfigError(
                    "ZENDESK_API_TOKEN is set without ZENDESK_EMAIL: API tokens authenticate as email/token".into(),
                ))
            }
            (None, None, None) => None,
        };
        Ok(Some(ZendeskConfig {
            base_url,
            auth,
            requests_per_window: DEFAULT_REQUESTS_PER_MINUTE,
            updates_per_window: DEFAULT_UPDATES_PER_MINUTE,
            rate_window: Duration::from_secs(60),
            request_timeout: Duration::from_secs(20),
        }))
    }
}

impl Config {
    /// Validates `serve`'s arguments.
    pub fn from_args(args: ServeArgs) -> Result<Config, ConfigError> {
        let database_url = match args.database_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) if crate::queue::postgres::is_postgres(u) => Some(Secret::new(u)),
            Some(_) => {
                return Err(ConfigError(
                    "DESKBOT_DATABASE_URL must be a postgres:// URL; leave it unset to use the SQLite file in DESKBOT_DB".into(),
                ))
            }
        };
        let zendesk = args
            .zendesk
            .resolve()?
            .map(|z| args.rates.apply(z))
            .transpose()?;
        let has_credentials = zendesk.as_ref().is_some_and(|z| z.auth.is_some());
        let dry_run = match args.dry_run {
            Some(false) if !has_credentials => {
                return Err(ConfigError(
                    "DESKBOT_DRY_RUN=0 but no Zendesk credentials: set ZENDESK_SUBDOMAIN with ZENDESK_EMAIL + ZENDESK_API_TOKEN (or ZENDESK_OAUTH_TOKEN)".into(),
                ))
            }
            Some(explicit) => explicit,
            None => !has_credentials,
        };
        let secrets: Vec<Secret> = args
            .webhook_secrets
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect();
        let verification = if args.insecure_skip_verify {
            Verification::Skip
        } else if !secrets.is_empty() {
            Verification::Secrets {
                secrets,
                accept_test_secret: args.accept_test_secret,
            }
        } else if dry_run && !has_credentials {
            // A fresh clone must run with no set-up. Without credentials nothing can be written to
            // Zendesk, so accept only Zendesk's published test secret: still no unsigned request gets in.
            Verification::Secrets {
                secrets: Vec::new(),
                accept_test_secret: true,
            }
        } else {
            return Err(ConfigError(
                "DESKBOT_WEBHOOK_SECRETS is not set: copy the webhook's signing secret from Zendesk (deskbot register prints it), or set DESKBOT_INSECURE_SKIP_VERIFY=1 to accept unsigned requests".into(),
            ));
        };
        if args.max_attempts == 0 {
            return Err(ConfigError(
                "DESKBOT_MAX_ATTEMPTS must be at least 1".into(),
            ));
        }
        Ok(Config {
            rules: args.rules,
            listen: args.listen,
            db: args.db,
            database_url,
            verification,
            signature_tolerance_secs: args.signature_tolerance_secs,
            zendesk,
            dry_run,
            log_format: args.log_format,
            retry: RetryConfig {
                base: Duration::from_millis(args.retry_base_ms.max(1)),
                max: Duration::from_secs(args.retry_max_secs.max(1)),
                max_attempts: args.max_attempts,
            },
            reapply: args.reapply,
            admin_token: match args.admin_token.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(t) if t.chars().count() >= 16 => Some(Secret::new(t)),
                Some(_) => {
                    return Err(ConfigError(
                        "DESKBOT_ADMIN_TOKEN must be at least 16 characters; make one with `openssl rand -hex 32`".into(),
                    ))
                }
            },
            catch_up_idle: Duration::from_secs(args.catch_up_idle_mins.saturating_mul(60)),
            notify_url: match args.notify_url.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                    Some(Secret::new(u))
                }
                Some(_) => {
                    return Err(ConfigError(
                        "DESKBOT_NOTIFY_URL must be an http(s) URL, such as a Slack incoming-webhook URL".into(),
                    ))
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["deskbot"];
        argv.extend_from_slice(args);
        Config::from_args(Cli::parse_from(argv).serve)
    }

    #[test]
    fn a_database_url_selects_postgres_and_stays_out_of_logs() {
        let c = config(&["--database-url", "postgres://u:hunter2@127.0.0.1/db"]).unwrap();
        assert_eq!(
            c.database_url.as_ref().map(Secret::expose),
            Some("postgres://u:hunter2@127.0.0.1/db")
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = config(&["--database-url", "mysql://x"]).unwrap_err();
        assert!(e.0.contains("must be a postgres:// URL"), "{e}");
        assert_eq!(config(&["--database-url", " "]).unwrap().database_url, None);
    }

    #[test]
    fn fresh_machine_runs_dry_with_only_the_test_secret() {
        let c = config(&[]).unwrap();
        assert!(c.dry_run);
        assert_eq!(
            c.verification,
            Verification::Secrets {
                secrets: vec![],
                accept_test_secret: true
            }
        );
    }

    #[test]
    fn credentials_without_secrets_refuse_to_start() {
        let err = config(&[
            "--zendesk-subdomain",
            "acme",
            "--zendesk-email",
            "bot@acme.com",
            "--zendesk-api-token",
            "t",
        ])
        .unwrap_err();
        assert!(err.0.contains("DESKBOT_WEBHOOK_SECRETS"), "{err}");
    }

    #[test]
    fn secrets_split_and_redacted() {
        let c = config(&["--webhook-secrets", " a , b,,"]).unwrap();
        let Verification::Secrets { secrets, .. } = &c.verification else {
            panic!("expected secrets");
        };
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets[1].expose(), "b");
        assert!(!format!("{c:?}").contains("\"a\""));
        assert!(format!("{c:?}").contains("[redacted]"));
    }

    #[test]
    fn half_credentials_name_the_missing_variable() {
        let err = config(&["--zendesk-subdomain", "acme", "--zendesk-email", "x@y"]).unwrap_err();
        assert!(err.0.contains("ZENDESK_API_TOKEN"), "{err}");
        let err = config(&["--zendesk-subdomain", "acme.zendesk.com"]).unwrap_err();
        assert!(err.0.contains("ZENDESK_SUBDOMAIN"), "{err}");
    }

    #[test]
    fn notify_url_is_checked_and_redacted() {
        let c = config(&["--notify-url", "https://hooks.example/T0/B0/xyz"]).unwrap();
        assert_eq!(
            c.notify_url.as_ref().map(Secret::expose),
            Some("https://hooks.example/T0/B0/xyz")
        );
        assert!(!format!("{c:?}").contains("xyz"));
        assert_eq!(config(&["--notify-url", " "]).unwrap().notify_url, None);
        let err = config(&["--notify-url", "hooks.example/x"]).unwrap_err();
        assert_eq!(
            err.0,
            "DESKBOT_NOTIFY_URL must be an http(s) URL, such as a Slack incoming-webhook URL"
        );
    }
}
