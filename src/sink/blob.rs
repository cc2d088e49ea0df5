//! Block blob upload (the one place in `sink` that does I/O).
//!
//! Why it looks like this:
//! - A blob is visible only when complete (guarantee 2): rows are staged as uncommitted blocks
//!   (Put Block) and made visible by one Put Block List at [`BlobWriter::finish`]. A crash before
//!   that leaves nothing visible; the service drops uncommitted blocks after a week.
//! - Re-running a window writes the same bytes under the same name (guarantee 4): block IDs are
//!   the base64 of a fixed-width block index, so a re-run stages the same IDs and the commit
//!   replaces the blob whole.
//! - Memory stays flat (guarantee 6): the writer holds at most the block being filled plus one
//!   block in flight; block N uploads on the runtime while the encoder fills block N+1.
//! - Transient failures (5xx, 408, 429, connection errors, timeouts) are retried here, with
//!   exponential backoff and jitter, a bounded number of times ([`RetryPolicy`]); the SDK's own
//!   retry policy is switched off so there is one place that decides and tests prove it.
//!   Definite failures (other 4xx) come back at once as [`SinkError::Http`] with the status and
//!   the service's error code.
//! - Each block carries a `Content-MD5`, so the service rejects a block corrupted on the way.
//! - Auth: the official `azure_storage_blob` client takes only Entra ID tokens; account-key
//!   connection strings and Azurite go through our Shared Key policy ([`super::sharedkey`]).
//!   The API version is pinned ([`API_VERSION`]) because the SDK's default can be newer than
//!   Azurite (and some sovereign clouds) accept.
//! - No error or log line carries the account key: only account names, URLs without query
//!   strings, status codes and the service's error code and message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RequestContent, RetryOptions, Url};
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockOptions,
    BlockBlobClientStageBlockResultHeaders, BlockLookupList,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions, BlockBlobClient};
use bytes::Bytes;
use futures::TryStreamExt as _;
use md5::{Digest as _, Md5};
use tokio::task::JoinHandle;

use super::sharedkey::{SharedKey, SharedKeyPolicy};
use super::SinkError;
use crate::config::StorageSettings;

/// The `x-ms-version` every request sends. 2025-11-05 is served by Azure Storage and accepted
/// by Azurite 3.35 and later; the SDK's default (2026-04-06 in azure_storage_blob 1.1) is
/// rejected by older Azurite releases unless they run with `--skipApiVersionCheck`.
pub const API_VERSION: &str = "2025-11-05";

/// Azurite's well-known development account (public, documented by Microsoft).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The well-known key of [`DEV_ACCOUNT`]; not a secret.
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEV_BLOB_PORT: u16 = 10000;

/// The service's limit of blocks per blob.
pub const MAX_BLOCKS: u32 = 50_000;
/// The service's largest block (4000 MiB); larger `block_size` values are clamped.
pub const MAX_BLOCK_SIZE: usize = 4000 * 1024 * 1024;

/// Room reserved past `block_size` in the block being filled. An encoder appends whole rows,
/// so the buffer runs past `block_size` by up to one row before it is split; without this
/// headroom that row would make the `Vec` double its capacity and copy the whole block, once
/// per block. Rows longer than this still work (the `Vec` grows as usual).
const ROW_HEADROOM: usize = 64 * 1024;

/// The content type of committed blobs.
pub const CONTENT_TYPE: &str = "text/csv";

/// How transient failures are retried. Every request is tried at most `max_tries` times;
/// the wait before try `n + 1` is `min(initial_delay * 2^(n-1), max_delay)` scaled by a random
/// factor in [0.5, 1.0] (jitter, so many writers do not retry in step). Each try is cut off
/// after `try_timeout`, which counts as a transient failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_tries: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub try_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries, 0.5 s doubling up to 8 s (at most ~7.5 s of waiting), 120 s per try (a 4 MiB
    /// block at 35 KiB/s still fits).
    fn default() -> Self {
        RetryPolicy {
            max_tries: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            try_timeout: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before try `attempt + 1` (`attempt` counts from 1), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }

    /// Runs `op` until it succeeds, fails definitely, or `max_tries` is used up.
    async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        target: &str,
        mut op: F,
    ) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkError>>,
    {
        let max_tries = self.max_tries.max(1);
        let mut attempt = 1;
        loop {
            let result = match tokio::time::timeout(self.try_timeout, op()).await {
                Ok(r) => r,
                Err(_) => Err(SinkError::Transport {
                    operation,
                    target: target.to_string(),
                    message: format!("no answer within {:?}", self.try_timeout),
                }),
            };
            match result {
                Err(e) if e.is_transient() && attempt < max_tries => {
                    let jitter: f64 = rand::random_range(0.5..=1.0);
                    let wait = self.backoff(attempt).mul_f64(jitter);
                    tracing::warn!(
                        operation,
                        target,
                        attempt,
                        max_tries,
                        wait_ms = wait.as_millis() as u64,
                        error = %e,
                        "transient blob storage failure, retrying"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Where to connect and how to authenticate, parsed from the settings.
#[derive(Debug, Clone)]
pub(crate) enum Account {
    SharedKey {
        endpoint: Url,
        key: SharedKey,
    },
    Entra {
        endpoint: Url,
        client_id: Option<String>,
    },
}

impl Account {
    pub(crate) fn endpoint(&self) -> &Url {
        match self {
            Account::SharedKey { endpoint, .. } | Account::Entra { endpoint, .. } => endpoint,
        }
    }
}

fn config_err(msg: impl Into<String>) -> SinkError {
    SinkError::Config(msg.into())
}

/// Parses an account-key or development-storage connection string. Recognised keys
/// (case-insensitive): `UseDevelopmentStorage`, `DevelopmentStorageProxyUri`,
/// `DefaultEndpointsProtocol`, `AccountName`, `AccountKey`, `EndpointSuffix`, `BlobEndpoint`;
/// others (`QueueEndpoint`, …) are ignored. With `UseDevelopmentStorage=true` the account is
/// Azurite's `devstoreaccount1` and the endpoint `http://127.0.0.1:10000/devstoreaccount1`,
/// unless `BlobEndpoint` is given or `DevelopmentStorageProxyUri` names another host (its port,
/// when present, replaces 10000 so tests can use a free port). Errors name the missing or bad
/// part, never a value.
pub(crate) fn parse_connection_string(s: &str) -> Result<Account, SinkError> {
    let mut parts: HashMap<String, String> = HashMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| config_err("storage connection string: every part must be Key=Value"))?;
        parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let get = |k: &str| parts.get(k).map(String::as_str).filter(|v| !v.is_empty());

    if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        let endpoint = match (get("blobendpoint"), get("developmentstorageproxyuri")) {
            (Some(ep), _) => normalise_endpoint(ep)?,
            (None, Some(proxy)) => {
                let proxy = Url::parse(proxy).map_err(|_| {
                    config_err("storage connection string: DevelopmentStorageProxyUri is not a URL")
                })?;
                let host = proxy.host_str().ok_or_else(|| {
                    config_err("storage connection string: DevelopmentStorageProxyUri has no host")
                })?;
                let port = proxy.port().unwrap_or(DEV_BLOB_PORT);
                normalise_endpoint(&format!("{}://{host}:{port}/{DEV_ACCOUNT}", proxy.scheme()))?
            }
            (None, None) => {
                normalise_endpoint(&format!("http://127.0.0.1:{DEV_BLOB_PORT}/{DEV_ACCOUNT}"))?
            }
        };
        let key = SharedKey::new(DEV_ACCOUNT, DEV_ACCOUNT_KEY).map_err(config_err)?;
        return Ok(Account::SharedKey { endpoint, key });
    }

    let account = get("accountname")
        .ok_or_else(|| config_err("storage connection string: AccountName is missing"))?;
    let key = match get("accountkey") {
        Some(key) => key,
        None if get("sharedaccesssignature").is_some() => {
            return Err(config_err(
                "storage connection string: SharedAccessSignature is not supported; use an \
                 AccountKey connection string or CDC_STORAGE_ACCOUNT_URL (Entra ID)",
            ))
        }
        None => {
            return Err(config_err(
                "storage connection string: AccountKey is missing",
            ))
        }
    };
    let key = SharedKey::new(account, key)
        .map_err(|e| config_err(format!("storage connection string: {e}")))?;
    let endpoint = match get("blobendpoint") {
        Some(ep) => normalise_endpoint(ep)?,
        None => {
            let protocol = get("defaultendpointsprotocol").unwrap_or("https");
            if !matches!(protocol, "http" | "https") {
                return Err(config_err(
                    "storage connection string: DefaultEndpointsProtocol must be http or https",
                ));
            }
            let suffix = get("endpointsuffix").unwrap_or("core.windows.net");
            normalise_endpoint(&format!("{protocol}://{account}.blob.{suffix}"))?
        }
    };
    Ok(Account::SharedKey { endpoint, key })
}

/// Parses a blob endpoint and drops trailing `/`s (the SDK appends path segments, and an
/// empty last segment would put `//` into every blob path).
pub(crate) fn normalise_endpoint(endpoint: &str) -> Result<Url, SinkError> {
    let mut url = Url::parse(endpoint.trim())
        .map_err(|e| config_err(format!("blob endpoint {endpoint:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(config_err(format!(
            "blob endpoint {endpoint:?} must be an http(s) URL"
        )));
    }
    if url.query().is_some() {
        // A query would be a SAS token: never echo it.
        return Err(config_err(
            "blob endpoint must not carry a query string (SAS tokens are not supported)",
        ));
    }
    url.set_fragment(None);
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

/// Container names: 3–63 characters, lower-case letters, digits and single hyphens, starting
/// and ending with a letter or digit.
pub(crate) fn validate_container_name(name: &str) -> Result<(), SinkError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(config_err(format!(
            "container name {name:?} is invalid: use 3-63 lower-case letters, digits and single \
             hyphens, starting and ending with a letter or digit"
        )))
    }
}

/// Metadata names must be C# identifiers (letters, digits, `_`, not starting with a digit) and
/// values printable ASCII (they travel as HTTP headers).
pub(crate) fn validate_metadata(metadata: &[(String, String)]) -> Result<(), SinkError> {
    for (k, v) in metadata {
        let mut chars = k.chars();
        let ident = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(config_err(format!(
                "blob metadata name {k:?} is not a C# identifier"
            )));
        }
        if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(config_err(format!(
                "blob metadata {k:?} has a value that is not printable ASCII"
            )));
        }
    }
    Ok(())
}

/// The block ID of block `index`: the same for the same index on every run.
pub fn block_id(index: u32) -> Vec<u8> {
    format!("{index:032}").into_bytes()
}

/// Maps an SDK error. Only the status, the service's error code and its `<Message>` are kept
/// (never headers or the request), so nothing secret can leak.
fn map_err(operation: &'static str, target: &str, e: azure_core::Error) -> SinkError {
    match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let code = error_code
                .clone()
                .unwrap_or_else(|| "no error code".to_string());
            let detail = raw_response
                .as_ref()
                .and_then(|r| service_message(r.body().as_ref()))
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            SinkError::Http {
                operation,
                target: target.to_string(),
                status: u16::from(*status),
                message: format!("{code}{detail}"),
            }
        }
        ErrorKind::Connection | ErrorKind::Io => SinkError::Transport {
            operation,
            target: target.to_string(),
            message: error_chain(&e),
        },
        ErrorKind::Credential => SinkError::Other(format!(
            "blob storage request {operation} on {target}: could not get an Entra ID token: {}",
            error_chain(&e)
        )),
        _ => SinkError::Other(format!(
            "blob storage request {operation} on {target} failed: {}",
            error_chain(&e)
        )),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The first line of `<Message>` in a storage error body.
fn service_message(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Message>")? + "<Message>".len();
    let end = text[start..].find("</Message>")? + start;
    let line = text[start..end].lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// Size and metadata of a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    pub metadata: BTreeMap<String, String>,
}

/// What [`BlobWriter::finish`] committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSummary {
    pub name: String,
    pub bytes: u64,
    pub blocks: u32,
}

/// One container of one storage account. Cheap to clone (the HTTP pipeline is shared).
#[derive(Clone)]
pub struct BlobTarget {
    container: Arc<BlobContainerClient>,
    container_name: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for BlobTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobTarget")
            .field("container_url", &self.container.url().as_str())
            .field("retry", &self.retry)
            .finish()
    }
}

impl BlobTarget {
    /// Builds the client; no network. For [`StorageSettings::AccountUrl`] the token comes from
    /// a managed identity when `client_id` is set or `IDENTITY_ENDPOINT` is in the environment
    /// (App Service / Functions), else from the developer tools (Azure CLI, azd).
    pub fn new(settings: &StorageSettings, container: &str) -> Result<BlobTarget, SinkError> {
        validate_container_name(container)?;
        let account = match settings {
            StorageSettings::ConnectionString(s) => parse_connection_string(s.expose())?,
            StorageSettings::AccountUrl { url, client_id } => Account::Entra {
                endpoint: normalise_endpoint(url)?,
                client_id: client_id.clone(),
            },
        };
        Self::from_account(&account, container)
    }

    pub(crate) fn from_account(
        account: &Account,
        container: &str,
    ) -> Result<BlobTarget, SinkError> {
        let mut url = account.endpoint().clone();
        url.path_segments_mut()
            .map_err(|_| config_err("blob endpoint cannot take a path"))?
            .pop_if_empty()
            .push(container);

        let mut client_options = ClientOptions {
            retry: RetryOptions::none(),
            ..Default::default()
        };
        let credential: Option<Arc<dyn TokenCredential>> = match account {
            Account::SharedKey { key, .. } => {
                client_options
                    .per_try_policies
                    .push(Arc::new(SharedKeyPolicy::new(key.clone())));
                None
            }
            Account::Entra { client_id, .. } => Some(entra_credential(client_id.as_deref())?),
        };
        let options = BlobContainerClientOptions {
            client_options,
            version: API_VERSION.to_string(),
        };
        let client = BlobContainerClient::new(url, credential, Some(options))
            .map_err(|e| config_err(format!("blob container client: {e}")))?;
        Ok(BlobTarget {
            container: Arc::new(client),
            container_name: container.to_string(),
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy (tests shorten it; operators keep the default).
    pub fn with_retry(mut self, retry: RetryPolicy) -> BlobTarget {
        self.retry = retry;
        self
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The container URL (no secrets in it).
    pub fn url(&self) -> &Url {
        self.container.url()
    }

    fn target(&self, blob: &str) -> String {
        format!("{}/{}", self.container_name, blob)
    }

    /// Creates the container if it is missing; "already exists" is success.
    pub async fn ensure_container(&self) -> Result<(), SinkError> {
        let target = self.container_name.clone();
        let result = self
            .retry
            .run("create container", &target, || async {
                self.container
                    .create(None)
                    .await
                    .map(|_| ())
                    .map_err(|e| map_err("create container", &target, e))
            })
            .await;
        match result {
            Err(SinkError::Http {
                status: 409,
                message,
                ..
            }) if message.starts_with("ContainerAlreadyExists") => Ok(()),
            other => {
                if other.is_ok() {
                    tracing::info!(container = %self.container_name, "created blob container");
                }
                other
            }
        }
    }

    /// A writer that stages blocks of `block_size` bytes and commits at `finish`.
    pub fn writer(
        &self,
        blob_name: &str,
        metadata: Vec<(String, String)>,
        block_size: usize,
    ) -> BlobWriter {
        let block_size = block_size.clamp(1, MAX_BLOCK_SIZE);
        BlobWriter {
            client: Arc::new(self.container.blob_client(blob_name).block_blob_client()),
            name: blob_name.to_string(),
            target: self.target(blob_name),
            metadata,
            block_size,
            retry: self.retry.clone(),
            buf: Vec::new(),
            in_flight: None,
            blocks: 0,
            staged_bytes: 0,
            content_md5: Md5::new(),
            tamper_next_md5: false,
            create_only: false,
        }
    }

    /// The committed content of a blob; `None` when it (or the container) does not exist.
    pub async fn read(&self, blob_name: &str) -> Result<Option<Bytes>, SinkError> {
        let target = self.target(blob_name);
        let client = self.container.blob_client(blob_name);
        let result = self
            .retry
            .run("download", &target, || async {
                let rsp = client
                    .download(None)
                    .await
                    .map_err(|e| map_err("download", &target, e))?;
                // The whole blob's MD5 (ranged first response), else the response's own.
                let (blob_md5, first_md5, first_len) = (
                    rsp.properties.blob_content_md5.clone(),
                    rsp.properties.content_md5.clone(),
                    rsp.properties.content_length,
                );
                let body = rsp
                    .body
                    .collect()
                    .await
                    .map_err(|e| map_err("download", &target, e))?;
                // Blobs we commit carry their MD5: a download that does not match it was
                // corrupted on the way, and another try may get it right.
                let expected_md5 = blob_md5.or_else(|| {
                    first_md5.filter(|_| first_len == Some(body.len() as u64))
                });
                if let Some(expected) = expected_md5 {
                    if Md5::digest(&body).as_slice() != expected.as_slice() {
                        return Err(SinkError::Transport {
                            operation: "download",
                            target: target.clone(),
                            message: "the content does not match the blob's Content-MD5 (corrupted on the way)".to_string(),
                        });
                    }
                }
                Ok(body)
            })
            .await;
        not_found_is_none(result)
    }

    /// Size and metadata of a committed blob; `None` when it does not exist.
    pub async fn properties(&self, blob_name: &str) -> Result<Option<BlobInfo>, SinkError> {
        let target = self.target(blob_name);
        let client = self.container.blob_client(blob_name);
        let result = self
            .retry
            .run("get properties", &target, || async {
                let rsp = client
                    .get_properties(None)
                    .await
                    .map_err(|e| map_err("get properties", &target, e))?;
                let size = rsp
                    .content_length()
                    .map_err(|e| map_err("get properties", &target, e))?
                    .unwrap_or(0);
                let metadata = rsp
                    .metadata()
                    .map_err(|e| map_err("get properties", &target, e))?
                    .into_iter()
                    .collect();
                Ok(BlobInfo { size, metadata })
            })
            .await;
        not_found_is_none(result)
    }

    /// Names of the committed blobs whose names start with `prefix`, in service order
    /// (lexicographic). Uncommitted (staged-only) blobs are not listed.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        Ok(self
            .list_etags(prefix)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Like [`list`](Self::list), with each blob's ETag. Every commit gives a blob a new
    /// ETag, even when it writes the same bytes, so a caller comparing listings sees every
    /// re-commit (the fault tests check that each one is byte-identical).
    pub async fn list_etags(&self, prefix: &str) -> Result<Vec<(String, String)>, SinkError> {
        let target = self.target(prefix);
        self.retry
            .run("list blobs", &target, || async {
                let options = BlobContainerClientListBlobsOptions {
                    prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
                    ..Default::default()
                };
                let mut pages = self
                    .container
                    .list_blobs(Some(options))
                    .map_err(|e| map_err("list blobs", &target, e))?
                    .into_pages();
                let mut names = Vec::new();
                while let Some(page) = pages
                    .try_next()
                    .await
                    .map_err(|e| map_err("list blobs", &target, e))?
                {
                    let page = page
                        .into_model()
                        .map_err(|e| map_err("list blobs", &target, e))?;
                    names.extend(page.blob_items.into_iter().filter_map(|b| {
                        let etag = b
                            .properties
                            .and_then(|p| p.etag)
                            .map(|e| e.to_string())
                            .unwrap_or_default();
                        b.name.map(|name| (name, etag))
                    }));
                }
                Ok(names)
            })
            .await
    }

    /// Checks that the account answers and accepts our credentials: reads the container's
    /// properties. A missing container is fine (`ensure_container` creates it); an auth,
    /// network or DNS failure is not.
    pub async fn probe(&self) -> Result<(), SinkError> {
        let target = self.container_name.clone();
        let result = self
            .retry
            .run("get container properties", &target, || async {
                self.container
                    .get_properties(None)
                    .await
                    .map(|_| ())
                    .map_err(|e| map_err("get container properties", &target, e))
            })
            .await;
        match result {
            Err(SinkError::Http {
                status: 404,
                message,
                ..
            }) if message.starts_with("ContainerNotFound") => Ok(()),
            other => other,
        }
    }
}

fn not_found_is_none<T>(result: Result<T, SinkError>) -> Result<Option<T>, SinkError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(SinkError::Http { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn entra_credential(client_id: Option<&str>) -> Result<Arc<dyn TokenCredential>, SinkError> {
    use azure_identity::{
        DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
        UserAssignedId,
    };
    let managed = client_id.is_some() || std::env::var_os("IDENTITY_ENDPOINT").is_some();
    if managed {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.map(|id| UserAssignedId::ClientId(id.to_string())),
            ..Default::default()
        };
        let cred = ManagedIdentityCredential::new(Some(options))
            .map_err(|e| config_err(format!("managed identity credential: {e}")))?;
        Ok(cred)
    } else {
        let cred = DeveloperToolsCredential::new(None)
            .map_err(|e| config_err(format!("developer tools credential: {e}")))?;
        Ok(cred)
    }
}

/// Streams one blob as blocks. Write with [`write`](Self::write), or fill
/// [`buffer`](Self::buffer) directly and call [`flush_full_blocks`](Self::flush_full_blocks);
/// nothing is visible until [`finish`](Self::finish). Dropping the writer without finishing
/// aborts the block in flight and commits nothing.
pub struct BlobWriter {
    client: Arc<BlockBlobClient>,
    name: String,
    target: String,
    metadata: Vec<(String, String)>,
    block_size: usize,
    retry: RetryPolicy,
    /// The block being filled (may run past `block_size` by what one caller write added).
    buf: Vec<u8>,
    /// The previous block's Put Block, running on the runtime.
    in_flight: Option<JoinHandle<Result<(), SinkError>>>,
    /// Blocks handed to Put Block so far (staged or in flight).
    blocks: u32,
    staged_bytes: u64,
    /// MD5 of every byte staged, committed as the blob's `Content-MD5` so that readers (and
    /// [`BlobTarget::read`]) can tell a corrupted download.
    content_md5: Md5,
    /// Test hook: send a wrong `Content-MD5` with the next block.
    tamper_next_md5: bool,
    /// Commit with `If-None-Match: *`: fail with 409 instead of replacing an existing blob.
    create_only: bool,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("blob", &self.target)
            .field("block_size", &self.block_size)
            .field("blocks", &self.blocks)
            .field("bytes", &self.bytes_written())
            .finish()
    }
}

impl BlobWriter {
    /// Appends `bytes`, staging a block each time `block_size` is reached.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), SinkError> {
        while !bytes.is_empty() {
            let room = self.block_size.saturating_sub(self.buf.len()).max(1);
            let take = room.min(bytes.len());
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.block_size + ROW_HEADROOM);
            }
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            self.flush_full_blocks().await?;
        }
        Ok(())
    }

    /// The pending block, for an encoder to write into; call
    /// [`flush_full_blocks`](Self::flush_full_blocks) after each row or so.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.block_size + ROW_HEADROOM);
        }
        &mut self.buf
    }

    /// Stages every full block in the buffer. Waits for the previous block first, so at most
    /// one block is in flight while the next one fills.
    pub async fn flush_full_blocks(&mut self) -> Result<(), SinkError> {
        while self.buf.len() >= self.block_size {
            // Wait before splitting, so the previous block is gone before the next buffer is
            // allocated: at most two blocks are ever held.
            self.wait_in_flight().await?;
            let rest = self.buf.split_off(self.block_size);
            let mut next = Vec::with_capacity((self.block_size + ROW_HEADROOM).max(rest.len()));
            next.extend_from_slice(&rest);
            drop(rest);
            let block = std::mem::replace(&mut self.buf, next);
            self.stage(Bytes::from(block)).await?;
        }
        Ok(())
    }

    /// Test hook: the next block is sent with a `Content-MD5` that does not match its bytes,
    /// as if it had been corrupted on the way, to prove the service rejects it.
    #[doc(hidden)]
    pub fn corrupt_next_block_in_transit(&mut self) {
        self.tamper_next_md5 = true;
    }

    /// Makes the commit create-only (`If-None-Match: *`): if the blob exists already, `finish`
    /// fails with [`SinkError::is_already_exists`] and the existing blob stays untouched.
    /// Used where two writers must not both win (full-load parts).
    pub fn create_only(&mut self) {
        self.create_only = true;
    }

    /// Sets (or replaces) a metadata entry before the commit, for what is known only at the
    /// end, such as the row count.
    pub fn set_metadata(&mut self, key: &str, value: String) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Blocks handed to Put Block so far (staged or in flight).
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    /// Bytes accepted so far (staged, in flight and buffered).
    pub fn bytes_written(&self) -> u64 {
        self.staged_bytes + self.buf.len() as u64
    }

    /// Stages what is left, waits for every block, then commits the block list with the
    /// metadata and content type `text/csv`. Only now does the blob become visible (or replace
    /// the previous version whole). An empty blob commits an empty block list.
    pub async fn finish(mut self) -> Result<BlobSummary, SinkError> {
        validate_metadata(&self.metadata)?;
        if !self.buf.is_empty() {
            let block = Bytes::from(std::mem::take(&mut self.buf));
            self.stage(block).await?;
        }
        self.wait_in_flight().await?;

        let ids: Vec<Vec<u8>> = (0..self.blocks).map(block_id).collect();
        let metadata: HashMap<String, String> = self.metadata.iter().cloned().collect();
        let content_md5 = std::mem::take(&mut self.content_md5).finalize().to_vec();
        let target = self.target.clone();
        let client = self.client.clone();
        let create_only = self.create_only;
        self.retry
            .run("put block list", &target, || {
                let list = BlockLookupList {
                    latest: Some(ids.clone()),
                    ..Default::default()
                };
                let options = BlockBlobClientCommitBlockListOptions {
                    blob_content_type: Some(CONTENT_TYPE.to_string()),
                    blob_content_md5: Some(content_md5.clone()),
                    metadata: Some(metadata.clone()),
                    if_none_match: create_only.then(|| azure_core::http::Etag::from("*")),
                    ..Default::default()
                };
                let client = client.clone();
                let target = target.clone();
                async move {
                    let content: RequestContent<BlockLookupList, _> = list
                        .try_into()
                        .map_err(|e| map_err("put block list", &target, e))?;
                    client
                        .commit_block_list(content, Some(options))
                        .await
                        .map(|_| ())
                        .map_err(|e| map_err("put block list", &target, e))
                }
            })
            .await?;
        tracing::debug!(
            blob = %self.target,
            blocks = self.blocks,
            bytes = self.staged_bytes,
            "committed block list"
        );
        Ok(BlobSummary {
            name: self.name.clone(),
            bytes: self.staged_bytes,
            blocks: self.blocks,
        })
    }

    async fn wait_in_flight(&mut self) -> Result<(), SinkError> {
        if let Some(handle) = self.in_flight.take() {
            handle.await.map_err(|e| {
                SinkError::Other(format!("staging a block of {} failed: {e}", self.target))
            })??;
        }
        Ok(())
    }

    /// Waits for the block in flight, then starts staging `block` in the background.
    async fn stage(&mut self, block: Bytes) -> Result<(), SinkError> {
        self.wait_in_flight().await?;
        // Checked per block (a handful of keys) so a bad name fails before the upload.
        validate_metadata(&self.metadata)?;
        if self.blocks >= MAX_BLOCKS {
            return Err(config_err(format!(
                "blob {} would need more than {MAX_BLOCKS} blocks of {} bytes; raise the block size",
                self.target, self.block_size
            )));
        }
        let index = self.blocks;
        self.blocks += 1;
        self.staged_bytes += block.len() as u64;
        self.content_md5.update(&block);
        let client = self.client.clone();
        let retry = self.retry.clone();
        let target = self.target.clone();
        let tamper = std::mem::take(&mut self.tamper_next_md5);
        self.in_flight = Some(tokio::spawn(async move {
            stage_block(&client, &retry, &target, index, block, tamper).await
        }));
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(handle) = self.in_flight.take() {
            handle.abort();
        }
    }
}

/// Put Block with a `Content-MD5`, retried. Also checks the MD5 the service echoes, when it
/// echoes one.
async fn stage_block(
    client: &BlockBlobClient,
    retry: &RetryPolicy,
    target: &str,
    index: u32,
    block: Bytes,
    tamper: bool,
) -> Result<(), SinkError> {
    let mut md5 = Md5::digest(&block).to_vec();
    if tamper {
        md5[0] ^= 0xff;
    }
    let id = block_id(index);
    let len = block.len() as u64;
    retry
        .run("put block", target, || async {
            let options = BlockBlobClientStageBlockOptions {
                transactional_content_md5: Some(md5.clone()),
                ..Default::default()
            };
            let rsp = client
                .stage_block(&id, len, block.clone().into(), Some(options))
                .await
                .map_err(|e| map_err("put block", target, e))?;
            if let Ok(Some(echoed)) = rsp.content_md5() {
                if echoed != md5 {
                    // The service checked our Content-MD5 (a mismatch is a 400), so the
                    // answer was altered on the way back: transient, stage the block again.
                    return Err(SinkError::Transport {
                        operation: "put block",
                        target: target.to_string(),
                        message: format!(
                            "block {index}: the service acknowledged a different MD5 (reply corrupted on the way)"
                        ),
                    });
                }
            }
            Ok(())
        })
        .await?;
    tracing::debug!(blob = %target, block = index, bytes = len, "staged block");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn endpoint_and_account(cs: &str) -> Result<(String, String), SinkError> {
        match parse_connection_string(cs)? {
            Account::SharedKey { endpoint, key } => {
                Ok((endpoint.to_string(), key.account().to_string()))
            }
            Account::Entra { .. } => unreachable!(),
        }
    }

    #[test]
    fn connection_strings() {
        let key = "c2VjcmV0LWtleQ==";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "UseDevelopmentStorage=true".into(),
                "http://127.0.0.1:10000/devstoreaccount1",
                DEV_ACCOUNT,
            ),
            (
                "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://azurite:12345".into(),
                "http://azurite:12345/devstoreaccount1",
                DEV_ACCOUNT,
            ),
            (
                "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://azurite".into(),
                "http://azurite:10000/devstoreaccount1",
                DEV_ACCOUNT,
            ),
            (
                "usedevelopmentstorage=TRUE;BlobEndpoint=http://127.0.0.1:4242/devstoreaccount1/"
                    .into(),
                "http://127.0.0.1:4242/devstoreaccount1",
                DEV_ACCOUNT,
            ),
            (
                format!("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};EndpointSuffix=core.windows.net"),
                "https://acct.blob.core.windows.net/",
                "acct",
            ),
            (
                format!("AccountName=acct;AccountKey={key};EndpointSuffix=core.chinacloudapi.cn;"),
                "https://acct.blob.core.chinacloudapi.cn/",
                "acct",
            ),
            (
                format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint=http://127.0.0.1:5555/devstoreaccount1;"),
                "http://127.0.0.1:5555/devstoreaccount1",
                "devstoreaccount1",
            ),
            (
                format!(" BlobEndpoint = https://x.example/ ; AccountName = a ; AccountKey = {key} "),
                "https://x.example/",
                "a",
            ),
        ];
        for (cs, want_endpoint, want_account) in cases {
            let (endpoint, account) = endpoint_and_account(&cs).unwrap();
            assert_eq!(endpoint, want_endpoint, "{cs}");
            assert_eq!(account, want_account, "{cs}");
        }
    }

    #[test]
    fn bad_connection_strings_name_the_part_not_the_value() {
        let secret = "c2VjcmV0LWtleQ";
        let cases = [
            (format!("AccountKey={secret}=="), "AccountName"),
            ("AccountName=a".to_string(), "AccountKey"),
            (format!("AccountName=a;AccountKey=*{secret}*"), "base64"),
            (
                format!("AccountName=a;SharedAccessSignature=sig{secret}"),
                "SharedAccessSignature",
            ),
            (format!("AccountName=a;AccountKey{secret}"), "Key=Value"),
            (
                format!("AccountName=a;AccountKey={secret}==;BlobEndpoint=ftp://x"),
                "http",
            ),
            (
                format!("AccountName=a;AccountKey={secret}==;DefaultEndpointsProtocol=ftp"),
                "DefaultEndpointsProtocol",
            ),
        ];
        for (cs, want) in cases {
            let err = parse_connection_string(&cs).unwrap_err().to_string();
            assert!(err.contains(want), "{cs}: {err}");
            assert!(!err.contains(secret), "{cs}: {err}");
            assert!(matches!(
                parse_connection_string(&cs),
                Err(SinkError::Config(_))
            ));
        }
    }

    #[test]
    fn container_url_has_no_double_slash() {
        for endpoint in [
            "http://127.0.0.1:10000/devstoreaccount1",
            "http://127.0.0.1:10000/devstoreaccount1/",
            "http://127.0.0.1:10000/devstoreaccount1//",
        ] {
            let cs = format!("UseDevelopmentStorage=true;BlobEndpoint={endpoint}");
            let target =
                BlobTarget::new(&StorageSettings::ConnectionString(Secret::new(cs)), "raw")
                    .unwrap();
            assert_eq!(
                target.url().as_str(),
                "http://127.0.0.1:10000/devstoreaccount1/raw"
            );
        }
        let target = BlobTarget::new(
            &StorageSettings::ConnectionString(Secret::new(format!(
                "AccountName=acct;AccountKey={DEV_ACCOUNT_KEY}"
            ))),
            "raw",
        )
        .unwrap();
        assert_eq!(
            target.url().as_str(),
            "https://acct.blob.core.windows.net/raw"
        );
        let dbg = format!("{target:?}");
        assert!(!dbg.contains(DEV_ACCOUNT_KEY), "{dbg}");
    }

    #[test]
    fn entra_needs_https_and_builds_without_network() {
        let ok = BlobTarget::new(
            &StorageSettings::AccountUrl {
                url: "https://acct.blob.core.windows.net/".into(),
                client_id: Some("00000000-0000-0000-0000-000000000000".into()),
            },
            "raw",
        )
        .unwrap();
        assert_eq!(ok.url().as_str(), "https://acct.blob.core.windows.net/raw");
        let err = BlobTarget::new(
            &StorageSettings::AccountUrl {
                url: "http://acct.blob.core.windows.net".into(),
                client_id: Some("x".into()),
            },
            "raw",
        )
        .unwrap_err();
        assert!(matches!(err, SinkError::Config(_)), "{err}");
    }

    #[test]
    fn container_names() {
        for ok in ["raw", "cdc-out-1", "a1b", &"a".repeat(63)] {
            assert!(validate_container_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Raw",
            "-raw",
            "raw-",
            "r--w",
            "r_w",
            &"a".repeat(64),
            "raw/x",
        ] {
            assert!(validate_container_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_names_and_values() {
        let m = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        for ok in [
            m("table", "dbo.customers"),
            m("from_lsn", "0x0000002A000000100003"),
            m("_x1", ""),
        ] {
            assert!(validate_metadata(&ok).is_ok(), "{ok:?}");
        }
        for bad in [
            m("from-lsn", "x"),
            m("1st", "x"),
            m("", "x"),
            m("t", "é"),
            m("t", "a\nb"),
        ] {
            assert!(validate_metadata(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn block_ids_fixed_width_and_stable() {
        assert_eq!(block_id(0), b"00000000000000000000000000000000".to_vec());
        assert_eq!(block_id(49_999).len(), 32);
        assert_eq!(block_id(7), block_id(7));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_tries: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            try_timeout: Duration::from_secs(1),
        };
        let got: Vec<u128> = (1..=6).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(100), Duration::from_millis(1000));
    }

    #[tokio::test]
    async fn retry_runs_bounded_and_stops_on_definite_errors() {
        let p = RetryPolicy {
            max_tries: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            try_timeout: Duration::from_millis(200),
        };
        let transient = || SinkError::Http {
            operation: "t",
            target: "c/b".into(),
            status: 503,
            message: "ServerBusy".into(),
        };
        let definite = || SinkError::Http {
            operation: "t",
            target: "c/b".into(),
            status: 403,
            message: "AuthenticationFailed".into(),
        };
        let cases: Vec<(Vec<SinkError>, u32, bool)> = vec![
            (vec![transient(), transient(), transient()], 3, false),
            (vec![transient()], 2, true),
            (vec![definite()], 1, false),
            (vec![], 1, true),
        ];
        for (failures, want_calls, want_ok) in cases {
            let failures = std::sync::Mutex::new(failures.into_iter());
            let calls = std::sync::atomic::AtomicU32::new(0);
            let result = p
                .run("t", "c/b", || {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let next = failures.lock().unwrap().next();
                    async move { next.map_or(Ok(()), Err) }
                })
                .await;
            assert_eq!(calls.into_inner(), want_calls);
            assert_eq!(result.is_ok(), want_ok);
        }
        // A try that hangs is cut off and counts as transient.
        let start = std::time::Instant::now();
        let result: Result<(), SinkError> = p.run("t", "c/b", std::future::pending).await;
        assert!(matches!(result, Err(SinkError::Transport { .. })));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn service_message_first_line() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:1</Message></Error>";
        assert_eq!(
            service_message(body).as_deref(),
            Some("Server failed to authenticate the request.")
        );
        assert_eq!(service_message(b""), None);
    }
}
