//! The Blob Storage settings, read once into a [`StorageAccount`]: an account-key connection
//! string (Azurite's too) or an Entra ID account URL. The connection string is secret as a
//! whole, so errors name the part that is wrong and never quote a value.

use std::collections::HashMap;
use std::sync::Arc;

use url::Url;

use super::{invalid, ConfigError, CDC_STORAGE_ACCOUNT_URL, CDC_STORAGE_CONNECTION_STRING};

/// A Blob Storage account: its blob endpoint (no trailing `/`, no query) and how requests are
/// authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageAccount {
    pub endpoint: Url,
    pub auth: StorageAuth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageAuth {
    /// `CDC_STORAGE_CONNECTION_STRING`: Shared Key signing with the account key (Azurite's
    /// well-known one for `UseDevelopmentStorage=true`).
    SharedKey { account: String, key: AccountKey },
    /// `CDC_STORAGE_ACCOUNT_URL`: Entra ID tokens from [`crate::identity`].
    Entra { client_id: Option<String> },
}

impl StorageAccount {
    /// Parses `CDC_STORAGE_CONNECTION_STRING` (tests use it for their own strings).
    pub fn from_connection_string(text: &str) -> Result<StorageAccount, ConfigError> {
        parse_storage_connection_string(text)
    }

    /// Parses `CDC_STORAGE_ACCOUNT_URL`.
    pub fn from_account_url(
        url: &str,
        client_id: Option<String>,
    ) -> Result<StorageAccount, ConfigError> {
        Ok(StorageAccount {
            endpoint: parse_account_url(url)?,
            auth: StorageAuth::Entra { client_id },
        })
    }

    /// The setting this account came from, to name when it does not work.
    pub fn setting(&self) -> &'static str {
        match self.auth {
            StorageAuth::SharedKey { .. } => CDC_STORAGE_CONNECTION_STRING,
            StorageAuth::Entra { .. } => CDC_STORAGE_ACCOUNT_URL,
        }
    }
}

/// A storage account key, decoded from its base64. `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountKey(Arc<[u8]>);

impl AccountKey {
    /// The key's bytes, for the Shared Key signer only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Decodes an `AccountKey`; the error never repeats it.
    pub fn from_base64(text: &str) -> Result<AccountKey, &'static str> {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "AccountKey is not valid base64")?;
        if key.is_empty() {
            return Err("AccountKey is empty");
        }
        Ok(AccountKey(key.into()))
    }
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Azurite's well-known development account (public, documented by Microsoft).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The well-known key of [`DEV_ACCOUNT`]; not a secret.
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEV_BLOB_PORT: u16 = 10000;

/// Parses an account-key or development-storage connection string. Recognised keys
/// (case-insensitive): `UseDevelopmentStorage`, `DevelopmentStorageProxyUri`,
/// `DefaultEndpointsProtocol`, `AccountName`, `AccountKey`, `EndpointSuffix`, `BlobEndpoint`;
/// others (`QueueEndpoint`, …) are ignored. With `UseDevelopmentStorage=true` the account is
/// Azurite's `devstoreaccount1` and the endpoint `http://127.0.0.1:10000/devstoreaccount1`,
/// unless `BlobEndpoint` is given or `DevelopmentStorageProxyUri` names another host (its port,
/// when present, replaces 10000 so tests can use a free port). The whole string is secret:
/// errors name the missing or bad part, never a value.
pub(super) fn parse_storage_connection_string(text: &str) -> Result<StorageAccount, ConfigError> {
    let bad = |reason: &str| invalid(CDC_STORAGE_CONNECTION_STRING, reason.to_string());
    let mut parts: HashMap<String, String> = HashMap::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad("every part must be Key=Value"))?;
        parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let get = |k: &str| parts.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let endpoint = |url: &str, what: &str| {
        blob_endpoint(url).map_err(|reason| bad(&format!("{what} {reason}")))
    };

    if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        let endpoint = match (get("blobendpoint"), get("developmentstorageproxyuri")) {
            (Some(ep), _) => endpoint(ep, "BlobEndpoint")?,
            (None, Some(proxy)) => {
                let proxy = Url::parse(proxy)
                    .map_err(|_| bad("DevelopmentStorageProxyUri is not a URL"))?;
                let host = proxy
                    .host_str()
                    .ok_or_else(|| bad("DevelopmentStorageProxyUri has no host"))?;
                let port = proxy.port().unwrap_or(DEV_BLOB_PORT);
                let url = format!("{}://{host}:{port}/{DEV_ACCOUNT}", proxy.scheme());
                endpoint(&url, "DevelopmentStorageProxyUri")?
            }
            (None, None) => endpoint(
                &format!("http://127.0.0.1:{DEV_BLOB_PORT}/{DEV_ACCOUNT}"),
                "",
            )?,
        };
        let key = AccountKey::from_base64(DEV_ACCOUNT_KEY).map_err(bad)?;
        return Ok(StorageAccount {
            endpoint,
            auth: StorageAuth::SharedKey {
                account: DEV_ACCOUNT.to_string(),
                key,
            },
        });
    }

    let account = get("accountname").ok_or_else(|| {
        bad("AccountName is missing: expected AccountName=…;AccountKey=… (optionally BlobEndpoint=…, EndpointSuffix=…) or UseDevelopmentStorage=true")
    })?;
    let key = match get("accountkey") {
        Some(key) => AccountKey::from_base64(key).map_err(bad)?,
        None if get("sharedaccesssignature").is_some() => {
            return Err(bad(
                "SharedAccessSignature is not supported; use an AccountKey connection string or CDC_STORAGE_ACCOUNT_URL (Entra ID)",
            ))
        }
        None => return Err(bad("AccountKey is missing")),
    };
    let endpoint = match get("blobendpoint") {
        Some(ep) => endpoint(ep, "BlobEndpoint")?,
        None => {
            let protocol = get("defaultendpointsprotocol").unwrap_or("https");
            if !matches!(protocol, "http" | "https") {
                return Err(bad("DefaultEndpointsProtocol must be http or https"));
            }
            let suffix = get("endpointsuffix").unwrap_or("core.windows.net");
            endpoint(
                &format!("{protocol}://{account}.blob.{suffix}"),
                "AccountName/EndpointSuffix",
            )?
        }
    };
    Ok(StorageAccount {
        endpoint,
        auth: StorageAuth::SharedKey {
            account: account.to_string(),
            key,
        },
    })
}

/// An http(s) blob endpoint without query or fragment, trailing `/`s dropped (the blob client
/// appends path segments, and an empty last segment would put `//` into every blob path).
/// The reason never quotes the URL: a query string would most likely be a SAS token.
fn blob_endpoint(text: &str) -> Result<Url, &'static str> {
    let mut url = Url::parse(text.trim()).map_err(|_| "is not a URL")?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err("must be an http(s) URL");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query string (SAS tokens are not supported)");
    }
    if url.host_str().is_none_or(str::is_empty) || !url.username().is_empty() {
        return Err("must be a blob endpoint such as https://myaccount.blob.core.windows.net");
    }
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

/// An https blob endpoint (http only for loopback, i.e. Azurite), no query, no trailing `/`.
fn parse_account_url(v: &str) -> Result<Url, ConfigError> {
    let bad = |reason: &str| invalid(CDC_STORAGE_ACCOUNT_URL, reason.to_string());
    let url = blob_endpoint(v).map_err(bad)?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() != "https" && !loopback {
        return Err(bad(
            "must be https (http is accepted only for 127.0.0.1/localhost, e.g. Azurite)",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint_and_account(cs: &str) -> Result<(String, String), ConfigError> {
        let account = StorageAccount::from_connection_string(cs)?;
        match account.auth {
            StorageAuth::SharedKey { account: name, .. } => {
                Ok((account.endpoint.to_string(), name))
            }
            StorageAuth::Entra { .. } => unreachable!(),
        }
    }

    #[test]
    fn storage_connection_strings() {
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
                "UseDevelopmentStorage=true;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1//"
                    .into(),
                "http://127.0.0.1:10000/devstoreaccount1",
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
    fn bad_storage_connection_strings_name_the_part_not_the_value() {
        let secret = "c2VjcmV0LWtleQ";
        let cases = [
            (format!("AccountKey={secret}=="), "AccountName is missing"),
            ("AccountName=a".to_string(), "AccountKey is missing"),
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
                format!("AccountName=a;AccountKey={secret}==;BlobEndpoint=https://x/?sig={secret}"),
                "query string",
            ),
            (
                format!("AccountName=a;AccountKey={secret}==;DefaultEndpointsProtocol=ftp"),
                "DefaultEndpointsProtocol",
            ),
        ];
        for (cs, want) in cases {
            let e = StorageAccount::from_connection_string(&cs).unwrap_err();
            let text = format!("{e} {e:?}");
            assert_eq!(e.setting(), CDC_STORAGE_CONNECTION_STRING, "{cs}: {text}");
            assert!(text.contains(want), "{cs}: {text}");
            assert!(!text.contains(secret), "{cs}: {text}");
        }
    }

    #[test]
    fn storage_account_debug_hides_the_key() {
        let account = StorageAccount::from_connection_string(&format!(
            "AccountName=acct;AccountKey={DEV_ACCOUNT_KEY}"
        ))
        .unwrap();
        let debug = format!("{account:?}");
        assert!(
            !debug.contains(DEV_ACCOUNT_KEY) && debug.contains("<redacted>"),
            "{debug}"
        );
        assert_eq!(account.setting(), CDC_STORAGE_CONNECTION_STRING);
    }
}
