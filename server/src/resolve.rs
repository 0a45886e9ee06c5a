//! From a request's context (request_context.rs: which cache, which key, what credentials)
//! to a registry client, a cache and what the request may write. Keys were validated before
//! anything is asked of a registry.
//!
//! What a request may write is decided here and nowhere else (docs/security.md): a named
//! cache reads with its own credentials whatever the client sends; a writer of a named
//! cache writes with them; on a cache with writers other credentials are refused; elsewhere
//! client credentials are forwarded and grant writes only where [`CredentialGrant`] says
//! the registry checks them; everyone else gets the cache's anonymous rights
//! (`allow_write`: add only).

use oranc_backends::Credentials;
use oranc_core::{CacheKey, RegistryCache};

use crate::client_addr::ClientAddr;
use crate::error::ServerError;
use crate::grants::CredentialGrant;
use crate::request_context::{Addressee, RequestContext, Route};
use crate::state::{AppState, ClientOwner, NamedCache, Purpose};
use crate::writers::WriterCheck;

/// What a request is about.
#[derive(Debug)]
pub struct Target<'a> {
    pub cache: RegistryCache,
    pub key: CacheKey,
    pub access: WriteAccess,
    /// The named cache addressed, with its upload rules; `None` for `/{registry}/{repo}/…`.
    pub named: Option<&'a NamedCache>,
    /// Large files may be handed to the registry's storage by redirect (`redirect_blobs`).
    pub redirect_blobs: bool,
    /// Whole blobs are hashed as they stream (unless the registry's `skip_digest_check`).
    pub check_digests: bool,
    /// The answer to a write, when the client sent credentials that grant none here.
    pub credentials_refused: Option<ServerError>,
}

/// What a request may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAccess {
    /// Nothing: reads only.
    ReadOnly,
    /// An anonymous client of a cache with `allow_write`: may add files, never replace one.
    AddOnly,
    /// A client whose credentials the registry checks: may add and replace, as the
    /// registry allows.
    Replace,
    /// One of the cache's `writers`: may add and replace; the server signs its narinfos.
    Writer,
}

pub async fn resolve<'a>(
    state: &'a AppState,
    context: &RequestContext,
    purpose: Purpose,
    address: Option<ClientAddr>,
) -> Result<Target<'a>, ServerError> {
    let (addressee, key) = match &context.route {
        Route::File { cache, key } => (cache, key),
        Route::Malformed(reason) => return Err(ServerError::BadRequest(reason.clone())),
        Route::Endpoint(name) => {
            return Err(ServerError::BadRequest(format!(
                "/{name} is not a cache file"
            )))
        }
    };
    let key = key.clone().map_err(ServerError::BadRequest)?;
    let client = context.credentials.clone();
    let (registry_name, repository) = match addressee {
        Addressee::Named(name) => {
            let named = state.named_cache(name).ok_or_else(|| {
                ServerError::Internal(format!("the named cache {name:?} is not configured"))
            })?;
            let grant = named_cache_access(
                state,
                named,
                client,
                context.bearer_token.as_deref(),
                purpose,
                address,
            )
            .await?;
            let owner = ClientOwner::NamedCache(name.clone());
            let registry = state.client(owner, &named.registry, grant.credentials, purpose);
            return Ok(Target {
                cache: state.registry_cache(
                    registry,
                    named.repository.clone(),
                    shared_state_for(purpose, grant.access),
                ),
                key,
                access: grant.access,
                named: Some(named),
                redirect_blobs: named.redirect_blobs,
                check_digests: named.check_digests,
                credentials_refused: grant.refused,
            });
        }
        Addressee::Url {
            registry,
            repository,
        } => (registry.as_str(), repository.as_str()),
    };
    let (handle, registry_grant) = state.open_registry(registry_name)?;
    let grant = match client {
        Some(credentials) => forwarded(credentials, &registry_grant, purpose).await?,
        None => Grant::anonymous(Credentials::Anonymous, WriteAccess::ReadOnly),
    };
    let owner = ClientOwner::Registry(registry_name.to_owned());
    let registry = state.client(owner, &handle, grant.credentials, purpose);
    let redirect_blobs = state.redirects_blobs(registry_name);
    let repository = registry
        .repository(repository)
        .map_err(|e| ServerError::BadRequest(e.to_string()))?;
    Ok(Target {
        cache: state.registry_cache(
            registry,
            repository,
            shared_state_for(purpose, grant.access),
        ),
        key,
        access: grant.access,
        named: None,
        redirect_blobs,
        check_digests: state.checks_digests(registry_name),
        credentials_refused: grant.refused,
    })
}

/// What per-repository state a request's cache shares: a write's only when it may write,
/// so refused uploads add nothing to the server's tables.
fn shared_state_for(purpose: Purpose, access: WriteAccess) -> Purpose {
    if access == WriteAccess::ReadOnly {
        Purpose::Read
    } else {
        purpose
    }
}

/// The credentials a request acts with, what it may write, and why credentials it sent
/// were not taken as a grant.
struct Grant {
    credentials: Credentials,
    access: WriteAccess,
    refused: Option<ServerError>,
}

impl Grant {
    fn anonymous(credentials: Credentials, access: WriteAccess) -> Self {
        Self {
            credentials,
            access,
            refused: None,
        }
    }
}

/// Client credentials that are not a writer's: forwarded with write rights where the
/// registry checks them. For reads they matter little (the registry may still let them see
/// a private repository), so they are asked about only for writes; where they grant
/// nothing, the request goes on as an anonymous one would.
async fn forwarded(
    credentials: Credentials,
    grant: &CredentialGrant,
    purpose: Purpose,
) -> Result<Grant, ServerError> {
    let trusted = match purpose {
        Purpose::Read => !matches!(grant, CredentialGrant::Never),
        Purpose::Write => grant.allows_writes().await?,
    };
    if trusted {
        return Ok(Grant::anonymous(credentials, WriteAccess::Replace));
    }
    Ok(Grant {
        credentials: Credentials::Anonymous,
        access: WriteAccess::ReadOnly,
        refused: Some(ServerError::CredentialsNotGranted(grant.refusal())),
    })
}

/// The registry credentials a request to a named cache acts with, and what it may write.
/// Reads act with the cache's credentials. A writer of the cache acts with them too; on a
/// cache with writers, other credentials are refused; on one without (and not a mirror),
/// client credentials are forwarded where they grant something ([`forwarded`]); everyone
/// else gets the cache's credentials and its anonymous rights.
async fn named_cache_access(
    state: &AppState,
    named: &NamedCache,
    client: Option<Credentials>,
    bearer_token: Option<&str>,
    purpose: Purpose,
    address: Option<ClientAddr>,
) -> Result<Grant, ServerError> {
    let anonymous_access = if named.allow_write {
        WriteAccess::AddOnly
    } else {
        WriteAccess::ReadOnly
    };
    let anonymous = || Grant::anonymous(named.credentials.clone(), anonymous_access);
    // A named cache reads with its own credentials, whatever the client sends, and no
    // password is checked for a read. Nix's netrc is per host, so a client that writes to
    // one cache of this server sends its writer's line with every read of every other:
    // forwarded, the registry refused it (403) and the read failed. Credentials decide
    // writes only; a mirror also stores what it fetches with its own, whoever asked.
    // Checking none on a read also keeps who the writers are from showing: a read answers
    // alike for a writer, a stranger and a wrong password, before and after a storm of
    // guesses.
    if purpose == Purpose::Read {
        return Ok(anonymous());
    }
    // An OIDC token, as a Bearer token or as the password of a netrc line (any user name).
    let token = bearer_token.or(match &client {
        Some(Credentials::Basic { password, .. }) => Some(password.as_str()),
        _ => None,
    });
    if let (Some(oidc), Some(token)) = (&named.oidc, token) {
        if crate::oidc::OidcWriters::looks_like_a_token(token) {
            return Ok(match oidc.verify(token).await {
                Ok(()) => Grant::anonymous(named.credentials.clone(), WriteAccess::Writer),
                Err(reason) => Grant {
                    refused: Some(ServerError::CredentialsNotGranted(format!(
                        "the OIDC token grants no writes here: {reason}"
                    ))),
                    ..anonymous()
                },
            });
        }
    }
    let Some(Credentials::Basic { username, password }) = client else {
        return Ok(anonymous());
    };
    let check = match &named.writers {
        Some(writers) => {
            writers
                .check(&username, &password, state.password_gate(), address)
                .await?
        }
        None => WriterCheck::NotAWriter,
    };
    if check == WriterCheck::Valid {
        return Ok(Grant::anonymous(
            named.credentials.clone(),
            WriteAccess::Writer,
        ));
    }
    // A cache with writers answers a stranger and a wrong password alike (401), and never
    // forwards them: a writer who mistyped would otherwise reach the registry with them.
    if named.writers.is_some() || named.oidc.is_some() {
        return Ok(Grant {
            refused: Some(ServerError::NotAWriter),
            ..anonymous()
        });
    }
    // A mirror's file names are predictable and its logs unsigned: what is written into it
    // comes from upstream or its own writers, never from credentials it cannot check.
    if named.mirror.is_some() {
        return Ok(Grant {
            refused: Some(ServerError::CredentialsNotGranted(
                "a mirror cache takes writes only from its writers (writers_file)".into(),
            )),
            ..anonymous()
        });
    }
    let credentials = Credentials::basic(username, password);
    let grant = forwarded(credentials, &named.grant, purpose).await?;
    if grant.refused.is_none() {
        return Ok(grant);
    }
    Ok(Grant {
        refused: grant.refused,
        ..anonymous()
    })
}
