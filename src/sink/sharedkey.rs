//! Shared Key request signing for Blob Storage, as an `azure_core` per-try policy.
//!
//! The official `azure_storage_blob` 1.x client only authenticates with Entra ID tokens, but
//! account-key connection strings and Azurite (local development, our tests) need Microsoft's
//! "Authorize with Shared Key" scheme
//! (<https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>). The policy
//! runs per try, after the SDK's retry policy, so every attempt carries a fresh `x-ms-date` and a
//! signature over exactly the headers that attempt sends.
//!
//! The account key lives only inside [`SharedKey`]; its `Debug` prints `<redacted>` and no error
//! built here mentions it.

use std::sync::Arc;

use azure_core::http::{
    policies::{Policy, PolicyResult},
    Context, Request,
};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

use crate::config::AccountKey;

/// The standard headers that take a fixed line each in the string to sign, in order.
/// `Date` stays empty because we always send `x-ms-date` (which then counts as a canonical
/// header instead).
const STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// An account name and its decoded key (decoded once, by `config`).
#[derive(Clone)]
pub struct SharedKey {
    account: String,
    key: AccountKey,
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKey")
            .field("account", &self.account)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SharedKey {
    pub fn new(account: &str, key: AccountKey) -> SharedKey {
        SharedKey {
            account: account.to_string(),
            key,
        }
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// Base64 HMAC-SHA256 of `string_to_sign` with the account key.
    pub fn sign(&self, string_to_sign: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose())
            .expect("HMAC accepts keys of any length");
        mac.update(string_to_sign.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    /// The `Authorization` header value for a request with these (lower-case) headers.
    pub fn authorization(
        &self,
        method: &str,
        url: &Url,
        headers: &[(String, String)],
        body_len: Option<u64>,
    ) -> String {
        let sts = string_to_sign(&self.account, method, url, headers, body_len);
        format!("SharedKey {}:{}", self.account, self.sign(&sts))
    }
}

/// The Blob/Queue/File string to sign (version 2015-02-21 and later: a zero Content-Length is
/// signed as the empty string). `headers` are name/value pairs as sent; names are matched
/// case-insensitively. `body_len` stands in for Content-Length when the header is not set
/// explicitly (the transport adds it from the body).
pub fn string_to_sign(
    account: &str,
    method: &str,
    url: &Url,
    headers: &[(String, String)],
    body_len: Option<u64>,
) -> String {
    let header = |name: &str| -> Option<&str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let mut out = String::with_capacity(256);
    out.push_str(&method.to_ascii_uppercase());
    out.push('\n');
    for name in STANDARD_HEADERS {
        let value = match name {
            "content-length" => {
                let len = header(name)
                    .map(str::to_string)
                    .or_else(|| body_len.map(|l| l.to_string()));
                match len.as_deref() {
                    None | Some("0") => String::new(),
                    Some(v) => v.to_string(),
                }
            }
            _ => header(name).unwrap_or("").to_string(),
        };
        out.push_str(&value);
        out.push('\n');
    }
    out.push_str(&canonicalized_headers(headers));
    out.push_str(&canonicalized_resource(account, url));
    out
}

/// Every `x-ms-` header, lower-cased, sorted by name, value with runs of whitespace folded
/// to one space and trimmed, one `name:value\n` each.
pub fn canonicalized_headers(headers: &[(String, String)]) -> String {
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .filter(|(n, _)| n.starts_with("x-ms-"))
        .map(|(n, v)| (n, v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    ms.sort();
    ms.iter().map(|(n, v)| format!("{n}:{v}\n")).collect()
}

/// `/account/path` (the path as encoded in the URL), then each query parameter lower-cased
/// and sorted, `\nname:v1,v2` with decoded values sorted.
pub fn canonicalized_resource(account: &str, url: &Url) -> String {
    let mut out = format!("/{account}{}", url.path());
    let mut params: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in url.query_pairs() {
        params
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (k, mut values) in params {
        values.sort();
        out.push('\n');
        out.push_str(&k);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

/// The `x-ms-date` value: RFC 1123 in GMT.
pub fn ms_date(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Signs each try of each request with the account key.
#[derive(Debug, Clone)]
pub struct SharedKeyPolicy {
    key: SharedKey,
}

impl SharedKeyPolicy {
    pub fn new(key: SharedKey) -> SharedKeyPolicy {
        SharedKeyPolicy { key }
    }
}

#[async_trait::async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        request.insert_header("x-ms-date", ms_date(chrono::Utc::now()));
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_str().to_string()))
            .collect();
        let body_len = request.body().len();
        let method = request.method().to_string();
        let auth = self
            .key
            .authorization(&method, request.url(), &headers, body_len);
        request.insert_header("authorization", auth);
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn canonicalized_resource_examples() {
        // The examples of the "Shared Key format for 2009-09-19 and later" section, plus the
        // path-style (Azurite) form where the account is also the first path segment.
        let cases = [
            (
                "https://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=metadata",
                "/myaccount/mycontainer\ncomp:metadata\nrestype:container",
            ),
            (
                "https://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=list&include=snapshots&include=metadata&include=uncommittedblobs",
                "/myaccount/mycontainer\ncomp:list\ninclude:metadata,snapshots,uncommittedblobs\nrestype:container",
            ),
            (
                "https://myaccount-secondary.blob.core.windows.net/mycontainer/myblob",
                "/myaccount/mycontainer/myblob",
            ),
            (
                "http://127.0.0.1:10000/devstoreaccount1/raw/dbo/t/a.csv?comp=block&blockid=MDAw%3D%3D",
                "/myaccount/devstoreaccount1/raw/dbo/t/a.csv\nblockid:MDAw==\ncomp:block",
            ),
            (
                "https://myaccount.blob.core.windows.net/c?Prefix=a%2Fb&RESTYPE=container",
                "/myaccount/c\nprefix:a/b\nrestype:container",
            ),
        ];
        for (url, want) in cases {
            let url = Url::parse(url).unwrap();
            assert_eq!(canonicalized_resource("myaccount", &url), want, "{url}");
        }
    }

    #[test]
    fn canonicalized_headers_sorted_lowercased_folded() {
        let headers = h(&[
            ("x-ms-version", "2025-11-05"),
            ("X-MS-Date", "Sun, 11 Oct 2009 21:49:13 GMT"),
            ("content-type", "text/plain"),
            ("x-ms-meta-b", "  two   words "),
            ("x-ms-meta-a", "1"),
        ]);
        assert_eq!(
            canonicalized_headers(&headers),
            "x-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\nx-ms-meta-a:1\nx-ms-meta-b:two words\nx-ms-version:2025-11-05\n"
        );
    }

    #[test]
    fn string_to_sign_table() {
        let date = ("x-ms-date", "Sun, 11 Oct 2009 21:49:13 GMT");
        let version = ("x-ms-version", "2009-09-19");
        type Case = (
            &'static str,
            &'static str,
            Vec<(String, String)>,
            Option<u64>,
            String,
        );
        let cases: Vec<Case> = vec![
            // The documented Set Container Metadata example: PUT, no body, metadata headers.
            (
                "PUT",
                "https://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=metadata",
                h(&[date, version, ("x-ms-meta-m1", "v1")]),
                Some(0),
                "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\nx-ms-meta-m1:v1\nx-ms-version:2009-09-19\n/myaccount/mycontainer\ncomp:metadata\nrestype:container".to_string(),
            ),
            // Put Block: explicit Content-Length, Content-MD5 and Content-Type take their lines.
            (
                "PUT",
                "https://myaccount.blob.core.windows.net/c/b?comp=block&blockid=QQ%3D%3D",
                h(&[
                    date,
                    version,
                    ("content-length", "11"),
                    ("content-md5", "XrY7u+Ae7tCTyyK7j1rNww=="),
                    ("content-type", "application/octet-stream"),
                ]),
                Some(11),
                "PUT\n\n\n11\nXrY7u+Ae7tCTyyK7j1rNww==\napplication/octet-stream\n\n\n\n\n\n\nx-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\nx-ms-version:2009-09-19\n/myaccount/c/b\nblockid:QQ==\ncomp:block".to_string(),
            ),
            // Content-Length taken from the body when the transport will add it.
            (
                "put",
                "https://myaccount.blob.core.windows.net/c/b?comp=blocklist",
                h(&[date, ("content-type", "application/xml")]),
                Some(42),
                "PUT\n\n\n42\n\napplication/xml\n\n\n\n\n\n\nx-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\n/myaccount/c/b\ncomp:blocklist".to_string(),
            ),
            // GET with a Range and conditional headers.
            (
                "GET",
                "https://myaccount.blob.core.windows.net/c/b",
                h(&[date, ("range", "bytes=0-9"), ("if-match", "\"0x8D\"")]),
                None,
                "GET\n\n\n\n\n\n\n\n\"0x8D\"\n\n\nbytes=0-9\nx-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\n/myaccount/c/b".to_string(),
            ),
        ];
        for (method, url, headers, body_len, want) in cases {
            let url = Url::parse(url).unwrap();
            assert_eq!(
                string_to_sign("myaccount", method, &url, &headers, body_len),
                want,
                "{method} {url}"
            );
        }
    }

    #[test]
    fn signature_is_hmac_sha256_of_the_decoded_key() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = SharedKey::new("a", AccountKey::from_base64("SmVmZQ==").unwrap());
        assert_eq!(
            key.sign("what do ya want for nothing?"),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }

    #[test]
    fn key_never_printed_and_bad_key_not_echoed() {
        let key = SharedKey::new("acct", AccountKey::from_base64("c2VjcmV0LWtleQ==").unwrap());
        let dbg = format!("{key:?} {:?}", SharedKeyPolicy::new(key.clone()));
        assert!(!dbg.contains("c2VjcmV0LWtleQ"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        let err = AccountKey::from_base64("not*base64!").unwrap_err();
        assert!(!err.contains("not*base64"), "{err}");
        assert!(AccountKey::from_base64("").is_err());
    }

    #[test]
    fn ms_date_is_rfc1123_gmt() {
        let t = chrono::DateTime::parse_from_rfc3339("2009-10-11T21:49:13Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(ms_date(t), "Sun, 11 Oct 2009 21:49:13 GMT");
    }
}
