//! What a failed storage request means. Decisions are made on the service's error code
//! (`x-ms-error-code`, else the body's `<Code>`) and the status, never on message text: the
//! messages are for people and differ between Azure and Azurite. Only the status, the code and
//! the first line of `<Message>` are kept from a response (never headers or the request), so
//! nothing secret can leak; errors the SDK raised before any response travel as the source.

use azure_core::error::ErrorKind;

/// Errors on the way to a blob. `is_transient` separates what a retry may fix.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "blob storage request {operation} on {target} failed with HTTP {status}: {}{}",
        code.as_deref().unwrap_or("no error code"),
        message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Http {
        operation: &'static str,
        target: String,
        status: u16,
        /// The service's error code, e.g. `BlobAlreadyExists`, `ContainerAlreadyExists`.
        code: Option<String>,
        /// The first line of the service's `<Message>`.
        message: Option<String>,
    },
    /// No (usable) answer: connection failures, timeouts, replies altered on the way.
    #[error("blob storage request {operation} on {target} failed: {reason}")]
    Transport {
        operation: &'static str,
        target: String,
        reason: String,
        source: Option<Box<azure_core::Error>>,
    },
    #[error(
        "blob storage request {operation} on {target}: could not get an Entra ID token: {}",
        chain(source)
    )]
    Credential {
        operation: &'static str,
        target: String,
        source: Box<azure_core::Error>,
    },
    /// Anything else the SDK refused (building or reading a request).
    #[error(
        "blob storage request {operation} on {target} failed: {}",
        chain(source)
    )]
    Sdk {
        operation: &'static str,
        target: String,
        source: Box<azure_core::Error>,
    },
    #[error("blob storage configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Other(String),
    /// A schema document (`src/sink/schema_doc.rs`) that no longer parses: edited or damaged.
    #[error(
        "schema document {name} is not valid ({source}); cdc-copy writes it and it must not be \
         edited: restore it, or delete the table's folder and run FullLoad with \"reset\": true"
    )]
    SchemaDocument {
        name: String,
        source: serde_json::Error,
    },
    /// Other runs kept publishing different schema documents of one table while this one
    /// published its own.
    #[error(
        "the schema documents under {folder} changed {races} times while this run published \
         its own: another deployment is writing different schemas of the same table to this \
         container (check that CDC_TABLES and CDC_FORMAT agree everywhere); will retry"
    )]
    SchemaRace { folder: String, races: usize },
}

/// The service's code for a create-only commit that found the blob there.
pub const BLOB_ALREADY_EXISTS: &str = "BlobAlreadyExists";
/// A conditional request whose condition failed: for a retried create-only commit, the first
/// try succeeded.
pub const CONDITION_NOT_MET: &str = "ConditionNotMet";
pub const CONTAINER_ALREADY_EXISTS: &str = "ContainerAlreadyExists";
pub const CONTAINER_NOT_FOUND: &str = "ContainerNotFound";
/// A block or blob whose bytes did not match the Content-MD5 sent with them: corrupted on the
/// way, so sending the same bytes again can succeed.
pub const MD5_MISMATCH: &str = "Md5Mismatch";

impl SinkError {
    /// The service's error code, for an HTTP failure that carried one.
    pub fn code(&self) -> Option<&str> {
        match self {
            SinkError::Http { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// A create-only commit found the blob already there (`BlobAlreadyExists`, or
    /// `ConditionNotMet` from a retried commit whose first try succeeded).
    pub fn is_already_exists(&self) -> bool {
        matches!(self.code(), Some(BLOB_ALREADY_EXISTS | CONDITION_NOT_MET))
    }

    /// 408, 429, 500, 502, 503, 504, an MD5 mismatch (corrupted in transit) and transport
    /// failures are worth a retry; the rest are not.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Http { status, code, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
                    || code.as_deref() == Some(MD5_MISMATCH)
            }
            SinkError::Transport { .. } | SinkError::SchemaRace { .. } => true,
            _ => false,
        }
    }

    /// A failure without an SDK error behind it (timeouts, altered replies).
    pub(crate) fn transport(operation: &'static str, target: &str, reason: String) -> SinkError {
        SinkError::Transport {
            operation,
            target: target.to_string(),
            reason,
            source: None,
        }
    }
}

impl From<SinkError> for crate::cdc::RowSinkError {
    fn from(e: SinkError) -> Self {
        let transient = e.is_transient();
        crate::cdc::RowSinkError::new(e, transient)
    }
}

/// Maps an SDK error of `operation` on `target` (`container/blob`).
pub(crate) fn map_err(operation: &'static str, target: &str, e: azure_core::Error) -> SinkError {
    let target = target.to_string();
    match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let body = raw_response.as_ref().map(|r| r.body().as_ref());
            SinkError::Http {
                operation,
                target,
                status: u16::from(*status),
                code: error_code
                    .clone()
                    .or_else(|| body.and_then(|b| element(b, "Code"))),
                message: body.and_then(|b| element(b, "Message")),
            }
        }
        ErrorKind::Connection | ErrorKind::Io => SinkError::Transport {
            operation,
            target,
            reason: chain(&e),
            source: Some(Box::new(e)),
        },
        ErrorKind::Credential => SinkError::Credential {
            operation,
            target,
            source: Box::new(e),
        },
        _ => SinkError::Sdk {
            operation,
            target,
            source: Box::new(e),
        },
    }
}

/// An error and its sources on one line, each only once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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

/// The first line of `<name>` in a storage error body.
fn element(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    let line = text[start..end].lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_elements_first_line() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:1</Message></Error>";
        let cases: &[(&[u8], &str, Option<&str>)] = &[
            (
                body,
                "Message",
                Some("Server failed to authenticate the request."),
            ),
            (body, "Code", Some("AuthenticationFailed")),
            (b"", "Message", None),
            (b"<Error><Message> </Message></Error>", "Message", None),
        ];
        for (body, name, want) in cases {
            assert_eq!(element(body, name).as_deref(), *want, "{name}");
        }
    }

    #[test]
    fn decisions_follow_the_code_and_status() {
        let http = |status, code: Option<&str>| SinkError::Http {
            operation: "put block list",
            target: "c/b".into(),
            status,
            code: code.map(str::to_string),
            message: Some("the blob already exists (whatever the words)".into()),
        };
        // (error, already exists, transient)
        let cases = [
            (http(409, Some(BLOB_ALREADY_EXISTS)), true, false),
            (http(412, Some(CONDITION_NOT_MET)), true, false),
            (http(409, Some("LeaseIdMissing")), false, false),
            (http(409, None), false, false),
            (http(503, Some("ServerBusy")), false, true),
            (http(429, None), false, true),
            (http(403, Some("AuthenticationFailed")), false, false),
            (http(400, Some(MD5_MISMATCH)), false, true),
            (http(400, Some("InvalidBlockList")), false, false),
            (
                SinkError::transport("t", "c/b", "reset".into()),
                false,
                true,
            ),
            (SinkError::Config("x".into()), false, false),
        ];
        for (e, exists, transient) in cases {
            assert_eq!(e.is_already_exists(), exists, "{e}");
            assert_eq!(e.is_transient(), transient, "{e}");
            let row: crate::cdc::RowSinkError = SinkError::Config(e.to_string()).into();
            assert!(!row.is_transient());
            let row: crate::cdc::RowSinkError = e.into();
            assert_eq!(row.is_transient(), transient);
        }
        assert_eq!(
            http(503, Some("ServerBusy")).to_string(),
            "blob storage request put block list on c/b failed with HTTP 503: ServerBusy: the blob already exists (whatever the words)"
        );
        assert!(http(500, None)
            .to_string()
            .ends_with("HTTP 500: no error code: the blob already exists (whatever the words)"));
    }
}
