//! Where the access token comes from: a static token (file or environment
//! variable), or the platform's refresh-token flow (`/auth/meta`, then
//! `/oauth/token`), refreshed ahead of expiry with one refresh in flight; or,
//! like the official CLI, an access token used until it nears its expiry
//! and then refreshed with the refresh token that came with it.
//!
//! Tokens live in `SecretString`s: their `Debug` is redacted and they are
//! exposed only where the `Authorization` header or the token form is built.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

/// Environment variables read, in this order, when no token source is configured.
pub const ENV_API_KEY: &str = "PRISMATIC_API_KEY";
pub const ENV_ACCESS_TOKEN: &str = "PRISM_ACCESS_TOKEN";
pub const ENV_REFRESH_TOKEN: &str = "PRISM_REFRESH_TOKEN";

/// Refresh when fewer than this much of the access token's life remains
/// (what the platform's own CLI does).
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Where one secret is kept. Never the secret inline in a config file.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// An environment variable's name.
    Env(String),
    /// A file whose content (surrounding white space trimmed) is the secret.
    File(PathBuf),
    /// A systemd credential (`LoadCredential=NAME:...`): the file NAME in
    /// `$CREDENTIALS_DIRECTORY`.
    Credential(String),
    /// A secret already in memory (tests, or a value read by the caller).
    Value(SecretString),
    /// The first of these that is present (a credential that was not
    /// loaded, a missing file, an unset variable are passed over). The
    /// config writes them in the order credential, file, env.
    FirstOf(Vec<SecretSource>),
}

impl SecretSource {
    /// Reads the secret now. An empty secret is an error.
    pub fn read(&self) -> Result<SecretString, AuthError> {
        let raw = match self {
            SecretSource::Env(var) => {
                std::env::var(var).map_err(|_| AuthError::MissingEnv { var: var.clone() })?
            }
            SecretSource::File(path) => {
                std::fs::read_to_string(path).map_err(|source| AuthError::ReadFile {
                    path: path.clone(),
                    source,
                })?
            }
            SecretSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| AuthError::NoCredentialsDirectory { name: name.clone() })?;
                let path = PathBuf::from(dir).join(name);
                std::fs::read_to_string(&path)
                    .map_err(|source| AuthError::ReadFile { path, source })?
            }
            SecretSource::Value(v) => v.expose_secret().to_owned(),
            SecretSource::FirstOf(sources) => {
                for source in sources {
                    match source.read() {
                        Err(e) if e.is_absent() => continue,
                        found => return found,
                    }
                }
                return Err(AuthError::NotFound {
                    tried: self.describe(),
                });
            }
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(AuthError::Empty {
                from: self.describe(),
            });
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    /// Where the secret comes from, for messages (never the secret itself).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(var) => format!("environment variable {var}"),
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Credential(name) => format!("systemd credential {name}"),
            SecretSource::Value(_) => "the value given".to_owned(),
            SecretSource::FirstOf(sources) => sources
                .iter()
                .map(SecretSource::describe)
                .collect::<Vec<_>>()
                .join(", then "),
        }
    }
}

/// How dirsync authenticates to the platform.
#[derive(Clone, Debug)]
pub enum AuthMethod {
    /// A long-lived access token (an API key).
    StaticToken(SecretSource),
    /// An access token (a JWT, as the official CLI keeps it in
    /// `PRISM_ACCESS_TOKEN`) used while more than the refresh margin of its
    /// life (its `exp` claim) remains, then refreshed with the refresh token.
    /// One whose `exp` cannot be read is refreshed before first use.
    AccessAndRefresh {
        access_token: SecretSource,
        refresh_token: SecretSource,
        tenant_id: Option<String>,
        refresh_margin: Duration,
    },
    /// A refresh token exchanged for short-lived access tokens.
    RefreshToken {
        refresh_token: SecretSource,
        /// Sent as `tenant_id` when set.
        tenant_id: Option<String>,
        /// Refresh when fewer than this remains of the access token's life.
        refresh_margin: Duration,
    },
}

impl AuthMethod {
    /// The default when nothing is configured, as the official tools read
    /// the environment: `PRISMATIC_API_KEY` (static); else
    /// `PRISM_ACCESS_TOKEN` with `PRISM_REFRESH_TOKEN` (the access token,
    /// refreshed ahead of expiry, as the official CLI does); else either one
    /// alone (static, or the refresh flow).
    pub fn from_environment() -> Result<AuthMethod, AuthError> {
        AuthMethod::from_variables(|var| std::env::var_os(var).is_some())
    }

    /// [`AuthMethod::from_environment`] over `is_set` (which variables are there).
    fn from_variables(is_set: impl Fn(&str) -> bool) -> Result<AuthMethod, AuthError> {
        let env = |var: &str| SecretSource::Env(var.to_owned());
        match (
            is_set(ENV_API_KEY),
            is_set(ENV_ACCESS_TOKEN),
            is_set(ENV_REFRESH_TOKEN),
        ) {
            (true, _, _) => Ok(AuthMethod::StaticToken(env(ENV_API_KEY))),
            (false, true, true) => Ok(AuthMethod::AccessAndRefresh {
                access_token: env(ENV_ACCESS_TOKEN),
                refresh_token: env(ENV_REFRESH_TOKEN),
                tenant_id: None,
                refresh_margin: DEFAULT_REFRESH_MARGIN,
            }),
            (false, true, false) => Ok(AuthMethod::StaticToken(env(ENV_ACCESS_TOKEN))),
            (false, false, true) => Ok(AuthMethod::RefreshToken {
                refresh_token: env(ENV_REFRESH_TOKEN),
                tenant_id: None,
                refresh_margin: DEFAULT_REFRESH_MARGIN,
            }),
            (false, false, false) => Err(AuthError::NoToken),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token configured: set {ENV_API_KEY}, {ENV_ACCESS_TOKEN} or {ENV_REFRESH_TOKEN}, or name a token file")]
    NoToken,
    #[error("systemd credential {name} was asked for, but CREDENTIALS_DIRECTORY is not set (is LoadCredential= in the unit?)")]
    NoCredentialsDirectory { name: String },
    #[error("environment variable {var} is not set")]
    MissingEnv { var: String },
    #[error("cannot read the token from {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token from {from} is empty")]
    Empty { from: String },
    #[error("no token found in {tried}")]
    NotFound { tried: String },
    #[error("cannot read the platform's auth settings from {url}: {detail}")]
    Meta { url: String, detail: String },
    #[error("refreshing the access token at {url} failed: {detail}")]
    Refresh { url: String, detail: String },
}

impl AuthError {
    /// The source is not there at all (unset variable, missing file, no
    /// credentials directory), as opposed to there but unusable.
    fn is_absent(&self) -> bool {
        match self {
            AuthError::MissingEnv { .. }
            | AuthError::NoCredentialsDirectory { .. }
            | AuthError::NotFound { .. } => true,
            AuthError::ReadFile { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// A token and the instant after which it must not be used without refreshing.
struct CachedToken {
    token: SecretString,
    refresh_at: Option<Instant>,
}

/// The token cache: nothing read yet (an access token given with a refresh
/// token is tried then, and only then), or the token in use.
enum Cache {
    Empty,
    Token(CachedToken),
}

/// Hands out a valid bearer token for each request.
pub struct TokenProvider {
    method: AuthMethod,
    base_url: Url,
    http: reqwest::Client,
    /// Held across a refresh, so concurrent requests wait for the one refresh
    /// in flight instead of starting their own.
    cached: Mutex<Cache>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("method", &self.method)
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct AuthMeta {
    domain: String,
    #[serde(rename = "clientId")]
    client_id: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenProvider {
    pub fn new(method: AuthMethod, base_url: Url, http: reqwest::Client) -> TokenProvider {
        TokenProvider {
            method,
            base_url,
            http,
            cached: Mutex::new(Cache::Empty),
        }
    }

    /// A token valid for at least the refresh margin (static tokens are
    /// read once and kept).
    pub async fn bearer(&self) -> Result<SecretString, AuthError> {
        let mut cached = self.cached.lock().await;
        let first = match &*cached {
            Cache::Token(c) if c.refresh_at.is_none_or(|at| Instant::now() < at) => {
                return Ok(c.token.clone());
            }
            Cache::Token(_) => false,
            Cache::Empty => true,
        };
        let fresh = match &self.method {
            AuthMethod::StaticToken(source) => CachedToken {
                token: source.read()?,
                refresh_at: None,
            },
            AuthMethod::AccessAndRefresh {
                access_token,
                refresh_token,
                tenant_id,
                refresh_margin,
            } => {
                // The access token given is used first, while it has life
                // left beyond the margin; after that, only refreshed ones.
                match first.then(|| given_access(access_token, *refresh_margin)) {
                    Some(Ok(Some(given))) => given,
                    Some(Err(e)) => return Err(e),
                    Some(Ok(None)) | None => {
                        self.refresh(refresh_token, tenant_id.as_deref(), *refresh_margin)
                            .await?
                    }
                }
            }
            AuthMethod::RefreshToken {
                refresh_token,
                tenant_id,
                refresh_margin,
            } => {
                self.refresh(refresh_token, tenant_id.as_deref(), *refresh_margin)
                    .await?
            }
        };
        let token = fresh.token.clone();
        *cached = Cache::Token(fresh);
        Ok(token)
    }

    async fn refresh(
        &self,
        refresh_token: &SecretSource,
        tenant_id: Option<&str>,
        margin: Duration,
    ) -> Result<CachedToken, AuthError> {
        let refresh_token = refresh_token.read()?;
        let meta_url = self
            .base_url
            .join("auth/meta")
            .map_err(|e| AuthError::Meta {
                url: self.base_url.to_string(),
                detail: e.to_string(),
            })?;
        let meta_err = |detail: String| AuthError::Meta {
            url: meta_url.to_string(),
            detail,
        };
        let response = self
            .http
            .get(meta_url.clone())
            .send()
            .await
            .map_err(|e| meta_err(e.to_string()))?;
        if !response.status().is_success() {
            return Err(meta_err(format!("HTTP {}", response.status().as_u16())));
        }
        let meta: AuthMeta = response.json().await.map_err(|e| meta_err(e.to_string()))?;

        // The token endpoint is always HTTPS: the refresh token must not
        // cross the network in clear.
        let token_url = format!("https://{}/oauth/token", meta.domain.trim_end_matches('/'));
        let refresh_err = |detail: String| AuthError::Refresh {
            url: token_url.clone(),
            detail,
        };
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("client_id", meta.client_id.as_str()),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        if let Some(tenant) = tenant_id {
            form.push(("tenant_id", tenant));
        }
        let response = self
            .http
            .post(&token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| refresh_err(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            // Only the OAuth error code and description: never echo the body,
            // which a misbehaving server could fill with the request.
            let detail = match response.json::<OAuthErrorBody>().await {
                Ok(OAuthErrorBody {
                    error: Some(code),
                    error_description,
                }) => format!(
                    "HTTP {}: {code}{}",
                    status.as_u16(),
                    error_description
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
                _ => format!("HTTP {}", status.as_u16()),
            };
            return Err(refresh_err(detail));
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|e| refresh_err(format!("invalid token response: {}", e.without_url())))?;
        let lifetime = body
            .expires_in
            .map(Duration::from_secs)
            .or_else(|| jwt_lifetime(&body.access_token));
        let now = Instant::now();
        let refresh_at = match lifetime {
            Some(life) => now + life.saturating_sub(margin),
            // Neither expires_in nor a readable exp: refresh on every use
            // rather than risk sending an expired token.
            None => now,
        };
        tracing::info!(
            expires_in_s = lifetime.map(|d| d.as_secs()),
            "Access token refreshed."
        );
        Ok(CachedToken {
            token: SecretString::from(body.access_token),
            refresh_at: Some(refresh_at),
        })
    }
}

/// The access token given with a refresh token, when more than `margin` of
/// its life remains (None: refresh now).
fn given_access(source: &SecretSource, margin: Duration) -> Result<Option<CachedToken>, AuthError> {
    let token = source.read()?;
    match jwt_lifetime(token.expose_secret()) {
        Some(life) if life > margin => {
            tracing::info!(
                expires_in_s = life.as_secs(),
                from = %source.describe(),
                "Using the access token given; it is refreshed when fewer than {} s of its life remain.",
                margin.as_secs()
            );
            Ok(Some(CachedToken {
                token,
                refresh_at: Some(Instant::now() + (life - margin)),
            }))
        }
        life => {
            tracing::info!(
                expires_in_s = life.map(|d| d.as_secs()),
                from = %source.describe(),
                "The access token given expires within the refresh margin (or has no readable exp): refreshing first."
            );
            Ok(None)
        }
    }
}

/// The remaining life of a JWT, read from its `exp` claim (not verified:
/// the platform verifies it; we only need to know when to refresh).
pub fn jwt_lifetime(token: &str) -> Option<Duration> {
    #[derive(Deserialize)]
    struct Claims {
        exp: u64,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(claims.exp.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_cli_variables_mean_the_access_token_refreshed_ahead_of_expiry() {
        let with = |set: &[&str]| {
            let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
            AuthMethod::from_variables(|var| set.iter().any(|s| s == var))
        };
        assert!(matches!(
            with(&[ENV_ACCESS_TOKEN, ENV_REFRESH_TOKEN]),
            Ok(AuthMethod::AccessAndRefresh {
                access_token: SecretSource::Env(ref a),
                refresh_token: SecretSource::Env(ref r),
                tenant_id: None,
                refresh_margin: DEFAULT_REFRESH_MARGIN,
            }) if a == ENV_ACCESS_TOKEN && r == ENV_REFRESH_TOKEN
        ));
        assert!(matches!(
            with(&[ENV_API_KEY, ENV_ACCESS_TOKEN, ENV_REFRESH_TOKEN]),
            Ok(AuthMethod::StaticToken(SecretSource::Env(ref v))) if v == ENV_API_KEY
        ));
        assert!(matches!(
            with(&[ENV_ACCESS_TOKEN]),
            Ok(AuthMethod::StaticToken(SecretSource::Env(ref v))) if v == ENV_ACCESS_TOKEN
        ));
        assert!(matches!(
            with(&[ENV_REFRESH_TOKEN]),
            Ok(AuthMethod::RefreshToken { .. })
        ));
        assert!(matches!(with(&[]), Err(AuthError::NoToken)));
    }

    #[test]
    fn jwt_exp_gives_the_remaining_life() {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{{\"exp\":{exp},\"sub\":\"x\"}}"));
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig");
        let life = jwt_lifetime(&token).unwrap();
        assert!(life <= Duration::from_secs(600) && life >= Duration::from_secs(590));
        assert_eq!(jwt_lifetime("not-a-jwt"), None);
    }

    #[test]
    fn several_places_are_tried_in_order_and_the_first_present_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let missing = dir.path().join("missing");
        let var = "DIRSYNC_TEST_FIRST_OF_3c1e";
        let chain = |sources: Vec<SecretSource>| SecretSource::FirstOf(sources);
        // Only this test reads this variable.
        std::env::set_var(var, "from-env");
        std::fs::write(&file, "from-file\n").unwrap();
        let read = |s: &SecretSource| s.read().map(|t| t.expose_secret().to_owned());
        let order = chain(vec![
            SecretSource::File(missing.clone()),
            SecretSource::File(file.clone()),
            SecretSource::Env(var.to_owned()),
        ]);
        assert_eq!(
            read(&order).unwrap(),
            "from-file",
            "the file comes before the variable"
        );
        let env_only = chain(vec![
            SecretSource::File(missing.clone()),
            SecretSource::Env(var.to_owned()),
        ]);
        assert_eq!(
            read(&env_only).unwrap(),
            "from-env",
            "a missing file is passed over"
        );
        assert_eq!(
            order.describe(),
            format!(
                "file {}, then file {}, then environment variable {var}",
                missing.display(),
                file.display()
            )
        );
        std::env::remove_var(var);
        let none = chain(vec![
            SecretSource::File(missing.clone()),
            SecretSource::Env(var.to_owned()),
        ]);
        let err = none.read().unwrap_err();
        assert!(
            err.to_string().starts_with("no token found in file "),
            "{err}"
        );
        // A file that is there but empty is an error, not a reason to go on.
        std::fs::write(&file, " \n").unwrap();
        let err = chain(vec![SecretSource::File(file.clone())])
            .read()
            .unwrap_err();
        assert!(matches!(err, AuthError::Empty { .. }), "{err}");
    }

    #[test]
    fn a_secret_source_never_shows_its_value() {
        let source = SecretSource::Value(SecretString::from("canary-123".to_owned()));
        assert!(!format!("{source:?}").contains("canary-123"));
        assert!(!source.describe().contains("canary-123"));
    }

    #[test]
    fn an_empty_token_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  \n").unwrap();
        let err = SecretSource::File(path.clone()).read().unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
