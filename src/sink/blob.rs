//! The container: creating it, probing it, reading and listing what was committed, and handing
//! out [`BlobWriter`]s. The official `azure_storage_blob` client only takes Entra ID tokens, so
//! account keys and Azurite go through our Shared Key policy ([`super::sharedkey`]); the API
//! version is pinned ([`API_VERSION`]) because the SDK's default can be newer than Azurite (and
//! some sovereign clouds) accept. Reads check the Content-MD5 the writer commits, so a download
//! corrupted on the way is retried instead of returned. Errors and logs carry account names,
//! URLs without query strings, statuses and the service's codes, never the key.

use std::collections::BTreeMap;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, Url};
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use bytes::Bytes;
use futures::TryStreamExt as _;
use md5::{Digest as _, Md5};

use super::errors::{map_err, CONTAINER_ALREADY_EXISTS, CONTAINER_NOT_FOUND};
use super::retry::RetryPolicy;
use super::sharedkey::{SharedKey, SharedKeyPolicy};
// The writer's items keep their old paths (`sink::blob::BlobWriter`), which the jobs name.
pub use super::writer::{
    block_id, block_id_in, BlobSummary, BlobWriter, BlockPrefix, CONTENT_TYPE,
    DEFAULT_BLOCKS_IN_FLIGHT, MAX_BLOCKS, MAX_BLOCKS_IN_FLIGHT, MAX_BLOCK_SIZE,
};
use super::SinkError;
use crate::config::{StorageAccount, StorageAuth};
use crate::naming::validate_container_name;

/// The `x-ms-version` every request sends. 2025-11-05 is served by Azure Storage and accepted
/// by Azurite 3.35 and later; the SDK's default (2026-04-06 in azure_storage_blob 1.1) is
/// rejected by older Azurite releases unless they run with `--skipApiVersionCheck`.
pub const API_VERSION: &str = "2025-11-05";

/// Size and metadata of a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    pub metadata: BTreeMap<String, String>,
    /// `Content-Type`: `text/csv` or `application/vnd.apache.parquet` for the copier's blobs.
    pub content_type: Option<String>,
}

/// One container of one storage account. Cheap to clone (the HTTP pipeline is shared).
#[derive(Clone)]
pub struct BlobTarget {
    container: Arc<BlobContainerClient>,
    container_name: String,
    retry: RetryPolicy,
    /// Put Blocks each writer keeps in flight (`CDC_UPLOAD_BLOCKS_IN_FLIGHT`).
    blocks_in_flight: usize,
}

impl std::fmt::Debug for BlobTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobTarget")
            .field("container_url", &self.container.url().as_str())
            .field("retry", &self.retry)
            .field("blocks_in_flight", &self.blocks_in_flight)
            .finish()
    }
}

impl BlobTarget {
    /// Builds the client for `container` of `account`; no network. Entra ID tokens come from
    /// [`crate::identity::credential`].
    pub fn new(account: &StorageAccount, container: &str) -> Result<BlobTarget, SinkError> {
        validate_container_name(container).map_err(|e| SinkError::Config(e.to_string()))?;
        let mut url = account.endpoint.clone();
        url.path_segments_mut()
            .map_err(|_| SinkError::Config("blob endpoint cannot take a path".to_string()))?
            .pop_if_empty()
            .push(container);

        let mut client_options = ClientOptions {
            retry: RetryOptions::none(),
            ..Default::default()
        };
        let credential: Option<Arc<dyn TokenCredential>> = match &account.auth {
            StorageAuth::SharedKey { account, key } => {
                client_options
                    .per_try_policies
                    .push(Arc::new(SharedKeyPolicy::new(SharedKey::new(
                        account,
                        key.clone(),
                    ))));
                None
            }
            StorageAuth::Entra { client_id } => Some(
                crate::identity::credential(client_id.as_deref()).map_err(|e| {
                    SinkError::Credential {
                        operation: "create credential",
                        target: container.to_string(),
                        source: Box::new(e),
                    }
                })?,
            ),
        };
        let options = BlobContainerClientOptions {
            client_options,
            version: API_VERSION.to_string(),
        };
        let client = BlobContainerClient::new(url, credential, Some(options)).map_err(|e| {
            SinkError::Sdk {
                operation: "create client",
                target: container.to_string(),
                source: Box::new(e),
            }
        })?;
        Ok(BlobTarget {
            container: Arc::new(client),
            container_name: container.to_string(),
            retry: RetryPolicy::default(),
            blocks_in_flight: DEFAULT_BLOCKS_IN_FLIGHT,
        })
    }

    /// Replaces the retry policy (tests shorten it; operators keep the default).
    pub fn with_retry(mut self, retry: RetryPolicy) -> BlobTarget {
        self.retry = retry;
        self
    }

    /// How many Put Blocks each writer keeps in flight (1 to [`MAX_BLOCKS_IN_FLIGHT`]; the
    /// default is [`DEFAULT_BLOCKS_IN_FLIGHT`]). A writer holds at most this plus one blocks.
    pub fn with_blocks_in_flight(mut self, blocks: usize) -> BlobTarget {
        self.blocks_in_flight = blocks.clamp(1, MAX_BLOCKS_IN_FLIGHT);
        self
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
            Err(e) if e.code() == Some(CONTAINER_ALREADY_EXISTS) => Ok(()),
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
        BlobWriter::new(
            self.container.blob_client(blob_name).block_blob_client(),
            blob_name,
            self.target(blob_name),
            metadata,
            (block_size, self.blocks_in_flight),
            self.retry.clone(),
        )
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
                        return Err(SinkError::transport(
                            "download",
                            &target,
                            "the content does not match the blob's Content-MD5 (corrupted on the way)"
                                .to_string(),
                        ));
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
                let content_type = rsp
                    .content_type()
                    .map_err(|e| map_err("get properties", &target, e))?;
                Ok(BlobInfo {
                    size,
                    metadata,
                    content_type,
                })
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
            Err(e) if e.code() == Some(CONTAINER_NOT_FOUND) => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEV_ACCOUNT_KEY;

    #[test]
    fn container_url_has_no_double_slash() {
        for (cs, want) in [
            (
                "UseDevelopmentStorage=true;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1//"
                    .to_string(),
                "http://127.0.0.1:10000/devstoreaccount1/raw",
            ),
            (
                format!("AccountName=acct;AccountKey={DEV_ACCOUNT_KEY}"),
                "https://acct.blob.core.windows.net/raw",
            ),
        ] {
            let account = StorageAccount::from_connection_string(&cs).unwrap();
            let target = BlobTarget::new(&account, "raw").unwrap();
            assert_eq!(target.url().as_str(), want);
            let dbg = format!("{target:?}");
            assert!(!dbg.contains(DEV_ACCOUNT_KEY), "{dbg}");
        }
    }

    #[test]
    fn entra_builds_without_network() {
        let account = StorageAccount::from_account_url(
            "https://acct.blob.core.windows.net/",
            Some("00000000-0000-0000-0000-000000000000".into()),
        )
        .unwrap();
        let target = BlobTarget::new(&account, "raw").unwrap();
        assert_eq!(
            target.url().as_str(),
            "https://acct.blob.core.windows.net/raw"
        );
        let err = BlobTarget::new(&account, "Raw").unwrap_err();
        assert!(matches!(err, SinkError::Config(_)), "{err}");
    }
}
