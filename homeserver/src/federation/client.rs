//! The one HTTP client this server uses to talk to other servers (reqwest), with the safety rules
//! of DESIGN.md's "Federation" built in rather than left to callers:
//!
//! - every destination passes the operator's [`ServerAcl`] first;
//! - names are resolved by [`GuardedResolver`], which checks every address with
//!   [`check_address`] and hands reqwest only the allowed ones, so the address connected to is
//!   the address checked (no second lookup an attacker's DNS could answer differently); IP
//!   literals, which reqwest does not resolve, are checked before the request;
//! - HTTPS only, unless `federation.allow_insecure_http`; no redirects and no proxies, either of
//!   which would connect somewhere unchecked;
//! - a timeout on every request and a size cap on every answer.
//!
//! Discovery follows [`confab_federation::discovery`]: well-known delegation, then host:port,
//! with the answers cached as that module says (one lookup per server name and day, not one per
//! request). Outbound requests are signed with X-Matrix
//! ([`confab_federation::xmatrix::sign_request`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_federation::discovery::{
    Destination, MAX_WELL_KNOWN_BYTES, WELL_KNOWN_FAILURE_TTL, WELL_KNOWN_NEGATIVE_TTL,
    WELL_KNOWN_PATH, WellKnownCache, direct_destination, needs_well_known, parse_well_known,
    well_known_ttl,
};
use confab_federation::ids::ServerName;
use confab_federation::key_cache::KeyFetcher;
use confab_federation::policy::{PolicyError, ServerAcl, check_address};
use confab_federation::xmatrix::{AuthError, sign_request};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, header};
use serde_json::Value;

use super::identity::ServerIdentity;
use crate::config::FederationSettings;

/// Where a server publishes its keys ("Retrieving server keys" → "Publishing Keys").
pub const KEY_PATH: &str = "/_matrix/key/v2/server";

/// Server names whose well-known answer is kept; far more than a server federates with.
const WELL_KNOWN_CACHE_SIZE: usize = 10_000;

/// Why a request to another server failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The server is denied or not allowed, or its address may not be connected to.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The request could not be signed (its body has no canonical JSON form).
    #[error("cannot sign the request: {0}")]
    Sign(#[from] AuthError),
    /// Connecting, sending or receiving failed, or the time limit passed.
    #[error("request to {server} failed: {source}")]
    Http {
        /// The destination.
        server: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The answer is larger than `federation.max_response_bytes`.
    #[error("the answer of {server} is larger than {limit} bytes")]
    TooLarge {
        /// The destination.
        server: String,
        /// The limit.
        limit: usize,
    },
    /// The answer is not JSON.
    #[error("the answer of {server} is not JSON")]
    NotJson {
        /// The destination.
        server: String,
    },
    /// The server answered with an error status where only success is usable.
    #[error("{server} answered {status}: {body}")]
    Status {
        /// The destination.
        server: String,
        /// The HTTP status.
        status: u16,
        /// The answer's JSON.
        body: Value,
    },
    /// reqwest refused the client configuration (e.g. no TLS backend).
    #[error("cannot build the federation HTTP client: {0}")]
    Build(reqwest::Error),
}

/// A JSON answer from another server.
#[derive(Debug, Clone)]
pub struct FederationResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body (`null` if it was empty).
    pub body: Value,
}

/// The federation HTTP client; cheap to clone (reqwest's client is shared inside).
#[derive(Clone)]
pub struct FederationClient {
    http: reqwest::Client,
    identity: Arc<ServerIdentity>,
    acl: Arc<ServerAcl>,
    well_known: Arc<WellKnownCache>,
    scheme: &'static str,
    allow_private: bool,
    max_response_bytes: usize,
}

impl std::fmt::Debug for FederationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationClient")
            .field("origin", &self.identity.server_name)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl FederationClient {
    /// Builds the client for `settings`, signing as `identity`.
    pub fn new(
        settings: &FederationSettings,
        identity: Arc<ServerIdentity>,
        acl: Arc<ServerAcl>,
    ) -> Result<Self, OutboundError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("Confab/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(!settings.allow_insecure_http)
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.allow_private_addresses,
            }))
            .build()
            .map_err(OutboundError::Build)?;
        Ok(Self {
            http,
            identity,
            acl,
            well_known: Arc::new(WellKnownCache::new(WELL_KNOWN_CACHE_SIZE)),
            scheme: if settings.allow_insecure_http {
                "http"
            } else {
                "https"
            },
            allow_private: settings.allow_private_addresses,
            max_response_bytes: settings.max_response_bytes,
        })
    }

    /// The server this client signs as.
    pub fn origin(&self) -> &ServerName {
        &self.identity.server_name
    }

    /// Sends a request signed with X-Matrix to `destination` and returns its JSON answer,
    /// whatever the status. `path_and_query` is the request target from `/_matrix/…` on.
    pub async fn request(
        &self,
        destination: &ServerName,
        method: Method,
        path_and_query: &str,
        content: Option<&Value>,
    ) -> Result<FederationResponse, OutboundError> {
        let auth = sign_request(
            &self.identity.server_name,
            destination,
            method.as_str(),
            path_and_query,
            content,
            &self.identity.key,
        )?;
        self.send(
            destination,
            method,
            path_and_query,
            content,
            Some(auth.to_string()),
        )
        .await
    }

    /// Fetches a server's key document, which needs no authentication, and insists on 200.
    pub async fn fetch_key_document(&self, server: &ServerName) -> Result<Value, OutboundError> {
        let response = self.send(server, Method::GET, KEY_PATH, None, None).await?;
        if response.status != 200 {
            return Err(OutboundError::Status {
                server: server.to_string(),
                status: response.status,
                body: response.body,
            });
        }
        Ok(response.body)
    }

    async fn send(
        &self,
        server: &ServerName,
        method: Method,
        path_and_query: &str,
        content: Option<&Value>,
        authorization: Option<String>,
    ) -> Result<FederationResponse, OutboundError> {
        self.acl.check(server)?;
        let destination = self.resolve(server).await;
        self.check_literal(&destination)?;
        let url = format!("{}{path_and_query}", destination.base_url(self.scheme));
        let mut request = self.http.request(method, url);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        if let Some(content) = content {
            request = request.json(content);
        }
        let response = request.send().await.map_err(|e| http_error(server, e))?;
        let status = response.status().as_u16();
        let body = self
            .read_capped(server, response, self.max_response_bytes)
            .await?;
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|_| OutboundError::NotJson {
                server: server.to_string(),
            })?
        };
        Ok(FederationResponse { status, body })
    }

    /// Where to send requests for `server`: its well-known delegation if it needs and has one,
    /// else its own host and port ("Resolving server names"; errors fall back, as the spec says).
    /// Answers are cached (see [`confab_federation::discovery`]).
    pub async fn resolve(&self, server: &ServerName) -> Destination {
        if !needs_well_known(server) {
            return direct_destination(server);
        }
        let delegated = match self.well_known.get(server, Instant::now()) {
            Some(cached) => cached,
            None => {
                let (delegated, ttl) = match self.well_known_lookup(server).await {
                    Ok(found) => found,
                    Err((reason, ttl)) => {
                        tracing::debug!(%server, %reason, "no usable well-known; connecting directly");
                        (None, ttl)
                    }
                };
                self.well_known
                    .insert(server, delegated.clone(), ttl, Instant::now());
                delegated
            }
        };
        direct_destination(delegated.as_ref().unwrap_or(server))
    }

    /// Fetches `server`'s well-known document: the delegated name and how long to keep it, or
    /// why there is none and how long to keep that answer.
    async fn well_known_lookup(
        &self,
        server: &ServerName,
    ) -> Result<(Option<ServerName>, Duration), (String, Duration)> {
        let url = format!("{}://{}{WELL_KNOWN_PATH}", self.scheme, server.host());
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| (http_error(server, e).to_string(), WELL_KNOWN_FAILURE_TTL))?;
        let status = response.status();
        if status.is_server_error() {
            return Err((format!("status {status}"), WELL_KNOWN_FAILURE_TTL));
        }
        if !status.is_success() {
            return Err((format!("status {status}"), WELL_KNOWN_NEGATIVE_TTL));
        }
        let ttl = well_known_ttl(
            response
                .headers()
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        let body = self
            .read_capped(server, response, MAX_WELL_KNOWN_BYTES)
            .await
            .map_err(|e| (e.to_string(), WELL_KNOWN_FAILURE_TTL))?;
        let delegated =
            parse_well_known(&body).map_err(|e| (e.to_string(), WELL_KNOWN_NEGATIVE_TTL))?;
        Ok((Some(delegated), ttl))
    }

    /// reqwest does not resolve IP literals, so the guarded resolver never sees them.
    fn check_literal(&self, destination: &Destination) -> Result<(), PolicyError> {
        match destination.ip() {
            Some(ip) => check_address(ip, self.allow_private),
            None => Ok(()),
        }
    }

    async fn read_capped(
        &self,
        server: &ServerName,
        mut response: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, OutboundError> {
        let too_large = || OutboundError::TooLarge {
            server: server.to_string(),
            limit,
        };
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| http_error(server, e))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

impl KeyFetcher for FederationClient {
    type Error = OutboundError;

    fn fetch_server_keys(
        &self,
        server: &ServerName,
    ) -> impl Future<Output = Result<Value, OutboundError>> + Send {
        let (client, server) = (self.clone(), server.clone());
        async move { client.fetch_key_document(&server).await }
    }
}

/// A transport error, or the policy error our resolver raised inside it.
fn http_error(server: &ServerName, error: reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(err) = source {
        if let Some(policy) = err.downcast_ref::<PolicyError>() {
            return OutboundError::Policy(policy.clone());
        }
        source = err.source();
    }
    OutboundError::Http {
        server: server.to_string(),
        source: error,
    }
}

/// Resolves host names with the system resolver and keeps only the addresses federation may
/// connect to; reqwest then connects to exactly those.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match check_address(addr.ip(), allow_private) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            match refused {
                // `into`, not `Box::new`: a box inside the box would hide the type from `http_error`.
                Some(refused) if allowed.is_empty() => Err(refused.into()),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}
