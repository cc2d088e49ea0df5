//! What the Functions host posts to the handler, decoded leniently where the host varies and
//! strictly (with the JSON path in the message) where a wrong value would mean a wrong window.
//!
//! The host serialises .NET objects with Newtonsoft (PascalCase names; timestamps with or
//! without an offset and with 0–7 fractional digits), so the decoding walks a
//! `serde_json::Value` by hand instead of deriving `Deserialize`: that is what lets every error
//! name the exact field (`Data.timer.ScheduleStatus.Next: invalid timestamp "…"`), which is
//! the first thing an operator needs when the host and the handler disagree. The types derive
//! `Serialize` in the host's shape, so tests (and docs) can produce real payloads from them.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{FullLoadRequest, TimerTrigger};
use crate::cdc::TableRef;

/// Binding name of the timer trigger in `IncrementalCopy/function.json`.
pub const TIMER_BINDING: &str = "timer";
/// Binding name of the HTTP trigger in `FullLoad/function.json`.
pub const HTTP_BINDING: &str = "req";
/// Binding name of the HTTP output in `FullLoad/function.json`.
pub const HTTP_OUTPUT_BINDING: &str = "res";

/// How far `ScheduleStatus.Next` may lie after the invocation's clock and still count as this
/// run's trigger time. .NET timers can fire a few milliseconds early; taking `Next` then keeps
/// blob names on the schedule grid (re-runs write the same name). A `Next` further ahead is a
/// manual or start-up run, which takes `UtcNow`.
pub const NEXT_TOLERANCE: Duration = Duration::seconds(1);

/// A payload the handler cannot use. Messages start with the JSON path of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body: not valid JSON: {0}")]
    NotJson(String),
    #[error("body: larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{field}: missing")]
    Missing { field: String },
    #[error("{field}: expected {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{field}: invalid timestamp {value:?} (expected ISO 8601, e.g. 2026-11-21T10:15:00Z)")]
    InvalidTimestamp { field: String, value: String },
}

impl PayloadError {
    /// The JSON path the error is about (`body` for the whole body).
    pub fn field(&self) -> &str {
        match self {
            PayloadError::NotJson(_) | PayloadError::TooLarge { .. } => "body",
            PayloadError::Missing { field }
            | PayloadError::WrongType { field, .. }
            | PayloadError::InvalidTimestamp { field, .. } => field,
        }
    }
}

/// The caller's FullLoad request body is wrong (answered with HTTP 400 through `res`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RequestError {
    /// `body`, `tables`, `tables[2]`, `reset` or the unknown key.
    pub field: String,
    pub reason: String,
}

/// `Data.timer`: Newtonsoft's serialisation of the timer extension's `TimerInfo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TimerInfo {
    /// `{"AdjustForDST": true}`; not used, kept as sent.
    pub schedule: Value,
    /// Null with `useMonitor: false`.
    pub schedule_status: Option<ScheduleStatus>,
    pub is_past_due: bool,
}

/// `Data.timer.ScheduleStatus`. The first-run value `0001-01-01T00:00:00` decodes as `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleStatus {
    /// The previous fire time.
    pub last: Option<DateTime<Utc>>,
    /// The occurrence now firing (the first missed one when past due).
    pub next: Option<DateTime<Utc>>,
    pub last_updated: Option<DateTime<Utc>>,
}

/// `Metadata.sys`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SysMetadata {
    pub method_name: Option<String>,
    pub utc_now: Option<DateTime<Utc>>,
    pub rand_guid: Option<String>,
}

/// `Metadata.RetryContext`, present when the function's retry policy is retrying.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetryContext {
    pub retry_count: i64,
    pub max_retry_count: i64,
    pub exception: Value,
}

/// `Metadata`: `sys`, optional `RetryContext`, and trigger metadata the handler does not use.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct InvocationMetadata {
    pub sys: Option<SysMetadata>,
    #[serde(rename = "RetryContext", skip_serializing_if = "Option::is_none")]
    pub retry_context: Option<RetryContext>,
}

/// A decoded `IncrementalCopy` invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimerInvocation {
    pub timer: TimerInfo,
    pub metadata: InvocationMetadata,
}

/// `Data.req`: the HTTP trigger's request (payload mode, no forwarding).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpRequestData {
    pub url: Option<String>,
    pub method: Option<String>,
    pub query: Value,
    /// Header name → values.
    pub headers: Value,
    pub params: Value,
    pub identities: Value,
    /// The request body: a string, already-parsed JSON, or null/absent when empty.
    pub body: Value,
}

/// A decoded `FullLoad` invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpInvocation {
    pub req: HttpRequestData,
    pub metadata: InvocationMetadata,
}

/// A text that is not a timestamp [`parse_host_time`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an ISO 8601 timestamp")]
pub struct InvalidTime;

/// Parses a host timestamp: RFC 3339 with `Z` or an offset, or without an offset (taken as
/// UTC: host times are UTC unless `WEBSITE_TIME_ZONE` is set), with any number of fractional
/// digits up to nanoseconds. `Ok(None)` for .NET's `DateTime.MinValue`
/// (`0001-01-01T00:00:00`, the timer's "never ran" value), whatever its offset.
pub fn parse_host_time(text: &str) -> Result<Option<DateTime<Utc>>, InvalidTime> {
    let text = text.trim();
    let (naive_local, utc) = if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        (t.naive_local(), t.with_timezone(&Utc))
    } else {
        let t = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
            .map_err(|_| InvalidTime)?;
        (t, t.and_utc())
    };
    let min_value = NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or(InvalidTime)?;
    if naive_local == min_value {
        return Ok(None);
    }
    Ok(Some(utc))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(field: &str, expected: &'static str, value: &Value) -> PayloadError {
    PayloadError::WrongType {
        field: field.to_string(),
        expected,
        found: kind(value),
    }
}

/// `value` as an object, or the error naming `field`.
fn object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, PayloadError> {
    value
        .as_object()
        .ok_or_else(|| wrong(field, "an object", value))
}

/// A member by name: exact first, then ignoring ASCII case (the timer docs show camelCase
/// `scheduleStatus`, the host's Newtonsoft output is PascalCase; both are accepted).
fn member<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A member that may be absent or null.
fn optional<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    member(obj, key).filter(|v| !v.is_null())
}

fn optional_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, PayloadError> {
    optional(obj, key).map(|v| object(v, field)).transpose()
}

fn optional_string(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<String>, PayloadError> {
    optional(obj, key)
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| wrong(field, "a string", v))
        })
        .transpose()
}

fn optional_time(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<DateTime<Utc>>, PayloadError> {
    let Some(v) = optional(obj, key) else {
        return Ok(None);
    };
    let text = v
        .as_str()
        .ok_or_else(|| wrong(field, "a timestamp string", v))?;
    parse_host_time(text).map_err(|InvalidTime| PayloadError::InvalidTimestamp {
        field: field.to_string(),
        value: text.chars().take(64).collect(),
    })
}

fn optional_integer(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<i64>, PayloadError> {
    optional(obj, key)
        .map(|v| v.as_i64().ok_or_else(|| wrong(field, "an integer", v)))
        .transpose()
}

/// Parses raw invocation bytes as JSON (the error is `body: not valid JSON: …`).
pub fn parse_json(body: &[u8]) -> Result<Value, PayloadError> {
    serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))
}

/// `Data.<binding>` of an invocation: the body must be an object with an object `Data`.
fn binding<'a>(root: &'a Value, name: &str) -> Result<&'a Value, PayloadError> {
    let root = object(root, "body")?;
    let data = member(root, "Data").ok_or_else(|| PayloadError::Missing {
        field: "Data".into(),
    })?;
    let data = object(data, "Data")?;
    member(data, name).ok_or_else(|| PayloadError::Missing {
        field: format!("Data.{name}"),
    })
}

impl InvocationMetadata {
    /// `Metadata` of an invocation body; absent or null gives the default.
    pub fn from_json(root: &Value) -> Result<InvocationMetadata, PayloadError> {
        let root = object(root, "body")?;
        let Some(meta) = optional_object(root, "Metadata", "Metadata")? else {
            return Ok(InvocationMetadata::default());
        };
        let sys = optional_object(meta, "sys", "Metadata.sys")?
            .map(|sys| -> Result<SysMetadata, PayloadError> {
                Ok(SysMetadata {
                    method_name: optional_string(sys, "MethodName", "Metadata.sys.MethodName")?,
                    utc_now: optional_time(sys, "UtcNow", "Metadata.sys.UtcNow")?,
                    rand_guid: optional_string(sys, "RandGuid", "Metadata.sys.RandGuid")?,
                })
            })
            .transpose()?;
        let retry_context = optional_object(meta, "RetryContext", "Metadata.RetryContext")?
            .map(|rc| -> Result<RetryContext, PayloadError> {
                Ok(RetryContext {
                    retry_count: optional_integer(
                        rc,
                        "RetryCount",
                        "Metadata.RetryContext.RetryCount",
                    )?
                    .unwrap_or(0),
                    max_retry_count: optional_integer(
                        rc,
                        "MaxRetryCount",
                        "Metadata.RetryContext.MaxRetryCount",
                    )?
                    .unwrap_or(0),
                    exception: member(rc, "Exception").cloned().unwrap_or(Value::Null),
                })
            })
            .transpose()?;
        Ok(InvocationMetadata { sys, retry_context })
    }

    /// `Metadata.sys.UtcNow`, when the host sent it.
    pub fn utc_now(&self) -> Option<DateTime<Utc>> {
        self.sys.as_ref().and_then(|s| s.utc_now)
    }
}

impl TimerInvocation {
    /// Decodes an `IncrementalCopy` invocation body.
    pub fn from_json(root: &Value) -> Result<TimerInvocation, PayloadError> {
        const F: &str = "Data.timer";
        // Some hosts hand trigger values over as JSON text; accept that form too.
        let parsed;
        let timer = match binding(root, TIMER_BINDING)? {
            Value::String(text) => {
                parsed =
                    serde_json::from_str::<Value>(text).map_err(|_| PayloadError::WrongType {
                        field: F.to_string(),
                        expected: "an object (or the JSON text of one)",
                        found: "a string that is not JSON",
                    })?;
                &parsed
            }
            other => other,
        };
        let timer = object(timer, F)?;
        let schedule_status =
            optional_object(timer, "ScheduleStatus", "Data.timer.ScheduleStatus")?
                .map(|s| -> Result<ScheduleStatus, PayloadError> {
                    Ok(ScheduleStatus {
                        last: optional_time(s, "Last", "Data.timer.ScheduleStatus.Last")?,
                        next: optional_time(s, "Next", "Data.timer.ScheduleStatus.Next")?,
                        last_updated: optional_time(
                            s,
                            "LastUpdated",
                            "Data.timer.ScheduleStatus.LastUpdated",
                        )?,
                    })
                })
                .transpose()?;
        let is_past_due = match optional(timer, "IsPastDue") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| wrong("Data.timer.IsPastDue", "a boolean", v))?,
        };
        Ok(TimerInvocation {
            timer: TimerInfo {
                schedule: member(timer, "Schedule").cloned().unwrap_or(Value::Null),
                schedule_status,
                is_past_due,
            },
            metadata: InvocationMetadata::from_json(root)?,
        })
    }

    /// This run's trigger: `ScheduleStatus.Next` when present and not in the future (within
    /// [`NEXT_TOLERANCE`] of `Metadata.sys.UtcNow`, or of `now` when the host sent none),
    /// else `Metadata.sys.UtcNow`, else `now`.
    pub fn trigger(&self, now: DateTime<Utc>) -> TimerTrigger {
        let clock = self.metadata.utc_now().unwrap_or(now);
        let status = self.timer.schedule_status.as_ref();
        let trigger_time = match status.and_then(|s| s.next) {
            Some(next) if next <= clock + NEXT_TOLERANCE => next,
            _ => clock,
        };
        TimerTrigger {
            trigger_time,
            last: status.and_then(|s| s.last),
            is_past_due: self.timer.is_past_due,
        }
    }
}

/// Decodes an `IncrementalCopy` invocation body and works out its trigger time (see
/// [`TimerInvocation::trigger`]). Pure: `now` is the handler's clock.
pub fn timer_trigger(payload: &Value, now: DateTime<Utc>) -> Result<TimerTrigger, PayloadError> {
    Ok(TimerInvocation::from_json(payload)?.trigger(now))
}

impl HttpInvocation {
    /// Decodes a `FullLoad` invocation body. Only the shape is checked here; the request
    /// body is the caller's and is checked by [`full_load_request`].
    pub fn from_json(root: &Value) -> Result<HttpInvocation, PayloadError> {
        let req = object(binding(root, HTTP_BINDING)?, "Data.req")?;
        let body = match optional(req, "Body") {
            None => Value::Null,
            Some(v @ (Value::String(_) | Value::Object(_))) => v.clone(),
            Some(v) => return Err(wrong("Data.req.Body", "a string", v)),
        };
        Ok(HttpInvocation {
            req: HttpRequestData {
                url: optional_string(req, "Url", "Data.req.Url")?,
                method: optional_string(req, "Method", "Data.req.Method")?,
                query: member(req, "Query").cloned().unwrap_or(Value::Null),
                headers: member(req, "Headers").cloned().unwrap_or(Value::Null),
                params: member(req, "Params").cloned().unwrap_or(Value::Null),
                identities: member(req, "Identities").cloned().unwrap_or(Value::Null),
                body,
            },
            metadata: InvocationMetadata::from_json(root)?,
        })
    }
}

fn request_error(field: impl Into<String>, reason: impl Into<String>) -> RequestError {
    RequestError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The FullLoad request from the HTTP body: `{"tables":["dbo.customers"],"reset":true}`.
/// An absent, null, empty or blank body (and `{}`) means every configured table, no reset.
/// Unknown keys are refused so that a typo (`"tabels"`) cannot silently load everything.
pub fn full_load_request(body: &Value) -> Result<FullLoadRequest, RequestError> {
    let parsed;
    let body = match body {
        Value::Null => return Ok(FullLoadRequest::default_all()),
        Value::String(text) if text.trim().is_empty() => return Ok(FullLoadRequest::default_all()),
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|e| request_error("body", format!("not valid JSON: {e}")))?;
            &parsed
        }
        other => other,
    };
    let obj = match body {
        Value::Null => return Ok(FullLoadRequest::default_all()),
        Value::Object(obj) => obj,
        other => {
            return Err(request_error(
                "body",
                format!(
                    "expected an object like {{\"tables\":[\"dbo.customers\"],\"reset\":false}}, found {}",
                    kind(other)
                ),
            ))
        }
    };
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "tables" | "reset"))
    {
        // An empty key would give a message naming nothing (": unknown field"); quote it.
        let field = if key.trim().is_empty() {
            format!("{key:?}")
        } else {
            key.clone()
        };
        return Err(request_error(
            field,
            "unknown field; expected \"tables\" and/or \"reset\"",
        ));
    }
    let mut tables: Vec<TableRef> = Vec::new();
    match obj.get("tables") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let field = format!("tables[{i}]");
                let text = item.as_str().ok_or_else(|| {
                    request_error(
                        &field,
                        format!("expected a \"schema.table\" string, found {}", kind(item)),
                    )
                })?;
                let table =
                    TableRef::parse(text).map_err(|e| request_error(&field, e.to_string()))?;
                if tables.contains(&table) {
                    return Err(request_error(field, format!("{table} is listed twice")));
                }
                tables.push(table);
            }
        }
        Some(other) => {
            return Err(request_error(
                "tables",
                format!(
                    "expected an array of \"schema.table\" strings, found {}",
                    kind(other)
                ),
            ))
        }
    }
    let reset = match obj.get("reset") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(request_error(
                "reset",
                format!("expected true or false, found {}", kind(other)),
            ))
        }
    };
    Ok(FullLoadRequest { tables, reset })
}

impl FullLoadRequest {
    /// Every configured table, no reset.
    pub fn default_all() -> FullLoadRequest {
        FullLoadRequest {
            tables: Vec::new(),
            reset: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn host_times() {
        let cases: &[(&str, Option<&str>)] = &[
            ("2026-11-21T10:15:00Z", Some("2026-11-21T10:15:00Z")),
            ("2026-11-21T10:15:00+00:00", Some("2026-11-21T10:15:00Z")),
            ("2026-11-21T15:45:00+05:30", Some("2026-11-21T10:15:00Z")),
            ("2026-11-21T10:15:00", Some("2026-11-21T10:15:00Z")),
            (
                "2026-11-21T10:15:00.0209Z",
                Some("2026-11-21T10:15:00.0209Z"),
            ),
            (
                "2026-11-21T10:00:00.0141+00:00",
                Some("2026-11-21T10:00:00.0141Z"),
            ),
            (
                "2026-11-21T10:15:00.1234567",
                Some("2026-11-21T10:15:00.1234567Z"),
            ),
            ("2026-11-21T10:15:00.1", Some("2026-11-21T10:15:00.1Z")),
            (" 2026-11-21T10:15:00Z ", Some("2026-11-21T10:15:00Z")),
            ("2026-11-21 10:15:00", Some("2026-11-21T10:15:00Z")),
        ];
        for (text, want) in cases {
            assert_eq!(parse_host_time(text), Ok(want.map(t)), "{text}");
        }
        for first_run in [
            "0001-01-01T00:00:00",
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+00:00",
            "0001-01-01T00:00:00.0000000",
        ] {
            assert_eq!(parse_host_time(first_run), Ok(None), "{first_run}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-21",
            "1700000000",
        ] {
            assert_eq!(parse_host_time(bad), Err(InvalidTime), "{bad}");
        }
    }

    fn timer_payload(status: Value, past_due: Value, utc_now: Option<&str>) -> Value {
        let mut meta = json!({"sys": {"MethodName": "IncrementalCopy", "RandGuid": "0d6a9d1e-5a7e-4c1c-9d59-8a0e8d3c6f21"}});
        if let Some(now) = utc_now {
            meta["sys"]["UtcNow"] = json!(now);
        }
        json!({
            "Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": status, "IsPastDue": past_due}},
            "Metadata": meta,
        })
    }

    fn status(last: &str, next: &str) -> Value {
        json!({"Last": last, "Next": next, "LastUpdated": last})
    }

    /// The trigger-time rules, one row per case.
    #[test]
    fn trigger_time_rules() {
        let now = t("2026-11-21T12:00:00Z");
        struct Case {
            name: &'static str,
            payload: Value,
            trigger: &'static str,
            last: Option<&'static str>,
            past_due: bool,
        }
        let cases = [
            Case {
                name: "normal: Next is the occurrence firing",
                payload: timer_payload(
                    status("2026-11-21T10:00:00+00:00", "2026-11-21T10:15:00+00:00"),
                    json!(false),
                    Some("2026-11-21T10:15:00.0209Z"),
                ),
                trigger: "2026-11-21T10:15:00Z",
                last: Some("2026-11-21T10:00:00Z"),
                past_due: false,
            },
            Case {
                name: "first run: Last is MinValue",
                payload: timer_payload(
                    status("0001-01-01T00:00:00", "2026-11-21T10:15:00"),
                    json!(false),
                    Some("2026-11-21T10:15:00.003Z"),
                ),
                trigger: "2026-11-21T10:15:00Z",
                last: None,
                past_due: false,
            },
            Case {
                name: "past due: Next is the first missed occurrence",
                payload: timer_payload(
                    status("2026-11-21T06:00:00+00:00", "2026-11-21T06:15:00+00:00"),
                    json!(true),
                    Some("2026-11-21T10:07:12.5Z"),
                ),
                trigger: "2026-11-21T06:15:00Z",
                last: Some("2026-11-21T06:00:00Z"),
                past_due: true,
            },
            Case {
                name: "useMonitor false: null status takes UtcNow",
                payload: timer_payload(
                    Value::Null,
                    json!(false),
                    Some("2026-11-21T10:15:00.0209Z"),
                ),
                trigger: "2026-11-21T10:15:00.0209Z",
                last: None,
                past_due: false,
            },
            Case {
                name: "Next in the future (manual run): UtcNow",
                payload: timer_payload(
                    status("2026-11-21T10:00:00Z", "2026-11-21T10:15:00Z"),
                    json!(false),
                    Some("2026-11-21T10:03:00Z"),
                ),
                trigger: "2026-11-21T10:03:00Z",
                last: Some("2026-11-21T10:00:00Z"),
                past_due: false,
            },
            Case {
                name: "timer fired a little early: still Next",
                payload: timer_payload(
                    status("2026-11-21T10:00:00Z", "2026-11-21T10:15:00Z"),
                    json!(false),
                    Some("2026-11-21T10:14:59.2Z"),
                ),
                trigger: "2026-11-21T10:15:00Z",
                last: Some("2026-11-21T10:00:00Z"),
                past_due: false,
            },
            Case {
                name: "just beyond the tolerance: UtcNow",
                payload: timer_payload(
                    status("2026-11-21T10:00:00Z", "2026-11-21T10:15:00Z"),
                    json!(false),
                    Some("2026-11-21T10:14:58.9Z"),
                ),
                trigger: "2026-11-21T10:14:58.9Z",
                last: Some("2026-11-21T10:00:00Z"),
                past_due: false,
            },
            Case {
                name: "no UtcNow: compare with and fall back to now",
                payload: timer_payload(Value::Null, Value::Null, None),
                trigger: "2026-11-21T12:00:00Z",
                last: None,
                past_due: false,
            },
            Case {
                name: "no UtcNow, Next before now",
                payload: timer_payload(
                    status("2026-11-21T11:30:00Z", "2026-11-21T11:45:00Z"),
                    json!(false),
                    None,
                ),
                trigger: "2026-11-21T11:45:00Z",
                last: Some("2026-11-21T11:30:00Z"),
                past_due: false,
            },
            Case {
                name: "offsets are converted",
                payload: timer_payload(
                    status("2026-11-21T15:30:00+05:30", "2026-11-21T15:45:00+05:30"),
                    json!(false),
                    Some("2026-11-21T10:15:00Z"),
                ),
                trigger: "2026-11-21T10:15:00Z",
                last: Some("2026-11-21T10:00:00Z"),
                past_due: false,
            },
        ];
        for case in cases {
            let got =
                timer_trigger(&case.payload, now).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(
                got,
                TimerTrigger {
                    trigger_time: t(case.trigger),
                    last: case.last.map(t),
                    is_past_due: case.past_due
                },
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        let now = Utc::now();
        let good = timer_payload(
            status("2026-11-21T10:00:00Z", "2026-11-21T10:15:00Z"),
            json!(false),
            Some("2026-11-21T10:15:00Z"),
        );
        let mutate = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            v
        };
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!([1, 2]), "body", "expected an object"),
            (json!({}), "Data", "missing"),
            (
                json!({"Data": 5}),
                "Data",
                "expected an object, found a number",
            ),
            (json!({"Data": {}}), "Data.timer", "missing"),
            (json!({"Data": {"timer": null}}), "Data.timer", "found null"),
            (
                json!({"Data": {"timer": "x"}}),
                "Data.timer",
                "found a string",
            ),
            (
                mutate(&|v| v["Data"]["timer"]["ScheduleStatus"]["Next"] = json!("soon")),
                "Data.timer.ScheduleStatus.Next",
                "invalid timestamp \"soon\"",
            ),
            (
                mutate(&|v| v["Data"]["timer"]["ScheduleStatus"]["Last"] = json!(17)),
                "Data.timer.ScheduleStatus.Last",
                "found a number",
            ),
            (
                mutate(&|v| v["Data"]["timer"]["ScheduleStatus"] = json!("x")),
                "Data.timer.ScheduleStatus",
                "expected an object",
            ),
            (
                mutate(&|v| v["Data"]["timer"]["IsPastDue"] = json!("true")),
                "Data.timer.IsPastDue",
                "expected a boolean",
            ),
            (
                mutate(&|v| v["Metadata"]["sys"]["UtcNow"] = json!("now")),
                "Metadata.sys.UtcNow",
                "invalid timestamp",
            ),
            (
                mutate(&|v| v["Metadata"]["sys"] = json!([])),
                "Metadata.sys",
                "expected an object",
            ),
            (
                mutate(&|v| v["Metadata"] = json!(1)),
                "Metadata",
                "expected an object",
            ),
            (
                mutate(&|v| v["Metadata"]["RetryContext"] = json!({"RetryCount": "one"})),
                "Metadata.RetryContext.RetryCount",
                "expected an integer",
            ),
        ];
        for (payload, field, text) in cases {
            let e = timer_trigger(&payload, now).expect_err(field);
            assert_eq!(e.field(), field, "{e}");
            let msg = e.to_string();
            assert!(msg.starts_with(field) && msg.contains(text), "{msg}");
        }
    }

    /// camelCase keys (as the timer docs show them) and a timer handed over as JSON text.
    #[test]
    fn alternative_forms_of_the_timer() {
        let want = TimerTrigger {
            trigger_time: t("2026-11-21T10:15:00Z"),
            last: Some(t("2026-11-21T10:00:00Z")),
            is_past_due: false,
        };
        let camel = json!({"Data": {"timer": {"schedule": {}, "scheduleStatus": {"last": "2026-11-21T10:00:00+00:00", "next": "2026-11-21T10:15:00+00:00", "lastUpdated": "2026-11-21T10:00:00+00:00"}, "isPastDue": false}},
                           "Metadata": {"sys": {"utcNow": "2026-11-21T10:15:00.02Z"}}});
        assert_eq!(timer_trigger(&camel, Utc::now()), Ok(want.clone()));
        let text = json!({"Data": {"timer": camel["Data"]["timer"].to_string()}, "Metadata": camel["Metadata"]});
        assert_eq!(timer_trigger(&text, Utc::now()), Ok(want));
        let bad = json!({"Data": {"timer": "{\"IsPastDue\": \"no\"}"}});
        assert_eq!(
            timer_trigger(&bad, Utc::now()).unwrap_err().field(),
            "Data.timer.IsPastDue"
        );
    }

    #[test]
    fn metadata_and_retry_context() {
        let mut payload = timer_payload(Value::Null, json!(false), Some("2026-11-21T10:15:00Z"));
        payload["Metadata"]["RetryContext"] =
            json!({"RetryCount": 2, "MaxRetryCount": 5, "Exception": {"Message": "boom"}});
        let inv = TimerInvocation::from_json(&payload).unwrap();
        assert_eq!(
            inv.metadata
                .retry_context
                .as_ref()
                .map(|r| (r.retry_count, r.max_retry_count)),
            Some((2, 5))
        );
        assert_eq!(
            inv.metadata
                .sys
                .as_ref()
                .and_then(|s| s.method_name.as_deref()),
            Some("IncrementalCopy")
        );
        // Metadata may be missing altogether.
        let bare = json!({"Data": {"timer": {"IsPastDue": false}}});
        let inv = TimerInvocation::from_json(&bare).unwrap();
        assert_eq!(inv.metadata, InvocationMetadata::default());
    }

    /// The `Serialize` shape is the host's: serialising and decoding again gives the same value.
    #[test]
    fn serialised_shape_round_trips() {
        let inv = TimerInvocation {
            timer: TimerInfo {
                schedule: json!({"AdjustForDST": true}),
                schedule_status: Some(ScheduleStatus {
                    last: Some(t("2026-11-21T10:00:00Z")),
                    next: Some(t("2026-11-21T10:15:00Z")),
                    last_updated: Some(t("2026-11-21T10:00:00.0141Z")),
                }),
                is_past_due: false,
            },
            metadata: InvocationMetadata {
                sys: Some(SysMetadata {
                    method_name: Some("IncrementalCopy".into()),
                    utc_now: Some(t("2026-11-21T10:15:00.0209Z")),
                    rand_guid: None,
                }),
                retry_context: None,
            },
        };
        let wire = json!({"Data": {"timer": inv.timer}, "Metadata": inv.metadata});
        assert_eq!(TimerInvocation::from_json(&wire).unwrap(), inv);
    }

    fn http_payload(body: Value) -> Value {
        json!({"Data": {"req": {
            "Url": "https://app.azurewebsites.net/api/FullLoad",
            "Method": "POST",
            "Query": {},
            "Headers": {"Content-Type": ["application/json"]},
            "Params": {},
            "Identities": [],
            "Body": body,
        }}, "Metadata": {"sys": {"MethodName": "FullLoad", "UtcNow": "2026-11-21T10:15:00Z", "RandGuid": "x"}}})
    }

    #[test]
    fn full_load_bodies() {
        let dbo = |t: &str| TableRef::parse(t).unwrap();
        let cases: Vec<(Value, FullLoadRequest)> = vec![
            (
                json!("{\"tables\":[\"dbo.customers\"],\"reset\":true}"),
                FullLoadRequest {
                    tables: vec![dbo("dbo.customers")],
                    reset: true,
                },
            ),
            (
                json!({"tables": ["dbo.a", "sales.b"]}),
                FullLoadRequest {
                    tables: vec![dbo("dbo.a"), dbo("sales.b")],
                    reset: false,
                },
            ),
            (json!(""), FullLoadRequest::default_all()),
            (json!("  \n"), FullLoadRequest::default_all()),
            (json!("null"), FullLoadRequest::default_all()),
            (json!("{}"), FullLoadRequest::default_all()),
            (Value::Null, FullLoadRequest::default_all()),
            (
                json!("{\"reset\":true}"),
                FullLoadRequest {
                    tables: vec![],
                    reset: true,
                },
            ),
        ];
        for (body, want) in cases {
            let inv = HttpInvocation::from_json(&http_payload(body.clone())).unwrap();
            assert_eq!(full_load_request(&inv.req.body), Ok(want), "{body}");
        }
        // Body absent altogether.
        let mut no_body = http_payload(Value::Null);
        no_body["Data"]["req"]
            .as_object_mut()
            .unwrap()
            .remove("Body");
        let inv = HttpInvocation::from_json(&no_body).unwrap();
        assert_eq!(
            full_load_request(&inv.req.body),
            Ok(FullLoadRequest::default_all())
        );
    }

    #[test]
    fn full_load_body_errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                "{\"tables\":[\"dbo.customers\",\"customers\"]}",
                "tables[1]",
            ),
            ("{\"tables\":[\"dbo.[x]\"]}", "tables[0]"),
            ("{\"tables\":[\"dbo.a\",\"dbo.a\"]}", "tables[1]"),
            ("{\"tables\":[7]}", "tables[0]"),
            ("{\"tables\":\"dbo.a\"}", "tables"),
            ("{\"reset\":\"yes\"}", "reset"),
            ("{\"tabels\":[\"dbo.a\"]}", "tabels"),
            ("[\"dbo.a\"]", "body"),
            ("{not json", "body"),
        ];
        for (body, field) in cases {
            let e = full_load_request(&json!(body)).expect_err(body);
            assert_eq!(e.field, *field, "{body}: {e}");
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }

    #[test]
    fn http_envelope_errors() {
        let e = HttpInvocation::from_json(&json!({"Data": {"timer": {}}})).unwrap_err();
        assert_eq!(e.field(), "Data.req");
        let e = HttpInvocation::from_json(&http_payload(json!(42))).unwrap_err();
        assert_eq!(e.field(), "Data.req.Body");
        let mut p = http_payload(json!(""));
        p["Data"]["req"]["Url"] = json!(1);
        assert_eq!(
            HttpInvocation::from_json(&p).unwrap_err().field(),
            "Data.req.Url"
        );
    }
}
