//! What the Functions host posts to the handler, decoded leniently where the host varies and
//! strictly (with the JSON path in the message) where a wrong value would mean a wrong window.
//!
//! The host serialises .NET objects with Newtonsoft: PascalCase names (the docs show
//! camelCase; both are accepted), timestamps with or without an offset and 0–7 fractional
//! digits. Decoding goes through `serde_path_to_error` so that every error names the exact
//! field (`Data.timer.ScheduleStatus.Next: invalid timestamp "…"`), the first thing an operator
//! needs when the host and the handler disagree. The field helpers below exist because derived
//! structs would also take arrays and would word type errors in Rust's terms, not JSON's. The
//! types derive `Serialize` in the host's shape, so tests (and docs) can produce real payloads.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::de::{self, value::MapAccessDeserializer, DeserializeSeed, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_path_to_error::Path;

use super::{FullLoadRequest, TableMessage, TimerTrigger};
use crate::cdc::TableRef;

/// Binding name of the timer trigger in `IncrementalCopy/function.json`.
pub const TIMER_BINDING: &str = "timer";
/// Binding name of the HTTP trigger in `FullLoad/function.json`.
pub const HTTP_BINDING: &str = "req";
/// Binding name of the HTTP output in `FullLoad/function.json`.
pub const HTTP_OUTPUT_BINDING: &str = "res";
/// Binding name of the queue trigger in `CopyTable/function.json`.
pub const QUEUE_BINDING: &str = "message";
/// Binding name of `IncrementalCopy`'s queue output (queue `cdc-copy-tables`): one message
/// per table with `CDC_FANOUT=queue`.
pub const TABLES_OUTPUT_BINDING: &str = "tables";
/// Binding name of `CopyTable`'s queue output to its poison queue (`cdc-copy-tables-poison`):
/// where a message whose table needs a person goes at once, with its error.
pub const POISON_OUTPUT_BINDING: &str = "poison";
/// Binding name of the queue output to `cdc-copy-ranges` (FullLoad's and LoadRange's): one
/// [`super::RangeMessage`] per key range of a split load still to do.
pub const RANGES_OUTPUT_BINDING: &str = "ranges";

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
    #[error(transparent)]
    Invalid(#[from] RequestError),
}

impl PayloadError {
    /// The JSON path the error is about (`body` for the whole body).
    pub fn field(&self) -> &str {
        match self {
            PayloadError::NotJson(_) | PayloadError::TooLarge { .. } => "body",
            PayloadError::Invalid(e) => &e.field,
        }
    }
}

/// A value that cannot be used, and its JSON path: in the caller's FullLoad request body
/// (answered with HTTP 400 through `res`), or in the host's invocation ([`PayloadError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RequestError {
    /// `body`, `tables[2]`, `reset`, the unknown key; `Data.timer.IsPastDue`…
    pub field: String,
    pub reason: String,
}

impl RequestError {
    fn new(field: &str, reason: impl Into<String>) -> RequestError {
        RequestError {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<serde_path_to_error::Error<serde_json::Error>> for RequestError {
    fn from(e: serde_path_to_error::Error<serde_json::Error>) -> RequestError {
        RequestError::new(&dotted(e.path()), e.into_inner().to_string())
    }
}

/// `Data.timer.ScheduleStatus`, `tables[2]`; `body` for the whole body.
fn dotted(path: &Path) -> String {
    match path.to_string() {
        p if p == "." => "body".to_string(),
        // A blank unknown key would give a message naming nothing (": unknown field"): quote it.
        p if p.trim().is_empty() => format!("{p:?}"),
        p => p,
    }
}

/// `Data.timer`: Newtonsoft's serialisation of the timer extension's `TimerInfo`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TimerInfo {
    /// `{"AdjustForDST": true}`; not used, kept as sent.
    #[serde(alias = "schedule")]
    pub schedule: Value,
    /// Null with `useMonitor: false`.
    #[serde(alias = "scheduleStatus", deserialize_with = "optional_object")]
    pub schedule_status: Option<ScheduleStatus>,
    #[serde(alias = "isPastDue", deserialize_with = "boolean")]
    pub is_past_due: bool,
}

/// `Data.timer.ScheduleStatus`. The first-run value `0001-01-01T00:00:00` decodes as `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ScheduleStatus {
    /// The previous fire time.
    #[serde(alias = "last", deserialize_with = "time")]
    pub last: Option<DateTime<Utc>>,
    /// The occurrence now firing (the first missed one when past due).
    #[serde(alias = "next", deserialize_with = "time")]
    pub next: Option<DateTime<Utc>>,
    #[serde(alias = "lastUpdated", deserialize_with = "time")]
    pub last_updated: Option<DateTime<Utc>>,
}

/// `Metadata.sys`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SysMetadata {
    #[serde(alias = "methodName", deserialize_with = "string")]
    pub method_name: Option<String>,
    #[serde(alias = "utcNow", deserialize_with = "time")]
    pub utc_now: Option<DateTime<Utc>>,
    #[serde(alias = "randGuid", deserialize_with = "string")]
    pub rand_guid: Option<String>,
}

/// `Metadata.RetryContext`, present when the function's retry policy is retrying.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RetryContext {
    #[serde(alias = "retryCount", deserialize_with = "integer")]
    pub retry_count: i64,
    #[serde(alias = "maxRetryCount", deserialize_with = "integer")]
    pub max_retry_count: i64,
    pub exception: Value,
}

/// `Metadata`: `sys`, optional `RetryContext`, and trigger metadata the handler does not use.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InvocationMetadata {
    #[serde(deserialize_with = "optional_object")]
    pub sys: Option<SysMetadata>,
    #[serde(
        rename = "RetryContext",
        alias = "retryContext",
        deserialize_with = "optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_context: Option<RetryContext>,
    /// Queue trigger metadata (`CopyTable`): how many times the message has been dequeued,
    /// this one included (1 on the first delivery).
    #[serde(
        rename = "DequeueCount",
        alias = "dequeueCount",
        deserialize_with = "optional_integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub dequeue_count: Option<i64>,
    /// The queue message's id.
    #[serde(
        rename = "Id",
        alias = "id",
        deserialize_with = "string",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    #[serde(
        rename = "InsertionTime",
        alias = "insertionTime",
        deserialize_with = "time",
        skip_serializing_if = "Option::is_none"
    )]
    pub insertion_time: Option<DateTime<Utc>>,
    #[serde(
        rename = "ExpirationTime",
        alias = "expirationTime",
        deserialize_with = "time",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiration_time: Option<DateTime<Utc>>,
    #[serde(
        rename = "NextVisibleTime",
        alias = "nextVisibleTime",
        deserialize_with = "time",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_visible_time: Option<DateTime<Utc>>,
    #[serde(
        rename = "PopReceipt",
        alias = "popReceipt",
        deserialize_with = "string",
        skip_serializing_if = "Option::is_none"
    )]
    pub pop_receipt: Option<String>,
}

/// A decoded `CopyTable` invocation (queue trigger). The custom handler payload carries the
/// message as its text under the binding's name (`"Data": {"message": "{…}"}`), and the
/// trigger metadata (`DequeueCount`, `Id`, `InsertionTime`, …) beside `sys` in `Metadata`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueInvocation {
    /// The message: its JSON when the text is JSON, else the text itself.
    pub message: Value,
    pub metadata: InvocationMetadata,
}

/// A decoded `IncrementalCopy` invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimerInvocation {
    pub timer: TimerInfo,
    pub metadata: InvocationMetadata,
}

/// `Data.req`: the HTTP trigger's request (payload mode, no forwarding).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HttpRequestData {
    #[serde(alias = "url", deserialize_with = "string")]
    pub url: Option<String>,
    #[serde(alias = "method", deserialize_with = "string")]
    pub method: Option<String>,
    pub query: Value,
    /// Header name → values.
    pub headers: Value,
    pub params: Value,
    pub identities: Value,
    /// The request body: a string, already-parsed JSON, or null/absent when empty.
    #[serde(alias = "body", deserialize_with = "body")]
    pub body: Value,
}

/// A decoded `FullLoad` invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpInvocation {
    pub req: HttpRequestData,
    pub metadata: InvocationMetadata,
}

/// The invocation body. Members are optional here so that a missing one is reported with its
/// own path rather than its parent's; each function takes its own binding out of `Data`.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Data", alias = "data", default, deserialize_with = "object")]
    data: Option<Bindings>,
    #[serde(rename = "Metadata", alias = "metadata", default)]
    #[serde(deserialize_with = "optional_object")]
    metadata: Option<InvocationMetadata>,
}

#[derive(Deserialize)]
struct Bindings {
    #[serde(default, deserialize_with = "object")]
    timer: Option<TimerInfo>,
    #[serde(default, deserialize_with = "object")]
    req: Option<HttpRequestData>,
    #[serde(default, deserialize_with = "queue_message")]
    message: Option<Value>,
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

/// A `T` that was a JSON object (derived structs alone would take an array too).
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Object<T>, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        fn found<T, E: de::Error>(kind: &str) -> Result<T, E> {
            Err(E::custom(format!("expected an object, found {kind}")))
        }
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
            fn visit_unit<E: de::Error>(self) -> Result<T, E> {
                found("null")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
                found("a boolean")
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
                found("a number")
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
                found("a number")
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
                found("a number")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<T, E> {
                found("a string")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
                found("an array")
            }
        }
        deserializer
            .deserialize_any(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

/// A member that must be an object when present (null is refused).
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Object::deserialize(d).map(|Object(t)| Some(t))
}

/// A member that is an object, or null/absent.
fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<Object<T>>::deserialize(d)?.map(|Object(t)| t))
}

/// A scalar member, null as absent, picked out of the JSON value by `pick`.
fn scalar<'de, D: Deserializer<'de>, T>(
    d: D,
    expected: &str,
    pick: impl FnOnce(&Value) -> Option<T>,
) -> Result<Option<T>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(v) => pick(&v)
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("expected {expected}, found {}", kind(&v)))),
    }
}

fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    scalar(d, "a string", |v| v.as_str().map(str::to_string))
}

fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(optional_integer(d)?.unwrap_or(0))
}

fn optional_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    scalar(d, "an integer", Value::as_i64)
}

/// `Data.message`: the queue message's text (or, from a host that parsed it, its JSON).
fn queue_message<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    scalar(d, "a string or an object", |v| {
        (v.is_string() || v.is_object()).then(|| v.clone())
    })
}

pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(scalar(d, "a boolean", Value::as_bool)?.unwrap_or(false))
}

/// A host timestamp ([`parse_host_time`]).
fn time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let Some(text) = scalar(d, "a timestamp string", |v| v.as_str().map(str::to_string))? else {
        return Ok(None);
    };
    parse_host_time(&text).map_err(|InvalidTime| {
        de::Error::custom(format!(
            "invalid timestamp {:?} (expected ISO 8601, e.g. 2026-11-21T10:15:00Z)",
            text.chars().take(64).collect::<String>()
        ))
    })
}

/// `Data.req.Body`: the host passes the caller's body as a string, or as parsed JSON when it
/// is an object.
fn body<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    let body = scalar(d, "a string", |v| {
        (v.is_string() || v.is_object()).then(|| v.clone())
    })?;
    Ok(body.unwrap_or(Value::Null))
}

/// `tables`: `schema.table` names ([`TableRef::parse`]), each listed once; null is absent.
pub(super) fn tables<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TableRef>, D::Error> {
    struct Tables;
    impl<'de> Visitor<'de> for Tables {
        type Value = Vec<TableRef>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of \"schema.table\" strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<TableRef>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut items: A) -> Result<Vec<TableRef>, A::Error> {
            let mut tables = Vec::new();
            while let Some(table) = items.next_element_seed(Table(&tables))? {
                tables.push(table);
            }
            Ok(tables)
        }
    }
    d.deserialize_any(Tables)
}

/// One entry of `tables`, refused when it repeats one already listed (the error then names
/// its index).
struct Table<'a>(&'a [TableRef]);

impl<'de> DeserializeSeed<'de> for Table<'_> {
    type Value = TableRef;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TableRef, D::Error> {
        let value = Value::deserialize(d)?;
        let text = value.as_str().ok_or_else(|| {
            de::Error::custom(format!(
                "expected a \"schema.table\" string, found {}",
                kind(&value)
            ))
        })?;
        let table = TableRef::parse(text).map_err(de::Error::custom)?;
        if self.0.contains(&table) {
            return Err(de::Error::custom(format!("{table} is listed twice")));
        }
        Ok(table)
    }
}

/// Parses raw invocation bytes as JSON (the error is `body: not valid JSON: …`).
pub fn parse_json(body: &[u8]) -> Result<Value, PayloadError> {
    serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))
}

/// Decodes an invocation body: `Data` must be there; `Metadata` may be absent.
fn envelope(root: &Value) -> Result<(Bindings, InvocationMetadata), PayloadError> {
    let Object(envelope): Object<Envelope> =
        serde_path_to_error::deserialize(root).map_err(RequestError::from)?;
    let data = envelope.data.ok_or(RequestError::new("Data", "missing"))?;
    Ok((data, envelope.metadata.unwrap_or_default()))
}

impl InvocationMetadata {
    /// `Metadata.sys.UtcNow`, when the host sent it.
    pub fn utc_now(&self) -> Option<DateTime<Utc>> {
        self.sys.as_ref().and_then(|s| s.utc_now)
    }
}

impl TimerInvocation {
    /// Decodes an `IncrementalCopy` invocation body.
    pub fn from_json(root: &Value) -> Result<TimerInvocation, PayloadError> {
        let root = timer_text_decoded(root)?;
        let (binding, metadata) = envelope(&root)?;
        let timer = binding
            .timer
            .ok_or(RequestError::new("Data.timer", "missing"))?;
        Ok(TimerInvocation { timer, metadata })
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

/// Some hosts hand trigger values over as JSON text: `Data.timer` then holds the object's
/// text, which is decoded in place first so that errors inside it still carry their path.
fn timer_text_decoded(root: &Value) -> Result<Cow<'_, Value>, PayloadError> {
    let Some(Value::String(text)) = root.get("Data").and_then(|d| d.get(TIMER_BINDING)) else {
        return Ok(Cow::Borrowed(root));
    };
    let timer: Value = serde_json::from_str(text).map_err(|_| {
        RequestError::new(
            "Data.timer",
            "expected an object (or the JSON text of one), found a string that is not JSON",
        )
    })?;
    let mut root = root.clone();
    root["Data"][TIMER_BINDING] = timer;
    Ok(Cow::Owned(root))
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
        let (binding, metadata) = envelope(root)?;
        let req = binding
            .req
            .ok_or(RequestError::new("Data.req", "missing"))?;
        Ok(HttpInvocation { req, metadata })
    }
}

impl QueueInvocation {
    /// Decodes a `CopyTable` invocation body: `Data.message` must be there, and
    /// `Metadata.DequeueCount`, when sent, at least 1.
    pub fn from_json(root: &Value) -> Result<QueueInvocation, PayloadError> {
        let (binding, metadata) = envelope(root)?;
        let message = binding
            .message
            .ok_or(RequestError::new("Data.message", "missing"))?;
        if metadata.dequeue_count.is_some_and(|n| n < 1) {
            return Err(RequestError::new(
                "Metadata.DequeueCount",
                "must be at least 1 (the first delivery counts 1)",
            )
            .into());
        }
        let message = match message {
            Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            other => other,
        };
        Ok(QueueInvocation { message, metadata })
    }

    /// How many times the message has been dequeued, this delivery included (1 when the
    /// host did not say).
    pub fn dequeue_count(&self) -> i64 {
        self.metadata.dequeue_count.unwrap_or(1)
    }
}

/// The `CopyTable` message from `Data.message` ([`TableMessage`]'s fields, strictly:
/// unknown keys are refused, so a message from another version is not half-understood).
/// Error paths start with `Data.message`.
pub fn table_message(message: &Value) -> Result<TableMessage, RequestError> {
    message_of(message)
}

/// A queue message of type `T` from `Data.message`, strictly; error paths start with
/// `Data.message`.
fn message_of<T: for<'de> Deserialize<'de>>(message: &Value) -> Result<T, RequestError> {
    let prefixed = |e: RequestError| {
        let field = if e.field == "body" {
            "Data.message".to_string()
        } else {
            format!("Data.message.{}", e.field)
        };
        RequestError { field, ..e }
    };
    let Object(message): Object<T> = serde_path_to_error::deserialize(message)
        .map_err(RequestError::from)
        .map_err(prefixed)?;
    Ok(message)
}

/// The `LoadRange` message from `Data.message` ([`super::RangeMessage`]'s fields, strictly,
/// as [`table_message`]).
pub fn range_message(message: &Value) -> Result<super::RangeMessage, RequestError> {
    message_of(message)
}

/// `table` of a [`TableMessage`]: one `schema.table` name.
pub(super) fn table<'de, D: Deserializer<'de>>(d: D) -> Result<TableRef, D::Error> {
    let value = Value::deserialize(d)?;
    let text = value.as_str().ok_or_else(|| {
        de::Error::custom(format!(
            "expected a \"schema.table\" string, found {}",
            kind(&value)
        ))
    })?;
    TableRef::parse(text).map_err(de::Error::custom)
}

/// A required host timestamp ([`parse_host_time`]; `0001-01-01` is refused).
pub(super) fn required_time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    time(d)?.ok_or_else(|| de::Error::custom("expected a timestamp, e.g. 2026-11-21T10:15:00Z"))
}

/// The FullLoad request from the HTTP body: `{"tables":["dbo.customers"],"reset":true}`, by
/// [`FullLoadRequest`]'s `Deserialize`. An absent, null, empty or blank body (and `{}`) means
/// every configured table, no reset.
pub fn full_load_request(body: &Value) -> Result<FullLoadRequest, RequestError> {
    let parsed;
    let body = match body {
        Value::String(text) if text.trim().is_empty() => &Value::Null,
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|e| RequestError::new("body", format!("not valid JSON: {e}")))?;
            &parsed
        }
        other => other,
    };
    let request: Option<Object<FullLoadRequest>> = serde_path_to_error::deserialize(body)?;
    Ok(request.map_or_else(FullLoadRequest::default_all, |Object(r)| r))
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
                ..InvocationMetadata::default()
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
            (
                json!({"tables": null, "reset": null}),
                FullLoadRequest::default_all(),
            ),
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
            ("{\"\":1}", "\"\""),
            ("[\"dbo.a\"]", "body"),
            ("{not json", "body"),
        ];
        for (body, field) in cases {
            let e = full_load_request(&json!(body)).expect_err(body);
            assert_eq!(e.field, *field, "{body}: {e}");
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }

    /// The custom handlers page's queue payload: the message as text, the trigger metadata
    /// beside `sys`.
    fn queue_payload(message: Value) -> Value {
        json!({
            "Data": {"message": message},
            "Metadata": {
                "DequeueCount": 1,
                "ExpirationTime": "2026-11-28T10:15:01+00:00",
                "Id": "800ae4b3-bdd2-4c08-badd-f08e5a34b865",
                "InsertionTime": "2026-11-21T10:15:01+00:00",
                "NextVisibleTime": "2026-11-21T10:25:01+00:00",
                "PopReceipt": "AgAAAAMAAAAAAAAAAgtnj8x+1QE=",
                "sys": {"MethodName": "CopyTable", "UtcNow": "2026-11-21T10:15:01.2205399Z", "RandGuid": "24ad4c06-24ad-4e5b-8294-3da9714877e9"}
            }
        })
    }

    #[test]
    fn queue_invocations() {
        let text = json!("{\"table\":\"dbo.customers\",\"triggerTime\":\"2026-11-21T10:15:00Z\"}");
        let inv = QueueInvocation::from_json(&queue_payload(text)).unwrap();
        assert_eq!(inv.dequeue_count(), 1);
        assert_eq!(
            inv.metadata.id.as_deref(),
            Some("800ae4b3-bdd2-4c08-badd-f08e5a34b865")
        );
        assert_eq!(inv.metadata.insertion_time, Some(t("2026-11-21T10:15:01Z")));
        assert_eq!(
            inv.metadata.pop_receipt.as_deref(),
            Some("AgAAAAMAAAAAAAAAAgtnj8x+1QE=")
        );
        let want = TableMessage {
            table: TableRef::parse("dbo.customers").unwrap(),
            trigger_time: t("2026-11-21T10:15:00Z"),
            is_past_due: false,
        };
        assert_eq!(table_message(&inv.message), Ok(want.clone()));
        // A host that passes the message as parsed JSON, camelCase metadata, no count.
        let mut parsed = queue_payload(
            json!({"table": "dbo.customers", "triggerTime": "2026-11-21T10:15:00", "isPastDue": true}),
        );
        let meta = parsed["Metadata"].as_object_mut().unwrap();
        meta.remove("DequeueCount");
        meta.remove("Id");
        meta.insert("id".into(), json!("x"));
        let inv = QueueInvocation::from_json(&parsed).unwrap();
        assert_eq!(inv.dequeue_count(), 1);
        assert_eq!(inv.metadata.id.as_deref(), Some("x"));
        assert_eq!(
            table_message(&inv.message),
            Ok(TableMessage {
                is_past_due: true,
                ..want.clone()
            })
        );
        // What the handler sends is what it reads back.
        let sent = serde_json::to_value(&want).unwrap();
        assert_eq!(
            sent,
            json!({"table": "dbo.customers", "triggerTime": "2026-11-21T10:15:00Z", "isPastDue": false})
        );
        assert_eq!(table_message(&sent), Ok(want));
    }

    #[test]
    fn queue_errors_name_the_field() {
        let good = queue_payload(json!("{}"));
        let mutate = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            v
        };
        let envelope: Vec<(Value, &str, &str)> = vec![
            (json!({}), "Data", "missing"),
            (json!({"Data": {}}), "Data.message", "missing"),
            (
                json!({"Data": {"message": 7}}),
                "Data.message",
                "found a number",
            ),
            (
                json!({"Data": {"message": [1]}}),
                "Data.message",
                "found an array",
            ),
            (
                mutate(&|v| v["Metadata"]["DequeueCount"] = json!("one")),
                "Metadata.DequeueCount",
                "expected an integer",
            ),
            (
                mutate(&|v| v["Metadata"]["DequeueCount"] = json!(0)),
                "Metadata.DequeueCount",
                "at least 1",
            ),
            (
                mutate(&|v| v["Metadata"]["InsertionTime"] = json!("soon")),
                "Metadata.InsertionTime",
                "invalid timestamp",
            ),
            (
                mutate(&|v| v["Metadata"]["Id"] = json!(5)),
                "Metadata.Id",
                "expected a string",
            ),
        ];
        for (payload, field, text) in envelope {
            let e = QueueInvocation::from_json(&payload).expect_err(field);
            assert_eq!(e.field(), field, "{e}");
            assert!(e.to_string().contains(text), "{e}");
        }
        let messages: Vec<(Value, &str, &str)> = vec![
            (json!("not json"), "Data.message", "expected an object"),
            (json!("[1]"), "Data.message", "expected an object"),
            (json!("{}"), "Data.message", "missing field `table`"),
            (
                json!("{\"table\":\"customers\",\"triggerTime\":\"2026-11-21T10:15:00Z\"}"),
                "Data.message.table",
                "schema",
            ),
            (
                json!("{\"table\":7,\"triggerTime\":\"2026-11-21T10:15:00Z\"}"),
                "Data.message.table",
                "found a number",
            ),
            (
                json!("{\"table\":\"dbo.a\",\"triggerTime\":\"later\"}"),
                "Data.message.triggerTime",
                "invalid timestamp",
            ),
            (
                json!("{\"table\":\"dbo.a\",\"triggerTime\":\"0001-01-01T00:00:00\"}"),
                "Data.message.triggerTime",
                "expected a timestamp",
            ),
            (
                json!("{\"table\":\"dbo.a\",\"triggerTime\":\"2026-11-21T10:15:00Z\",\"from\":1}"),
                "Data.message.from",
                "unknown field",
            ),
        ];
        for (message, field, text) in messages {
            let inv = QueueInvocation::from_json(&queue_payload(message.clone())).unwrap();
            let e = table_message(&inv.message).expect_err(field);
            assert_eq!(e.field, field, "{message}: {e}");
            assert!(e.to_string().contains(text), "{message}: {e}");
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
