//! Who may use the console: one token, exchanged at login for a session cookie (HttpOnly,
//! SameSite=Strict, Secure over HTTPS), a CSRF token per session for every POST, and failed
//! logins throttled per address and in all.
//!
//! A session id carries its expiry and a MAC keyed by the console token, so every instance
//! sharing the token (several instances on PostgreSQL, behind one address) accepts it without a
//! shared session table; its CSRF token is derived from it the same way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "deskbot_session";
/// How long a session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins an address may make in [`FAIL_WINDOW`] before it must wait.
const FAILS_PER_ADDRESS: u32 = 5;
/// Failed logins from all addresses together in [`FAIL_WINDOW`] before everyone must wait.
const FAILS_IN_ALL: u32 = 50;
/// The window failed logins are counted over.
const FAIL_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every POST form carries.
    pub csrf: String,
}

#[derive(Debug, Default)]
struct Failures {
    by_address: HashMap<IpAddr, (u32, Instant)>,
    all: (u32, Option<Instant>),
}

/// The console's gate: its token, the sessions ended here, the failed-login counts.
pub struct Gate {
    token: Secret,
    /// Ended sessions' nonces, with when they would have expired (Unix seconds).
    ended: Mutex<HashMap<String, u64>>,
    failures: Mutex<Failures>,
}

type Mac = hmac::Hmac<sha2::Sha256>;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 32 random bytes as hex, from the operating system's generator.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS generator failing is not recoverable here; an all-zero token would be guessable,
    // so fall back to a clock-and-address mix only to keep serving, never to a constant.
    if getrandom::getrandom(&mut bytes).is_err() {
        let seed = format!("{:?}{:p}", Instant::now(), &bytes);
        use sha2::Digest;
        bytes.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes()));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Wrong token.
    Wrong,
    /// Too many failures: try again after this long.
    Throttled(Duration),
}

impl Gate {
    /// A gate opened by `token`.
    pub fn new(token: Secret) -> Self {
        Gate {
            token,
            ended: Mutex::new(HashMap::new()),
            failures: Mutex::new(Failures::default()),
        }
    }

    /// Checks a login attempt from `from`; a new session's id on success.
    pub fn login(&self, candidate: &str, from: IpAddr) -> Result<String, Refused> {
        let now = Instant::now();
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.by_address
            .retain(|_, (_, first)| now.duration_since(*first) < FAIL_WINDOW);
        if f.all
            .1
            .is_some_and(|first| now.duration_since(first) >= FAIL_WINDOW)
        {
            f.all = (0, None);
        }
        let wait = |first: Instant| FAIL_WINDOW.saturating_sub(now.duration_since(first));
        if let Some((n, first)) = f.by_address.get(&from) {
            if *n >= FAILS_PER_ADDRESS {
                return Err(Refused::Throttled(wait(*first)));
            }
        }
        if let (n, Some(first)) = f.all {
            if n >= FAILS_IN_ALL {
                return Err(Refused::Throttled(wait(first)));
            }
        }
        let expected = self.token.expose().as_bytes();
        if !bool::from(candidate.trim().as_bytes().ct_eq(expected)) {
            let e = f.by_address.entry(from).or_insert((0, now));
            e.0 += 1;
            f.all = (f.all.0 + 1, f.all.1.or(Some(now)));
            return Err(Refused::Wrong);
        }
        f.by_address.remove(&from);
        drop(f);
        let nonce = &random_token()[..32];
        let expires = unix_now() + SESSION_TTL.as_secs();
        Ok(format!(
            "{nonce}.{expires}.{}",
            self.mac(&format!("session:{nonce}.{expires}"))
        ))
    }

    /// HMAC-SHA256 of `message` keyed by the console token, as hex.
    fn mac(&self, message: &str) -> String {
        use hmac::Mac as _;
        let mut mac = match Mac::new_from_slice(self.token.expose().as_bytes()) {
            Ok(m) => m,
            // HMAC takes a key of any length; this arm cannot be reached.
            Err(_) => return String::new(),
        };
        mac.update(message.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The live session with this id: made by an instance holding this token, not expired, not
    /// ended here.
    pub fn session(&self, id: &str) -> Option<Session> {
        let mut parts = id.splitn(3, '.');
        let (nonce, expires, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let expected = self.mac(&format!("session:{nonce}.{expires}"));
        if expected.is_empty() || !bool::from(mac.as_bytes().ct_eq(expected.as_bytes())) {
            return None;
        }
        if expires.parse::<u64>().ok()? <= unix_now() {
            return None;
        }
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        if ended.contains_key(nonce) {
            return None;
        }
        Some(Session {
            csrf: self.mac(&format!("csrf:{nonce}")),
        })
    }

    /// Ends a session on this instance (the browser's cookie is cleared too).
    pub fn logout(&self, id: &str) {
        let Some((nonce, rest)) = id.split_once('.') else {
            return;
        };
        let expires = rest
            .split('.')
            .next()
            .and_then(|e| e.parse::<u64>().ok())
            .unwrap_or(0);
        let now = unix_now();
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        // Only a logged-in browser can log out (a CSRF-checked POST), so this stays small; each
        // entry goes once its session would have expired anyway.
        ended.retain(|_, e| *e > now);
        ended.insert(nonce.to_string(), expires);
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Whether the browser reached deskbot over HTTPS (directly or through a proxy that says so).
pub fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value of a session (an empty id and `Max-Age=0` clear it).
pub fn session_cookie(id: &str, secure: bool) -> String {
    let age = if id.is_empty() {
        0
    } else {
        SESSION_TTL.as_secs()
    };
    format!(
        "{SESSION_COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Who sent a request: the peer address, and the forwarded-for chain behind a proxy.
pub fn source(peer: Option<SocketAddr>, headers: &HeaderMap) -> String {
    let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string());
    match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(chain) => format!("{peer} (forwarded for {})", chain.trim()),
        None => peer,
    }
}

/// The peer's address from the connection, if known.
pub fn peer_ip(peer: Option<&ConnectInfo<SocketAddr>>) -> IpAddr {
    peer.map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// Lets a request through with a live session (its [`Session`] in the extensions), checking a
/// POST's CSRF token first; else sends a page to the login form and answers anything else 401.
pub async fn require_session(
    State(gate): State<std::sync::Arc<Gate>>,
    mut request: Request,
    next: Next,
) -> Response {
    let session = cookie(request.headers(), SESSION_COOKIE).and_then(|id| gate.session(&id));
    let Some(session) = session else {
        return if request.method() == Method::GET {
            Redirect::to("/admin/login").into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "log in at /admin/login first").into_response()
        };
    };
    if request.method() == Method::POST {
        // The form is read here and handed on whole, so handlers keep their own extractors.
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
        };
        let sent = form_field(&bytes, "csrf");
        let ok = sent.is_some_and(|s| bool::from(s.as_bytes().ct_eq(session.csrf.as_bytes())));
        if !ok {
            return (
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or stale: reload the page and try again",
            )
                .into_response();
        }
        request = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// One field of a urlencoded form.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn the_right_token_opens_a_session_and_a_wrong_one_is_counted() {
        let g = Gate::new(Secret::new("0123456789abcdef"));
        assert_eq!(g.login("nope", ip(1)), Err(Refused::Wrong));
        let id = g.login(" 0123456789abcdef ", ip(1)).unwrap();
        let s = g.session(&id).unwrap();
        assert_eq!(s.csrf.len(), 64);
        assert!(g.session("other").is_none());
        g.logout(&id);
        assert!(g.session(&id).is_none());
    }

    #[test]
    fn a_session_is_good_on_every_instance_with_the_token_and_nowhere_else() {
        let a = Gate::new(Secret::new("0123456789abcdef"));
        let b = Gate::new(Secret::new("0123456789abcdef"));
        let other = Gate::new(Secret::new("fedcba9876543210"));
        let id = a.login("0123456789abcdef", ip(1)).unwrap();
        assert_eq!(b.session(&id).unwrap().csrf, a.session(&id).unwrap().csrf);
        assert!(other.session(&id).is_none());
        // A later expiry written into the id breaks its MAC.
        let (nonce, rest) = id.split_once('.').unwrap();
        let (expires, mac) = rest.split_once('.').unwrap();
        let later = format!("{nonce}.{}.{mac}", expires.parse::<u64>().unwrap() + 3600);
        assert!(b.session(&later).is_none());
        // Expired: a correctly signed id from the past.
        let past = format!("{nonce}.1000");
        let signed = format!("{past}.{}", a.mac(&format!("session:{past}")));
        assert!(a.session(&signed).is_none());
    }

    #[test]
    fn five_failures_from_an_address_lock_it_out_even_with_the_right_token() {
        let g = Gate::new(Secret::new("0123456789abcdef"));
        for _ in 0..FAILS_PER_ADDRESS {
            assert_eq!(g.login("guess", ip(2)), Err(Refused::Wrong));
        }
        assert!(matches!(
            g.login("0123456789abcdef", ip(2)),
            Err(Refused::Throttled(d)) if d > Duration::from_secs(14 * 60)
        ));
        // Another address is not locked out by them.
        assert!(g.login("0123456789abcdef", ip(3)).is_ok());
    }

    #[test]
    fn many_failures_from_many_addresses_lock_out_everyone() {
        let g = Gate::new(Secret::new("0123456789abcdef"));
        for n in 0..FAILS_IN_ALL {
            assert_eq!(g.login("guess", ip(n as u8)), Err(Refused::Wrong));
        }
        assert!(matches!(
            g.login("0123456789abcdef", ip(200)),
            Err(Refused::Throttled(_))
        ));
    }

    #[test]
    fn cookies_are_read_from_every_header_and_written_strict() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; deskbot_session=abc".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(
            session_cookie("abc", true),
            "deskbot_session=abc; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
        );
        assert!(session_cookie("", false).contains("Max-Age=0"));
        assert!(!session_cookie("abc", false).contains("Secure"));
    }
}
