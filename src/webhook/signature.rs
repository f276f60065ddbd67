//! Zendesk webhook signatures: `base64(HMAC-SHA256(secret, timestamp ‖ raw body))`.
//!
//! The secret is used as its UTF-8 bytes (not base64-decoded), the timestamp header exactly as
//! received, the body before any parsing. Comparison is constant-time (`Mac::verify_slice`).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-zendesk-webhook-signature";
/// Header carrying the timestamp that was signed.
pub const TIMESTAMP_HEADER: &str = "x-zendesk-webhook-signature-timestamp";
/// The fixed secret Zendesk signs "Test webhook" requests with, before a webhook is saved.
pub const ZENDESK_TEST_SECRET: &str = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==";

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was refused. Every variant answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Zendesk-Webhook-Signature` header.
    #[error("missing X-Zendesk-Webhook-Signature header")]
    MissingSignature,
    /// No `X-Zendesk-Webhook-Signature-Timestamp` header.
    #[error("missing X-Zendesk-Webhook-Signature-Timestamp header")]
    MissingTimestamp,
    /// The timestamp is not an RFC 3339 instant.
    #[error("signature timestamp is not an ISO-8601 UTC time")]
    MalformedTimestamp,
    /// The timestamp is further from now than the tolerance.
    #[error("{}", stale(*skew_secs, *tolerance_secs))]
    Stale {
        /// Signed distance in seconds (positive: in the future).
        skew_secs: i64,
        /// Allowed distance.
        tolerance_secs: i64,
    },
    /// No configured secret produces this signature.
    #[error("signature does not match any configured secret")]
    Mismatch,
}

impl SignatureError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::MissingSignature | SignatureError::MissingTimestamp => {
                "missing_signature"
            }
            SignatureError::MalformedTimestamp | SignatureError::Stale { .. } => "stale_timestamp",
            SignatureError::Mismatch => "bad_signature",
        }
    }
}

/// Which secret matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// The configured secret at this index of `DESKBOT_WEBHOOK_SECRETS`.
    Configured(usize),
    /// Zendesk's fixed test secret (only when enabled).
    TestSecret,
    /// Verification is switched off (`DESKBOT_INSECURE_SKIP_VERIFY=1`).
    Skipped,
}

/// Checks signatures against several secrets at once (rotation) and a freshness window.
#[derive(Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    accept_test_secret: bool,
    skip: bool,
    tolerance: chrono::Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.secrets.len())
            .field("accept_test_secret", &self.accept_test_secret)
            .field("skip", &self.skip)
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// `signature timestamp is 25 h in the past (more than 300 s from now)`: how far, in the unit a
/// person reads, and which way.
fn stale(skew_secs: i64, tolerance_secs: i64) -> String {
    fn span(secs: i64) -> String {
        let s = secs.unsigned_abs();
        match s {
            0..=599 => format!("{s} s"),
            600..=7199 => format!("{} min", s / 60),
            7200..=172_799 => format!("{} h", s / 3600),
            _ => format!("{} days", s / 86_400),
        }
    }
    let way = if skew_secs < 0 {
        "in the past"
    } else {
        "in the future"
    };
    format!(
        "signature timestamp is {} {way} (more than {} from now): check this machine's clock, or the request is a replay",
        span(skew_secs),
        span(tolerance_secs)
    )
}

impl Verifier {
    /// A verifier for these secrets; `tolerance_secs` bounds how far the timestamp may be from now.
    pub fn new(secrets: Vec<Secret>, accept_test_secret: bool, tolerance_secs: u64) -> Self {
        Verifier {
            secrets,
            accept_test_secret,
            skip: false,
            tolerance: chrono::Duration::seconds(tolerance_secs.min(i64::MAX as u64) as i64),
        }
    }

    /// A verifier that accepts everything. Only for `DESKBOT_INSECURE_SKIP_VERIFY=1`.
    pub fn insecure_skip() -> Self {
        Verifier {
            secrets: Vec::new(),
            accept_test_secret: false,
            skip: true,
            tolerance: chrono::Duration::zero(),
        }
    }

    /// Verifies one request: the two header values (if present), the raw body, and the current time.
    pub fn verify(
        &self,
        signature: Option<&[u8]>,
        timestamp: Option<&[u8]>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Matched, SignatureError> {
        if self.skip {
            return Ok(Matched::Skipped);
        }
        let signature = signature.ok_or(SignatureError::MissingSignature)?;
        let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
        let when = std::str::from_utf8(timestamp)
            .ok()
            .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
            .ok_or(SignatureError::MalformedTimestamp)?
            .with_timezone(&Utc);
        let skew = when - now;
        if skew.abs() > self.tolerance {
            return Err(SignatureError::Stale {
                skew_secs: skew.num_seconds(),
                tolerance_secs: self.tolerance.num_seconds(),
            });
        }
        let expected = base64::engine::general_purpose::STANDARD
            .decode(trim_ascii(signature))
            .map_err(|_| SignatureError::Mismatch)?;
        for (i, secret) in self.secrets.iter().enumerate() {
            if matches(secret.expose().as_bytes(), timestamp, body, &expected) {
                return Ok(Matched::Configured(i));
            }
        }
        if self.accept_test_secret
            && matches(ZENDESK_TEST_SECRET.as_bytes(), timestamp, body, &expected)
        {
            return Ok(Matched::TestSecret);
        }
        Err(SignatureError::Mismatch)
    }
}

/// Computes the signature Zendesk would send: used by tests, examples and the fake Zendesk.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = keyed(secret.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

fn matches(key: &[u8], timestamp: &[u8], body: &[u8], expected: &[u8]) -> bool {
    let mut mac = keyed(key);
    mac.update(timestamp);
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    // Vectors from ../shared/reference/zendesk-api.md §1.4, computed with Python hmac and openssl.
    #[test]
    fn sign_matches_independent_vectors() {
        assert_eq!(
            sign(
                ZENDESK_TEST_SECRET,
                "2021-07-25T10:00:00Z",
                br#"{"say": "hello"}"#
            ),
            "gf3v0LzLRHPUnIdhbvwRDVEvzSb07/QN0GYjSNlkBT0="
        );
        assert_eq!(
            sign(ZENDESK_TEST_SECRET, "2024-01-01T00:00:00Z", b""),
            "mL9jRdcsPb1lFuwRi/04Dm7XO1H5ZtNLcOZ9GOrOsRw="
        );
    }

    #[test]
    fn tolerance_applies_both_ways() {
        let v = Verifier::new(vec![Secret::new("s")], false, 300);
        let ts = "2024-01-01T00:00:00Z";
        let sig = sign("s", ts, b"{}");
        let ok = v.verify(
            Some(sig.as_bytes()),
            Some(ts.as_bytes()),
            b"{}",
            at("2024-01-01T00:05:00Z"),
        );
        assert_eq!(ok, Ok(Matched::Configured(0)));
        let late = v.verify(
            Some(sig.as_bytes()),
            Some(ts.as_bytes()),
            b"{}",
            at("2024-01-01T00:05:01Z"),
        );
        assert_eq!(
            late,
            Err(SignatureError::Stale {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        let early = v.verify(
            Some(sig.as_bytes()),
            Some(ts.as_bytes()),
            b"{}",
            at("2023-12-31T23:54:59Z"),
        );
        assert_eq!(
            early,
            Err(SignatureError::Stale {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn stale_timestamps_say_how_far_in_words() {
        let e = |skew| {
            SignatureError::Stale {
                skew_secs: skew,
                tolerance_secs: 300,
            }
            .to_string()
        };
        assert_eq!(e(-91_214), "signature timestamp is 25 h in the past (more than 300 s from now): check this machine's clock, or the request is a replay");
        assert_eq!(e(301), "signature timestamp is 301 s in the future (more than 300 s from now): check this machine's clock, or the request is a replay");
        assert!(e(-400_000).starts_with("signature timestamp is 4 days in the past"));
    }

    #[test]
    fn garbage_signature_is_a_mismatch_not_a_panic() {
        let v = Verifier::new(vec![Secret::new("s")], false, 300);
        let ts = "2024-01-01T00:00:00Z";
        let now = at(ts);
        for sig in [&b"%%%"[..], b"", b"\xff\xfe", b"AAAA"] {
            assert_eq!(
                v.verify(Some(sig), Some(ts.as_bytes()), b"{}", now),
                Err(SignatureError::Mismatch)
            );
        }
        assert_eq!(
            v.verify(Some(b"AAAA"), Some(b"yesterday"), b"{}", now),
            Err(SignatureError::MalformedTimestamp)
        );
    }
}
