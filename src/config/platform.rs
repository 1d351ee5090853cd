//! `platform:`: which API dirsync talks to, how it signs in, and how hard it
//! may push; and the secret references (`{credential, file, env}`) that the
//! platform and the sources share. Secrets are named here, never read: they
//! are read when a connection opens.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{default_attempts, default_connect_timeout, default_request_timeout};
use super::{resolve_against, Checker, ConfigError};
use crate::platform::{AuthMethod, RetryPolicy, SecretSource, DEFAULT_REFRESH_MARGIN};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlatform {
    url: Option<String>,
    emulator: Option<RawEmulator>,
    token: Option<RawSecret>,
    refresh_token: Option<RawSecret>,
    tenant_id: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout")]
    request_timeout_secs: u64,
    #[serde(default = "default_rps")]
    requests_per_second: u32,
    #[serde(default = "default_concurrency")]
    max_concurrency: usize,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    #[serde(default = "default_run_deadline")]
    run_deadline_secs: u64,
    #[serde(default)]
    batch: RawBatch,
}

/// `platform.batch`: the most operations per request. Both default to 1
/// (each alone): the platform may weigh a document by its cost, so an
/// operator opts in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    #[serde(default = "one")]
    mutations: usize,
    #[serde(default = "one")]
    pages: usize,
}

impl Default for RawBatch {
    fn default() -> Self {
        RawBatch {
            mutations: 1,
            pages: 1,
        }
    }
}

fn one() -> usize {
    1
}

/// The most operations a batch may carry: more is no faster and only
/// risks the platform's cost limits.
pub const MAX_BATCH: usize = 100;

/// The cap on the request rate: a run starts just under it and finds the
/// platform's own ceiling (about 20) under it.
fn default_rps() -> u32 {
    crate::platform::DEFAULT_RATE_CAP
}

fn default_concurrency() -> usize {
    crate::platform::DEFAULT_MAX_CONCURRENCY
}

fn default_run_deadline() -> u64 {
    crate::platform::DEFAULT_RUN_DEADLINE.as_secs()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmulator {
    state: PathBuf,
    seed: Option<PathBuf>,
}

/// Where a secret is read from: one or more places, tried credential, file, env.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    env: Option<String>,
    file: Option<PathBuf>,
    credential: Option<String>,
}

/// What a secret key must look like; never echoes what was written there.
pub(super) const SECRET_SHAPE: &str =
    "must be a map with one or more of credential, file and env, tried in that order (the token itself never goes in the config)";

/// What to say, instead of serde's message, about a mistake at `key_path`
/// when that key holds or names a secret: what was written there is never
/// echoed, since a mistaken config may hold the secret itself.
pub(super) fn secret_message(key_path: &str) -> Option<&'static str> {
    let within = |secret: &str| {
        key_path
            .strip_prefix(secret)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    let secret_refs = [
        "platform.token",
        "platform.refresh_token",
        "source.ldap.bind_password",
        "source.http.auth.bearer",
        "source.http.auth.basic.password",
        "source.http.auth.api_key.value",
    ];
    if secret_refs.iter().any(|k| within(k)) {
        Some(SECRET_SHAPE)
    } else if within("source.http.auth") {
        Some("must be one of bearer, basic { username, password } or api_key { header, value }, each secret as { credential, file, env } (what was written is not shown: it may be a secret)")
    } else if within("source.http.headers") {
        Some("must map header names to text values (what was written is not shown: it may hold a secret)")
    } else {
        None
    }
}

/// An environment variable name as POSIX shells write them. Anything else
/// is refused without being echoed: it may be the secret itself.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Clone, Debug)]
pub enum PlatformTarget {
    Url(url::Url),
    /// The built-in emulator, started in-process with this state file.
    Emulator {
        state: PathBuf,
        seed: Option<PathBuf>,
    },
}

#[derive(Clone, Debug)]
pub struct PlatformSettings {
    pub target: PlatformTarget,
    /// None: the emulator (a fresh token of its own each run), or, for a
    /// URL, the environment (`PRISMATIC_API_KEY`, `PRISM_ACCESS_TOKEN`,
    /// `PRISM_REFRESH_TOKEN`) read when the connection opens.
    pub auth: Option<AuthMethod>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// A cap no second passes: a run with no ceiling remembered starts just
    /// under it (97%) and finds the platform's ceiling under it at its
    /// first 429.
    pub requests_per_second: NonZeroU32,
    pub max_concurrency: usize,
    pub retry: RetryPolicy,
    /// A run (one connection) sends nothing more, and abandons what is in
    /// flight, once this much time has passed since it connected.
    pub run_deadline: Duration,
    /// Mutations per request (`platform.batch.mutations`, 1..=100).
    pub batch_mutations: usize,
    /// List pages per request (`platform.batch.pages`, 1..=100).
    pub batch_pages: usize,
}

impl Checker<'_> {
    /// One place, or several tried in the order credential, file, env.
    pub(super) fn secret(&self, key: &str, raw: &RawSecret) -> Result<SecretSource, ConfigError> {
        let mut sources = Vec::new();
        if let Some(name) = &raw.credential {
            sources.push(SecretSource::Credential(
                self.non_empty(&format!("{key}.credential"), name)?,
            ));
        }
        if let Some(file) = &raw.file {
            sources.push(SecretSource::File(resolve_against(self.path, file)));
        }
        if let Some(var) = &raw.env {
            let env_key = format!("{key}.env");
            let var = self.non_empty(&env_key, var)?;
            if !is_env_name(&var) {
                return Err(self.invalid(
                    &env_key,
                    "must name an environment variable (letters, digits and _), such as PRISMATIC_API_KEY; the secret itself never goes in the config (not shown)",
                ));
            }
            sources.push(SecretSource::Env(var));
        }
        match <[SecretSource; 1]>::try_from(sources) {
            Ok([one]) => Ok(one),
            Err(none) if none.is_empty() => Err(self.invalid(key, SECRET_SHAPE)),
            Err(several) => Ok(SecretSource::FirstOf(several)),
        }
    }
}

pub(super) fn validate_platform(
    c: &Checker<'_>,
    p: RawPlatform,
) -> Result<PlatformSettings, ConfigError> {
    let target = match (&p.url, &p.emulator) {
        (Some(url), None) => PlatformTarget::Url(
            url.parse()
                .map_err(|e| c.invalid("platform.url", format!("not a URL: {e}")))?,
        ),
        (None, Some(emu)) => PlatformTarget::Emulator {
            state: resolve_against(c.path, &emu.state),
            seed: emu.seed.as_ref().map(|s| resolve_against(c.path, s)),
        },
        (Some(_), Some(_)) => {
            return Err(c.invalid_at(
                "platform",
                "platform.emulator",
                "give exactly one of url or emulator",
            ))
        }
        (None, None) => return Err(c.invalid("platform", "give exactly one of url or emulator")),
    };
    let auth = validate_auth(c, &target, &p)?;
    let requests_per_second = NonZeroU32::new(p.requests_per_second)
        .ok_or_else(|| c.invalid("platform.requests_per_second", "must be at least 1"))?;
    if p.max_concurrency == 0 {
        return Err(c.invalid("platform.max_concurrency", "must be at least 1"));
    }
    if p.max_attempts == 0 {
        return Err(c.invalid("platform.max_attempts", "must be at least 1"));
    }
    for (key, secs) in [
        ("platform.connect_timeout_secs", p.connect_timeout_secs),
        ("platform.request_timeout_secs", p.request_timeout_secs),
    ] {
        if secs == 0 {
            return Err(c.invalid_at("platform", key, "timeouts must be at least 1 second"));
        }
    }
    if p.run_deadline_secs == 0 {
        return Err(c.invalid("platform.run_deadline_secs", "must be at least 1 second"));
    }
    for (key, n) in [
        ("platform.batch.mutations", p.batch.mutations),
        ("platform.batch.pages", p.batch.pages),
    ] {
        if !(1..=MAX_BATCH).contains(&n) {
            return Err(c.invalid(key, format!("must be from 1 to {MAX_BATCH}, not {n}")));
        }
    }
    Ok(PlatformSettings {
        target,
        auth,
        ca_file: p.ca_file.as_ref().map(|f| resolve_against(c.path, f)),
        connect_timeout: Duration::from_secs(p.connect_timeout_secs),
        request_timeout: Duration::from_secs(p.request_timeout_secs),
        requests_per_second,
        max_concurrency: p.max_concurrency,
        retry: RetryPolicy {
            max_attempts: p.max_attempts,
            ..RetryPolicy::default()
        },
        run_deadline: Duration::from_secs(p.run_deadline_secs),
        batch_mutations: p.batch.mutations,
        batch_pages: p.batch.pages,
    })
}

/// The sign-in method. With neither `token` nor `refresh_token`, the
/// environment decides when the connection opens (so `check-config` needs no
/// secret, whichever way the token is named).
fn validate_auth(
    c: &Checker<'_>,
    target: &PlatformTarget,
    p: &RawPlatform,
) -> Result<Option<AuthMethod>, ConfigError> {
    if p.tenant_id.is_some() && p.refresh_token.is_none() {
        return Err(c.invalid("platform.tenant_id", "is used only with refresh_token"));
    }
    match (target, &p.token, &p.refresh_token) {
        (PlatformTarget::Emulator { .. }, None, None) => Ok(None),
        (PlatformTarget::Emulator { .. }, token, _) => Err(c.invalid(
            if token.is_some() {
                "platform.token"
            } else {
                "platform.refresh_token"
            },
            "the built-in emulator makes its own token; remove token and refresh_token",
        )),
        (PlatformTarget::Url(_), Some(t), None) => Ok(Some(AuthMethod::StaticToken(
            c.secret("platform.token", t)?,
        ))),
        (PlatformTarget::Url(_), None, Some(r)) => Ok(Some(AuthMethod::RefreshToken {
            refresh_token: c.secret("platform.refresh_token", r)?,
            tenant_id: p.tenant_id.clone(),
            refresh_margin: DEFAULT_REFRESH_MARGIN,
        })),
        (PlatformTarget::Url(_), None, None) => Ok(None),
        (PlatformTarget::Url(_), Some(_), Some(_)) => Err(c.invalid_at(
            "platform",
            "platform.refresh_token",
            "give token or refresh_token, not both",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, MINIMAL};
    use std::time::Duration;

    fn with_platform_key(line: &str) -> String {
        MINIMAL.replace(
            "  emulator:\n    state: state.json\n",
            &format!("  emulator:\n    state: state.json\n  {line}\n"),
        )
    }

    #[test]
    fn the_rate_cap_defaults_to_40_and_concurrency_to_8() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.platform.requests_per_second.get(), 40);
        assert_eq!(c.platform.max_concurrency, 8);
        assert_eq!((c.platform.batch_mutations, c.platform.batch_pages), (1, 1));
        let c = parse(&with_platform_key("requests_per_second: 20")).unwrap();
        assert_eq!(c.platform.requests_per_second.get(), 20);
        let err = parse(&with_platform_key("requests_per_second: 0")).unwrap_err();
        assert_eq!(err.key(), Some("platform.requests_per_second"), "{err}");
        assert!(err.to_string().contains("at least 1"), "{err}");
    }

    #[test]
    fn batch_sizes_are_taken_from_1_to_100_and_name_their_key_when_not() {
        let c = parse(&with_platform_key("batch: { mutations: 20, pages: 5 }")).unwrap();
        assert_eq!(
            (c.platform.batch_mutations, c.platform.batch_pages),
            (20, 5)
        );
        let c = parse(&with_platform_key("batch: { mutations: 20 }")).unwrap();
        assert_eq!(c.platform.batch_pages, 1);
        let err = parse(&with_platform_key("batch: { mutations: 0 }")).unwrap_err();
        assert_eq!(err.key(), Some("platform.batch.mutations"), "{err}");
        let err = parse(&with_platform_key("batch: { pages: 500 }")).unwrap_err();
        assert_eq!(err.key(), Some("platform.batch.pages"), "{err}");
        assert!(err.to_string().contains("from 1 to 100"), "{err}");
    }

    #[test]
    fn the_run_deadline_defaults_to_30_minutes_and_must_be_at_least_1_second() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.platform.run_deadline, Duration::from_secs(1800));
        let with = |v: &str| {
            MINIMAL.replace(
                "  emulator:\n    state: state.json\n",
                &format!("  emulator:\n    state: state.json\n  run_deadline_secs: {v}\n"),
            )
        };
        assert_eq!(
            parse(&with("5")).unwrap().platform.run_deadline,
            Duration::from_secs(5)
        );
        let err = parse(&with("0")).unwrap_err();
        assert_eq!(err.key(), Some("platform.run_deadline_secs"), "{err}");
        assert!(err.to_string().contains("at least 1 second"), "{err}");
    }
}
