//! Azure Storage queues for the queue-triggered functions: a small REST client (Shared Key,
//! signed by the product's own signer) and [`QueueHost`], a stand-in for the Functions host's
//! queue listener that invokes a queue-triggered function on N handler endpoints.
//!
//! Why a stand-in and not the Functions host: the host is not installable here, and what the
//! guarantees depend on is small and documented — the invocation payload, `DequeueCount`,
//! the lease (visibility timeout) that makes a message reappear when an instance dies with it,
//! the retry after a failed invocation, the move to `<queue>-poison` after `maxDequeueCount`
//! tries, and the output bindings written after a successful one. The stand-in does exactly
//! that against a real Azurite queue service, so redeliveries, duplicates and leases are
//! Azurite's, not ours. The rules it follows, with their sources, are in `docs/scale-out.md`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use cdc_copy::config::{AccountKey, DEV_ACCOUNT, DEV_ACCOUNT_KEY};
use cdc_copy::sink::sharedkey::{ms_date, SharedKey};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use url::Url;

/// The REST version the client speaks (Azurite 3.37 accepts it).
const VERSION: &str = "2021-12-02";

/// What went wrong talking to the queue service.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue request {what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("queue request {what} answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
}

/// One message as Get Messages returns it, its text decoded from base64 (the encoding the
/// Functions host uses by default, `messageEncoding: base64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub pop_receipt: String,
    pub dequeue_count: i64,
    pub insertion_time: Option<DateTime<Utc>>,
    pub expiration_time: Option<DateTime<Utc>>,
    pub next_visible_time: Option<DateTime<Utc>>,
    pub text: String,
}

/// A Queue service REST client for one account.
#[derive(Debug, Clone)]
pub struct QueueClient {
    http: reqwest::Client,
    endpoint: String,
    key: SharedKey,
}

impl QueueClient {
    /// A client of `endpoint` (`http://host:port/account`) signed with `key`.
    pub fn new(endpoint: &str, account: &str, key: AccountKey) -> QueueClient {
        QueueClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            key: SharedKey::new(account, key),
        }
    }

    /// A client of Azurite's development account at `endpoint`.
    pub fn dev_account(endpoint: &str) -> QueueClient {
        let key = AccountKey::from_base64(DEV_ACCOUNT_KEY).expect("the development key");
        QueueClient::new(endpoint, DEV_ACCOUNT, key)
    }

    /// Creates `queue` (no error if it exists).
    pub async fn create(&self, queue: &str) -> Result<(), QueueError> {
        self.send(
            "PUT",
            &format!("/{queue}"),
            None,
            &format!("create {queue}"),
        )
        .await
        .map(drop)
    }

    /// Puts a message whose text is `text` (sent base64-encoded), visible at once.
    pub async fn put(&self, queue: &str, text: &str) -> Result<(), QueueError> {
        let body = format!(
            "<QueueMessage><MessageText>{}</MessageText></QueueMessage>",
            base64::engine::general_purpose::STANDARD.encode(text)
        );
        self.send(
            "POST",
            &format!("/{queue}/messages"),
            Some(body),
            &format!("put to {queue}"),
        )
        .await
        .map(drop)
    }

    /// Gets up to `max` (1–32) messages, each then invisible to other readers for
    /// `visibility` (whole seconds, at least 1): the lease an instance holds while it works.
    pub async fn get(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        let path = format!(
            "/{queue}/messages?numofmessages={}&visibilitytimeout={}",
            max.clamp(1, 32),
            visibility.as_secs().max(1)
        );
        let xml = self
            .send("GET", &path, None, &format!("get from {queue}"))
            .await?;
        Ok(messages(&xml))
    }

    /// Every message visible now, without dequeuing it (Peek Messages, at most 32).
    pub async fn peek(&self, queue: &str) -> Result<Vec<String>, QueueError> {
        let path = format!("/{queue}/messages?peekonly=true&numofmessages=32");
        let xml = self
            .send("GET", &path, None, &format!("peek {queue}"))
            .await?;
        Ok(messages(&xml).into_iter().map(|m| m.text).collect())
    }

    /// Deletes a message this reader holds.
    pub async fn delete(&self, queue: &str, message: &Message) -> Result<(), QueueError> {
        let path = format!(
            "/{queue}/messages/{}?popreceipt={}",
            message.id,
            encode(&message.pop_receipt)
        );
        self.send("DELETE", &path, None, &format!("delete from {queue}"))
            .await
            .map(drop)
    }

    /// Makes a held message visible again after `after` (Update Message without new text):
    /// what the host does after a failed invocation (`visibilityTimeout` in host.json).
    pub async fn release(
        &self,
        queue: &str,
        message: &Message,
        after: Duration,
    ) -> Result<(), QueueError> {
        let path = format!(
            "/{queue}/messages/{}?popreceipt={}&visibilitytimeout={}",
            message.id,
            encode(&message.pop_receipt),
            after.as_secs()
        );
        self.send("PUT", &path, None, &format!("release in {queue}"))
            .await
            .map(drop)
    }

    /// The approximate number of messages in `queue`, invisible ones included (Get Queue
    /// Metadata): zero only when every message has been deleted.
    pub async fn count(&self, queue: &str) -> Result<u64, QueueError> {
        let url = self.url(&format!("/{queue}?comp=metadata"));
        let response = self
            .request("GET", &url, None, &format!("count {queue}"))
            .await?;
        Ok(response
            .headers()
            .get("x-ms-approximate-messages-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{path}", self.endpoint)).expect("a queue URL")
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        what: &str,
    ) -> Result<String, QueueError> {
        let url = self.url(path);
        let response = self.request(method, &url, body, what).await?;
        response.text().await.map_err(|source| QueueError::Http {
            what: what.to_string(),
            source,
        })
    }

    async fn request(
        &self,
        method: &str,
        url: &Url,
        body: Option<String>,
        what: &str,
    ) -> Result<reqwest::Response, QueueError> {
        let body = body.unwrap_or_default();
        let mut headers = vec![
            ("x-ms-date".to_string(), ms_date(Utc::now())),
            ("x-ms-version".to_string(), VERSION.to_string()),
        ];
        if !body.is_empty() {
            headers.push(("content-type".to_string(), "application/xml".to_string()));
        }
        let auth = self
            .key
            .authorization(method, url, &headers, Some(body.len() as u64));
        let mut request = self
            .http
            .request(method.parse().expect("an HTTP method"), url.clone())
            .header("authorization", auth)
            .body(body);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|source| QueueError::Http {
            what: what.to_string(),
            source,
        })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.text().await.unwrap_or_default();
            return Err(QueueError::Status {
                what: what.to_string(),
                status,
                body,
            });
        }
        Ok(response)
    }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The `<QueueMessage>` elements of a Get/Peek Messages answer.
fn messages(xml: &str) -> Vec<Message> {
    xml.split("<QueueMessage>")
        .skip(1)
        .map(|item| {
            let field = |tag: &str| element(item, tag).unwrap_or_default();
            let time = |tag: &str| {
                DateTime::parse_from_rfc2822(&field(tag))
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            };
            let text = base64::engine::general_purpose::STANDARD
                .decode(field("MessageText"))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_else(|| field("MessageText"));
            Message {
                id: field("MessageId"),
                pop_receipt: field("PopReceipt"),
                dequeue_count: field("DequeueCount").parse().unwrap_or(0),
                insertion_time: time("InsertionTime"),
                expiration_time: time("ExpirationTime"),
                next_visible_time: time("TimeNextVisible"),
                text,
            }
        })
        .collect()
}

/// The unescaped text of `<tag>…</tag>` in `xml`.
fn element(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// A queue-triggered function as function.json and host.json declare it.
#[derive(Debug, Clone)]
pub struct QueueFunction {
    /// The function (folder) name: the invocation is `POST /<name>`.
    pub name: String,
    /// The trigger's `queueName`.
    pub queue: String,
    /// The trigger's binding `name`: the key of the message in `Data`.
    pub binding: String,
    /// Queue output bindings: binding name → queue.
    pub outputs: BTreeMap<String, String>,
    /// host.json `extensions.queues.maxDequeueCount`.
    pub max_dequeue_count: i64,
    /// host.json `extensions.queues.visibilityTimeout`: how long a message stays invisible
    /// after a failed invocation before it is tried again.
    pub retry_after: Duration,
    /// How long a message stays invisible while an instance works on it: when the instance
    /// dies, the message reappears after this (the host renews the lease while it lives, so
    /// this is the real cost of a crash).
    pub lease: Duration,
}

impl QueueFunction {
    /// `<queue>-poison`: where the host moves a message after its last failed try.
    pub fn poison_queue(&self) -> String {
        format!("{}-poison", self.queue)
    }
}

/// What one instance's listener did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListenerFigures {
    pub invocations: u64,
    /// Invocations answered 2xx (the message was deleted).
    pub succeeded: u64,
    /// Invocations answered non-2xx (the message was released or poisoned).
    pub failed: u64,
    /// Messages moved to the poison queue by the host rules.
    pub poisoned: u64,
    /// Messages written to output bindings.
    pub outputs: u64,
}

/// One instance: the handler's base URL and a kill switch. Killing it is what SIGKILL of
/// the instance is to the host: the listener stops at once, with whatever message it held
/// still leased (it reappears after [`QueueFunction::lease`]).
#[derive(Debug, Clone)]
pub struct Instance {
    pub base_url: String,
    killed: Arc<AtomicBool>,
}

impl Instance {
    pub fn new(base_url: impl Into<String>) -> Instance {
        Instance {
            base_url: base_url.into(),
            killed: Arc::default(),
        }
    }

    /// Marks the instance dead: its listener lets go of nothing and stops.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// Plays the Functions host's queue listener for one function against handler instances.
#[derive(Debug, Clone)]
pub struct QueueHost {
    pub client: QueueClient,
    pub function: QueueFunction,
    http: reqwest::Client,
    invocation: Arc<AtomicU64>,
}

impl QueueHost {
    pub fn new(client: QueueClient, function: QueueFunction) -> QueueHost {
        QueueHost {
            client,
            function,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("HTTP client"),
            invocation: Arc::default(),
        }
    }

    /// Creates the trigger, poison and output queues.
    pub async fn create_queues(&self) -> Result<(), QueueError> {
        self.client.create(&self.function.queue).await?;
        self.client.create(&self.function.poison_queue()).await?;
        for queue in self.function.outputs.values() {
            self.client.create(queue).await?;
        }
        Ok(())
    }

    /// The invocation body the host posts for `message` (custom handler payload: the text
    /// under the binding's name in `Data`, the trigger metadata beside `sys`).
    pub fn payload(&self, message: &Message) -> Value {
        let time = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
        };
        json!({
            "Data": {self.function.binding.as_str(): message.text},
            "Metadata": {
                "DequeueCount": message.dequeue_count,
                "ExpirationTime": time(message.expiration_time),
                "Id": message.id,
                "InsertionTime": time(message.insertion_time),
                "NextVisibleTime": time(message.next_visible_time),
                "PopReceipt": message.pop_receipt,
                "sys": {
                    "MethodName": self.function.name,
                    "UtcNow": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    "RandGuid": uuid::Uuid::from_u128(rand::random()).to_string(),
                },
            },
        })
    }

    /// Runs `instance`'s listener until the trigger queue is empty (every message deleted,
    /// leased ones included) or the instance is killed. One message at a time per instance
    /// (`batchSize: 1`); polls every `poll` while nothing is visible.
    pub async fn listen(&self, instance: &Instance, poll: Duration) -> ListenerFigures {
        let mut figures = ListenerFigures::default();
        let queue = self.function.queue.clone();
        loop {
            if instance.is_killed() {
                return figures;
            }
            let got = self
                .client
                .get(&queue, 1, self.function.lease)
                .await
                .expect("get messages");
            let Some(message) = got.into_iter().next() else {
                if self.client.count(&queue).await.expect("queue count") == 0 {
                    return figures;
                }
                tokio::time::sleep(poll).await;
                continue;
            };
            if message.dequeue_count > self.function.max_dequeue_count {
                // Dequeued more often than allowed (its instances died with it): poison.
                self.poison(&message).await;
                figures.poisoned += 1;
                continue;
            }
            figures.invocations += 1;
            let answer = self.invoke(instance, &message).await;
            if instance.is_killed() {
                // Died with the message: nobody deletes or releases it; the lease runs out.
                return figures;
            }
            match answer {
                Some(outputs) => {
                    figures.succeeded += 1;
                    figures.outputs += self.write_outputs(&outputs).await;
                    self.client
                        .delete(&queue, &message)
                        .await
                        .expect("delete a handled message");
                }
                None if message.dequeue_count >= self.function.max_dequeue_count => {
                    figures.failed += 1;
                    figures.poisoned += 1;
                    self.poison(&message).await;
                }
                None => {
                    figures.failed += 1;
                    // Best effort, as the host's: a lost release only waits for the lease.
                    let _ = self
                        .client
                        .release(&queue, &message, self.function.retry_after)
                        .await;
                }
            }
        }
    }

    /// Posts the invocation; the response's `Outputs` on 2xx, `None` otherwise (a non-2xx
    /// answer, or no answer: the connection failed).
    async fn invoke(&self, instance: &Instance, message: &Message) -> Option<Value> {
        let n = self.invocation.fetch_add(1, Ordering::SeqCst);
        let url = format!("{}/{}", instance.base_url, self.function.name);
        let response = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Azure-Functions-InvocationId", format!("stand-in-{n}"))
            .json(&self.payload(message))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        Some(body.get("Outputs").cloned().unwrap_or(Value::Null))
    }

    /// Writes every output binding's messages to its queue (a string as it is, anything
    /// else as its JSON text; an array as one message per element). Returns how many.
    async fn write_outputs(&self, outputs: &Value) -> u64 {
        let mut written = 0;
        for (binding, queue) in &self.function.outputs {
            let items = match outputs.get(binding) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(items)) => items.clone(),
                Some(one) => vec![one.clone()],
            };
            for item in items {
                let text = match item {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                self.client
                    .put(queue, &text)
                    .await
                    .expect("write an output");
                written += 1;
            }
        }
        written
    }

    /// Moves `message` to the poison queue (copy, then delete), as the host does.
    async fn poison(&self, message: &Message) {
        self.client
            .put(&self.function.poison_queue(), &message.text)
            .await
            .expect("put to the poison queue");
        self.client
            .delete(&self.function.queue, message)
            .await
            .expect("delete a poisoned message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_messages_answers_are_read() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage>\
            <MessageId>5974b586-0df3-4e2d-ad0c-18e3892bfca2</MessageId>\
            <InsertionTime>Fri, 09 Oct 2009 21:04:30 GMT</InsertionTime>\
            <ExpirationTime>Fri, 16 Oct 2009 21:04:30 GMT</ExpirationTime>\
            <PopReceipt>YzQ4Yzg1MDIGM0MDFiZDAwYzEw</PopReceipt>\
            <TimeNextVisible>Fri, 09 Oct 2009 23:29:20 GMT</TimeNextVisible>\
            <DequeueCount>2</DequeueCount>\
            <MessageText>eyJ0YWJsZSI6ImRiby5hIn0=</MessageText></QueueMessage></QueueMessagesList>";
        let got = messages(xml);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "5974b586-0df3-4e2d-ad0c-18e3892bfca2");
        assert_eq!(got[0].dequeue_count, 2);
        assert_eq!(got[0].text, "{\"table\":\"dbo.a\"}");
        assert_eq!(
            got[0].insertion_time.map(|t| t.to_rfc3339()),
            Some("2009-10-09T21:04:30+00:00".to_string())
        );
        assert!(messages("<QueueMessagesList></QueueMessagesList>").is_empty());
        assert_eq!(element("<a>x &amp; y</a>", "a").as_deref(), Some("x & y"));
    }
}
