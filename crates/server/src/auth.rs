//! Authentication and authorisation: bearer tokens with scopes ([`tokens`]).
//!
//! Every request goes through [`guard`], which decides by its path and method what it needs:
//!
//! | requests | need |
//! |---|---|
//! | `/admin/…` (the admin API, every admin command) | a token with scope `admin`, always; without any configured token the admin API is closed, unless `UNSAFE_OPEN_ADMIN` |
//! | `GET`/`HEAD` of `/v1/…` and `/metrics` | `read`, once a token source is configured (`TOKEN_FILE` or `TOKENS`) and not `OPEN_DATA_API` |
//! | other methods of `/v1/…` (writes) | `write`, likewise |
//! | `POST /v1/plugins`, `DELETE /v1/plugins/{id}` | `admin`, likewise (open while `/v1` is: go-mezzanine's clients register without a token) |
//! | `/v1/livez`, `/v1/readyz`, `/v1/health`, `/openapi.json`, `/admin/v1/openapi.json` | nothing (probes, and the documents: descriptions only); readyz and health show each backend only to a caller that may read |
//!
//! A token source that is configured keeps `/v1` closed even when it holds no token (an
//! operator who removes the last token must not open the API by doing so). A refused request
//! is a problem answer: 401 with `WWW-Authenticate: Bearer` (no token, or one the server does
//! not know), 403 (a known token without the scope). The caller ([`Caller`]: the token's name
//! and scope, or anonymous) is put in the request's extensions for the handlers.
//!
//! Rate limits ([`limits`]): an allowed request takes one cell of its caller's bucket before
//! any of its work is done ([`rate_limit`], called by the HTTP edge before the body is read);
//! over the limit it is a 429 with `Retry-After`, counted in `mezzanine_rate_limited_total`
//! (by API and scope) and audited like a refusal (bounded: [`refusals`]).
//!
//! Auditing: every admin request that changes something (any method but `GET`/`HEAD`) and
//! every `shards/export` (it shows the backends' URLs) is written to the catalog's audit log
//! (`admin`: method, path, status, and `by`: the token's name and the client's address),
//! and the catalog's own entries of the changes it makes record `by` too
//! ([`mezzanine_catalog::acting`]). Refusals are audited, bounded: [`refusals`].
//!
//! The token file is read again every [`crate::watched::EVERY`] when it changed; a file that
//! cannot be read or parsed keeps the last good set of tokens, and the error is logged (once
//! per change) and shown by `status`.

pub mod limits;
pub mod refusals;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::problem::Problem;
use crate::AppState;
pub use refusals::{Refusal, Refusals};
pub use tokens::{Scope, TokenEntry, TokenSet};

/// The largest token file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Who is calling, as far as the server can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A request carrying a known token.
    Token { name: Arc<str>, scope: Scope },
    /// No token, or one the server does not know, on an endpoint that needs none.
    Anonymous,
}

impl Caller {
    /// The token's name (the audit log's `by.token`).
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Token { name, .. } => Some(name),
            Caller::Anonymous => None,
        }
    }

    fn may(&self, needed: Scope) -> bool {
        matches!(self, Caller::Token { scope, .. } if scope.includes(needed))
    }
}

/// Why the token configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Read(#[from] crate::watched::ReadError),
    #[error("invalid token file {path} (TOKEN_FILE): {cause}")]
    File { path: String, cause: String },
    #[error("invalid TOKENS: {0}")]
    Env(String),
    #[error("{0}")]
    Conflict(String),
}

/// The server's tokens and its policy.
pub struct Auth {
    tokens: ArcSwap<TokenSet>,
    /// The rate limits' buckets, following `tokens`.
    limits: limits::RateLimits,
    /// A token source is configured (`TOKEN_FILE` or a non-empty `TOKENS`).
    configured: bool,
    /// `UNSAFE_OPEN_ADMIN`.
    open_admin: bool,
    /// `OPEN_DATA_API`.
    open_data: bool,
    /// The token file, and what it held at the last look.
    file: Option<crate::watched::Watched>,
    /// The tokens of `TOKENS` (fixed for the life of the process).
    from_env: Vec<TokenEntry>,
    refusals: Refusals,
    /// The writer of refusals, until [`spawn_background`] starts it.
    writer: Mutex<Option<refusals::Writer>>,
}

/// Which part of the API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    Open,
    Admin,
    Data(Scope),
}

impl Area {
    fn of(method: &Method, path: &str) -> Area {
        if matches!(
            path,
            "/v1/livez"
                | "/v1/readyz"
                | "/v1/health"
                | "/openapi.json"
                | crate::admin::openapi::DOCUMENT_PATH
        ) {
            return Area::Open;
        }
        if path == "/admin" || path.starts_with("/admin/") {
            return Area::Admin;
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Area::Data(Scope::Read)
        } else if path == "/v1/plugins" || path.starts_with("/v1/plugins/") {
            // Registering a plugin makes every node send data to its endpoint: an
            // operator's decision, as open as /v1 while /v1 needs no token.
            Area::Data(Scope::Admin)
        } else {
            Area::Data(Scope::Write)
        }
    }
}

/// What the `Authorization` header holds.
enum Presented<'a> {
    None,
    Bearer(&'a str),
    Malformed,
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return match headers.contains_key(header::AUTHORIZATION) {
            true => Presented::Malformed, // more than one
            false => Presented::None,
        };
    };
    let Ok(text) = v.to_str() else {
        return Presented::Malformed;
    };
    match text.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() || token.contains(char::is_whitespace) {
                Presented::Malformed
            } else {
                Presented::Bearer(token)
            }
        }
        _ => Presented::Malformed,
    }
}

/// A refusal, before it becomes an answer.
#[derive(Debug, PartialEq)]
struct Refused {
    status: StatusCode,
    reason: &'static str,
    token: Option<String>,
    needed: Scope,
    detail: String,
}

impl Refused {
    fn into_response(self) -> Response {
        let challenge = match (self.status, self.reason) {
            (StatusCode::FORBIDDEN, _) => format!(
                "Bearer realm=\"mezzanine\", error=\"insufficient_scope\", scope=\"{}\"",
                self.needed
            ),
            (_, "no token") => "Bearer realm=\"mezzanine\"".to_owned(),
            _ => "Bearer realm=\"mezzanine\", error=\"invalid_token\"".to_owned(),
        };
        let mut resp = Problem::new(self.status, self.detail).into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

impl Auth {
    /// The tokens of `token_file` and `tokens_env` (`TOKENS`), with the policy flags. A file
    /// that cannot be read or parsed, or a name in both, is an error (the server does not
    /// start).
    pub fn new(
        token_file: Option<PathBuf>,
        tokens_env: Option<&str>,
        open_admin: bool,
        open_data: bool,
    ) -> Result<Auth, AuthError> {
        let tokens_env = tokens_env.filter(|t| !t.trim().is_empty());
        let from_env = match tokens_env {
            Some(text) => tokens::parse_lines(text).map_err(AuthError::Env)?,
            None => Vec::new(),
        };
        let mut all = from_env.clone();
        let mut file = None;
        if let Some(path) = &token_file {
            let f = crate::watched::File::new(path, "the token file", "TOKEN_FILE", MAX_FILE_BYTES);
            let bytes = f.read()?;
            let entries = parse_file(path, &bytes)?;
            all = merge(&from_env, entries)?;
            file = Some(crate::watched::Watched::new(vec![f], vec![bytes]));
        }
        let (refusals, writer) = Refusals::new();
        let set = TokenSet::new(all);
        Ok(Auth {
            limits: limits::RateLimits::new(limits::Defaults::default(), &set),
            tokens: ArcSwap::from_pointee(set),
            configured: token_file.is_some() || tokens_env.is_some(),
            open_admin,
            open_data,
            file,
            from_env,
            refusals,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The same, with `defaults` as the server-wide rate limits (`RATE_LIMIT`,
    /// `ADMIN_RATE_LIMIT`, `ANON_RATE_LIMIT`) instead of the built-in ones.
    pub fn with_rate_limits(mut self, defaults: limits::Defaults) -> Auth {
        self.limits = limits::RateLimits::new(defaults, &self.tokens());
        self
    }

    /// The tokens now accepted.
    pub fn tokens(&self) -> arc_swap::Guard<Arc<TokenSet>> {
        self.tokens.load()
    }

    /// Whether `/v1` needs a token.
    pub fn data_needs_token(&self) -> bool {
        self.configured && !self.open_data
    }

    /// Whether `caller` may see what `read` allows (readyz's backends).
    pub fn may_read(&self, caller: Option<&Caller>) -> bool {
        !self.data_needs_token() || caller.is_some_and(|c| c.may(Scope::Read))
    }

    /// What the status reports about authentication, and its warnings.
    pub fn status(&self) -> (serde_json::Value, Vec<String>) {
        let tokens = self.tokens();
        let names: Vec<&str> = tokens.names().collect();
        let file_error = self.file.as_ref().and_then(|w| w.error());
        let mut warnings = Vec::new();
        if self.open_admin {
            warnings.push(
                "the admin API is open to anyone who reaches this port (UNSAFE_OPEN_ADMIN)"
                    .to_owned(),
            );
        }
        if let Some(e) = &file_error {
            warnings.push(format!("{e}; the last good set of tokens is in use"));
        }
        let admin = if self.open_admin {
            "open to anyone (UNSAFE_OPEN_ADMIN)"
        } else if tokens.is_empty() {
            "closed: no token is configured"
        } else {
            "a token with scope admin"
        };
        let data = if !self.configured {
            "open: no token is configured"
        } else if self.open_data {
            "open (OPEN_DATA_API)"
        } else {
            "a token with scope read (GET) or write"
        };
        let d = self.limits.defaults();
        let view = json!({
            "tokens": names,
            "rate_limits": {
                "data": d.data.to_string(),
                "admin": d.admin.to_string(),
                "anonymous": d.anonymous.to_string(),
            },
            "token_file": self.file.as_ref().map(|w| w.files()[0].path.display().to_string()),
            "token_file_error": file_error,
            "admin_api": admin,
            "data_api": data,
        });
        (view, warnings)
    }

    /// Decides about a request for `area` with `headers`.
    fn check(&self, area: Area, headers: &HeaderMap) -> Result<Caller, Refused> {
        let tokens = self.tokens();
        let identify = |token: &str| match tokens.find(token) {
            Some(e) => Caller::Token {
                name: e.name.clone(),
                scope: e.scope,
            },
            None => Caller::Anonymous,
        };
        let (needed, open) = match area {
            Area::Open => (Scope::Read, true),
            Area::Admin => (Scope::Admin, self.open_admin),
            Area::Data(scope) => (scope, !self.data_needs_token()),
        };
        let given = presented(headers);
        if open {
            // Endpoints that need no token never refuse one: a known token only names the
            // caller (go-mezzanine clients may send headers of their own).
            return Ok(match given {
                Presented::Bearer(t) => identify(t),
                _ => Caller::Anonymous,
            });
        }
        let api = if area == Area::Admin {
            "the admin API"
        } else {
            "this endpoint"
        };
        match given {
            Presented::None => Err(Refused {
                status: StatusCode::UNAUTHORIZED,
                reason: "no token",
                token: None,
                needed,
                detail: if area == Area::Admin && tokens.is_empty() {
                    "the admin API needs a bearer token with scope admin, and this server has \
                     none configured (TOKEN_FILE or TOKENS): make one with `mezzanine token \
                     create --name NAME --scopes admin` and add its line to the token file"
                        .to_owned()
                } else {
                    format!(
                        "{api} needs a bearer token with scope {needed} \
                         (Authorization: Bearer TOKEN; the admin commands take --token or \
                         MEZZANINE_TOKEN)"
                    )
                },
            }),
            Presented::Malformed => Err(Refused {
                status: StatusCode::UNAUTHORIZED,
                reason: "malformed header",
                token: None,
                needed,
                detail: "the Authorization header must be one `Bearer TOKEN`".to_owned(),
            }),
            Presented::Bearer(t) => match tokens.find(t) {
                None => Err(Refused {
                    status: StatusCode::UNAUTHORIZED,
                    reason: "unknown token",
                    token: None,
                    needed,
                    detail: "this server does not know the bearer token (a typing error, a \
                             token of another cluster, or one removed from the token file)"
                        .to_owned(),
                }),
                Some(e) if !e.scope.includes(needed) => Err(Refused {
                    status: StatusCode::FORBIDDEN,
                    reason: "insufficient scope",
                    token: Some(e.name.to_string()),
                    needed,
                    detail: format!(
                        "token {:?} has scope {}; {api} needs scope {needed}",
                        &*e.name, e.scope
                    ),
                }),
                Some(e) => Ok(Caller::Token {
                    name: e.name.clone(),
                    scope: e.scope,
                }),
            },
        }
    }

    /// Reads the token file again if it changed; a bad file keeps the current tokens. Returns
    /// whether a new set was installed.
    pub fn reload_file(&self) -> bool {
        use crate::watched::Reload;
        let Some(watched) = &self.file else {
            return false;
        };
        let path = &watched.files()[0].path;
        let mut names: Vec<String> = Vec::new();
        let reload = watched.reload(|contents| {
            let entries = parse_file(path, &contents[0]).and_then(|e| merge(&self.from_env, e))?;
            names = entries.iter().map(|e| e.name.to_string()).collect();
            let set = TokenSet::new(entries);
            self.limits.follow(&set);
            self.tokens.store(Arc::new(set));
            Ok::<_, AuthError>(())
        });
        match reload {
            Reload::Unchanged => false,
            Reload::Installed { again: false } => {
                tracing::info!(file = %path.display(), tokens = ?names, "token file reloaded");
                true
            }
            Reload::Installed { again: true } => {
                tracing::info!(file = %path.display(), tokens = ?names, "token file readable again");
                true
            }
            Reload::Kept { error, news } => {
                if news {
                    tracing::error!(
                        error = %error,
                        tokens = self.tokens().len(),
                        "the token file is not usable; keeping the last good set of tokens"
                    );
                }
                false
            }
        }
    }

    /// Looks at the token file every [`crate::watched::EVERY`], for ever.
    pub async fn watch_file(self: Arc<Self>) {
        if self.file.is_none() {
            return;
        }
        crate::watched::every(move || {
            self.reload_file();
        })
        .await
    }

    /// Logs what start-up should say about authentication (the unsafe flag loudly).
    pub fn log_start(&self) {
        let tokens = self.tokens();
        if self.open_admin {
            tracing::warn!(
                "UNSAFE_OPEN_ADMIN: the admin API is open to anyone who reaches this port: \
                 they can add backends, move every shard to them and drop the originals; use \
                 tokens (TOKEN_FILE) instead"
            );
        }
        match (self.configured, tokens.len()) {
            (false, _) if !self.open_admin => tracing::warn!(
                "no token is configured (TOKEN_FILE or TOKENS): the admin API answers 401 to \
                 every request, and /v1 is open to anyone"
            ),
            (false, _) => tracing::warn!("no token is configured: /v1 is open to anyone"),
            (true, n) => tracing::info!(
                tokens = n,
                data_api = if self.open_data {
                    "open (OPEN_DATA_API)"
                } else {
                    "tokens required"
                },
                "authentication by bearer tokens"
            ),
        }
    }
}

/// Starts the token file's watcher and the refusals' writer of `st`.
pub(crate) fn spawn_background(st: &Arc<AppState>) {
    st.spawn(tokio::spawn(st.auth.clone().watch_file()));
    let writer = st
        .auth
        .writer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(w) = writer {
        st.spawn(tokio::spawn(w.run(st.catalog.clone())));
    }
}

fn parse_file(path: &std::path::Path, bytes: &[u8]) -> Result<Vec<TokenEntry>, AuthError> {
    let shown = path.display().to_string();
    let text = std::str::from_utf8(bytes).map_err(|_| AuthError::File {
        path: shown.clone(),
        cause: "not UTF-8 text".to_owned(),
    })?;
    tokens::parse_lines(text).map_err(|cause| AuthError::File { path: shown, cause })
}

/// The tokens of `TOKENS` and of the file together (a name or token in both is an error).
fn merge(env: &[TokenEntry], file: Vec<TokenEntry>) -> Result<Vec<TokenEntry>, AuthError> {
    let mut all = env.to_vec();
    for e in file {
        tokens::add(&mut all, e)
            .map_err(|why| AuthError::Conflict(format!("TOKENS and TOKEN_FILE together: {why}")))?;
    }
    Ok(all)
}

/// The client's IP address, or `unknown` (a server started without the connection loop of
/// [`crate::http::serve`]).
fn client_ip(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Whether a request of the admin API is written to the audit log: every change, and the
/// export (which shows the backends' URLs).
fn audited(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD) || path.ends_with("/shards/export")
}

/// The rate limit of a request (see [`limits`]): `Some` 429 when its caller is over its limit.
/// A request that will be refused (401, 403) or that needs nothing (the probes, the
/// documents) is not counted: [`guard`] answers it.
/// The caller it identified is kept in the request for [`guard`] (a token is looked up once).
pub(crate) fn rate_limit(auth: &Auth, req: &mut Request) -> Option<Response> {
    let area = Area::of(req.method(), req.uri().path());
    if area == Area::Open {
        return None;
    }
    let caller = auth.check(area, req.headers()).ok()?;
    req.extensions_mut().insert(Identified(caller.clone()));
    let path = req.uri().path();
    let api = if area == Area::Admin {
        limits::Api::Admin
    } else {
        limits::Api::Data
    };
    // The client's address only where it counts: an anonymous caller's bucket, or a 429.
    let anonymous_from = matches!(caller, Caller::Anonymous).then(|| client_ip(req));
    let who = match (&caller, &anonymous_from) {
        (Caller::Token { name, .. }, _) => limits::Who::Token { name },
        (Caller::Anonymous, client) => limits::Who::Anonymous {
            client: client.as_deref().unwrap_or_default(),
        },
    };
    let over = auth.limits.check(who, api).err()?;
    let client = anonymous_from.unwrap_or_else(|| client_ip(req));
    let scope = match &caller {
        Caller::Token { scope, .. } => scope.as_str(),
        Caller::Anonymous => "anonymous",
    };
    metrics::counter!("mezzanine_rate_limited_total", "api" => api.as_str(), "scope" => scope)
        .increment(1);
    auth.refusals.note(Refusal {
        client: client.clone(),
        api: api.as_str(),
        reason: "rate limited",
        token: caller.name().map(str::to_owned),
        method: req.method().to_string(),
        path: path.to_owned(),
        status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
    });
    let detail = match caller.name() {
        Some(name) => format!(
            "token {name:?} is over its rate limit of {} on the {} API ({}): retry after {} s",
            over.limit,
            api.as_str(),
            over.source,
            over.retry_after
        ),
        None => format!(
            "requests without a token from this address are over the rate limit of {} on the \
             {} API ({}): retry after {} s, or send a token of your own",
            over.limit,
            api.as_str(),
            over.source,
            over.retry_after
        ),
    };
    let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, detail);
    p.retry_after = Some(std::time::Duration::from_secs(over.retry_after));
    Some(p.into_response_at(path))
}

/// A caller [`rate_limit`] already identified and allowed (for [`guard`]).
#[derive(Clone)]
struct Identified(Caller);

/// The middleware: refuses what the caller may not do (see the module's table), audits admin
/// requests, and puts the [`Caller`] in the request's extensions.
pub async fn guard(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let area = Area::of(req.method(), req.uri().path());
    let checked = match req.extensions_mut().remove::<Identified>() {
        Some(Identified(caller)) => Ok(caller),
        None => st.auth.check(area, req.headers()),
    };
    let caller = match checked {
        Ok(c) => c,
        Err(refused) => {
            st.auth.refusals.note(Refusal {
                client: client_ip(&req),
                api: if area == Area::Admin { "admin" } else { "data" },
                reason: refused.reason,
                token: refused.token.clone(),
                method: req.method().to_string(),
                path: req.uri().path().to_owned(),
                status: refused.status.as_u16(),
            });
            return refused.into_response();
        }
    };
    req.extensions_mut().insert(caller.clone());
    if area != Area::Admin {
        return next.run(req).await;
    }
    // Admin requests only: what their audit row names.
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let client = client_ip(&req);
    let actor = mezzanine_catalog::Actor {
        token: caller.name().map(str::to_owned),
        client,
    };
    let resp = mezzanine_catalog::acting(actor.clone(), next.run(req)).await;
    if audited(&method, &path) {
        let detail = json!({
            "method": method.as_str(),
            "path": path,
            "status": resp.status().as_u16(),
            "by": actor,
        });
        if let Err(e) = st.catalog.record("admin", &detail).await {
            tracing::error!(error = %e, detail = %detail, "an admin request could not be audited");
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    fn auth_with(lines: &str, open_admin: bool, open_data: bool) -> Auth {
        Auth::new(None, Some(lines), open_admin, open_data).unwrap()
    }

    #[test]
    fn areas_by_path_and_method() {
        assert_eq!(Area::of(&Method::GET, "/admin/v1/status"), Area::Admin);
        assert_eq!(Area::of(&Method::GET, "/admin"), Area::Admin);
        assert_eq!(
            Area::of(&Method::GET, "/administrator"),
            Area::Data(Scope::Read)
        );
        assert_eq!(
            Area::of(&Method::POST, "/v1/cells"),
            Area::Data(Scope::Write)
        );
        assert_eq!(
            Area::of(&Method::DELETE, "/v1/plugins/1"),
            Area::Data(Scope::Admin)
        );
        assert_eq!(
            Area::of(&Method::POST, "/v1/plugins"),
            Area::Data(Scope::Admin)
        );
        assert_eq!(
            Area::of(&Method::GET, "/v1/plugins"),
            Area::Data(Scope::Read)
        );
        assert_eq!(Area::of(&Method::GET, "/metrics"), Area::Data(Scope::Read));
        assert_eq!(Area::of(&Method::GET, "/v1/readyz"), Area::Open);
        assert_eq!(Area::of(&Method::GET, "/openapi.json"), Area::Open);
        assert_eq!(Area::of(&Method::GET, "/admin/v1/openapi.json"), Area::Open);
        assert_eq!(
            Area::of(&Method::GET, "/admin/v1/openapi.json/x"),
            Area::Admin
        );
    }

    #[test]
    fn the_header_is_one_bearer_token() {
        let t = tokens::new_token();
        let a = auth_with(&tokens::token_line("ops", Scope::Admin, &t), false, false);
        let ok = a.check(Area::Admin, &headers(Some(&format!("bearer  {t} "))));
        assert!(matches!(ok, Ok(Caller::Token { .. })), "{ok:?}");
        for bad in [
            format!("Basic {t}"),
            t.clone(),
            "Bearer".into(),
            format!("Bearer {t} x"),
        ] {
            let r = a.check(Area::Admin, &headers(Some(&bad))).unwrap_err();
            assert_eq!(r.reason, "malformed header", "{bad}");
        }
        let mut two = headers(Some(&format!("Bearer {t}")));
        two.append(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        assert_eq!(
            a.check(Area::Admin, &two).unwrap_err().reason,
            "malformed header"
        );
    }

    #[test]
    fn an_empty_tokens_variable_configures_nothing() {
        let a = auth_with("  ", false, false);
        assert!(!a.data_needs_token());
        assert!(a.check(Area::Data(Scope::Write), &headers(None)).is_ok());
        assert_eq!(
            a.check(Area::Admin, &headers(None)).unwrap_err().status,
            401
        );
    }

    #[test]
    fn open_areas_never_refuse_but_still_name_the_caller() {
        let t = tokens::new_token();
        let a = auth_with(&tokens::token_line("ops", Scope::Read, &t), true, true);
        let bearer = format!("Bearer {t}");
        for area in [Area::Open, Area::Admin, Area::Data(Scope::Write)] {
            assert_eq!(
                a.check(area, &headers(Some("Bearer nope"))),
                Ok(Caller::Anonymous)
            );
            assert_eq!(
                a.check(area, &headers(Some("garbage"))),
                Ok(Caller::Anonymous)
            );
            let named = a.check(area, &headers(Some(&bearer))).unwrap();
            assert_eq!(named.name(), Some("ops"));
        }
    }

    #[test]
    fn a_bad_file_keeps_the_last_good_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let (t1, t2) = (tokens::new_token(), tokens::new_token());
        std::fs::write(&path, tokens::token_line("one", Scope::Admin, &t1)).unwrap();
        let a = Auth::new(Some(path.clone()), None, false, false).unwrap();
        let admin = |t: &str| a.check(Area::Admin, &headers(Some(&format!("Bearer {t}"))));
        assert!(admin(&t1).is_ok() && admin(&t2).is_err());
        assert!(!a.reload_file(), "nothing changed");
        // A damaged file: the old set stays, and the status says why.
        std::fs::write(&path, "one admin sha256:nothex").unwrap();
        assert!(!a.reload_file());
        assert!(admin(&t1).is_ok());
        let (view, warnings) = a.status();
        assert!(
            view["token_file_error"]
                .as_str()
                .unwrap()
                .contains("line 1"),
            "{view}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("last good set")),
            "{warnings:?}"
        );
        // A removed file too.
        std::fs::remove_file(&path).unwrap();
        assert!(!a.reload_file());
        assert!(admin(&t1).is_ok());
        // A good file again: the new set, and no error.
        std::fs::write(&path, tokens::token_line("two", Scope::Admin, &t2)).unwrap();
        assert!(a.reload_file());
        assert!(admin(&t2).is_ok() && admin(&t1).is_err());
        assert!(a.status().0["token_file_error"].is_null());
    }

    #[test]
    fn a_configured_source_without_tokens_keeps_v1_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# nobody yet\n").unwrap();
        let a = Auth::new(Some(path), None, false, false).unwrap();
        assert!(a.data_needs_token());
        let r = a
            .check(Area::Data(Scope::Read), &headers(None))
            .unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn a_name_in_both_sources_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            tokens::token_line("ops", Scope::Admin, &tokens::new_token()),
        )
        .unwrap();
        let env = tokens::token_line("ops", Scope::Read, &tokens::new_token());
        let e = Auth::new(Some(path), Some(&env), false, false)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("the name \"ops\" is given twice"),
            "{e}"
        );
    }
}
