//! Fan-out throughput (issue 12): `CDC_FANOUT=queue` over 100 tables × 10k changes each, with
//! 1, 2 and 4 handler instances behind the Functions host's queue listener.
//!
//! Run with `cargo bench --bench fanout` (release profile); `cargo bench --bench fanout -- 2`
//! runs only the 2-instance scenario; `CDC_BENCH_TABLES` and `CDC_BENCH_CHANGES` change the
//! size. docs/benchmarks.md, "Fan-out (issue 12)", records the figures.
//!
//! Why it is built like this:
//! - Each scenario runs in a child process of its own (`--scenario N`) with a fresh Azurite
//!   (blob and queue services), so no run inherits another's storage.
//! - The instances are `cdc_copy_testkit::queue::HandlerInstance`s: the production
//!   `jobs::Runner` behind `host::run`, each on a tokio runtime whose threads carry the
//!   instance's name, so the CPU time of each instance is read per thread from
//!   /proc/self/task. They share one in-process CDC model as SQL Server (generated tables:
//!   rows computed on demand), so the model's work is counted on the instance that asked.
//! - The host's listener is the stand-in of `cdc_copy_testkit::queue` (one message at a time
//!   per instance, as `batchSize` 1 would be); its CPU is the child's remaining threads.
//!   Azurite's CPU is read from /proc/<pid>/stat of its node processes, before and after.
//! - The clock starts when the timer's messages are on the queue and stops when the queue is
//!   empty: windows/s is tables ÷ that time; rows/s counts the change rows copied.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_copy::cdc::TableRef;
use cdc_copy::config::{Settings, StorageAccount};
use cdc_copy::host::{FullLoadRequest, TableMessage};
use cdc_copy::jobs::{self, Context};
use cdc_copy::report::Status;
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy_testkit::azurite::{unique_container, Azurite, AzuriteQueue};
use cdc_copy_testkit::model::CdcModel;
use cdc_copy_testkit::queue::{HandlerInstance, QueueClient, QueueFunction, QueueHost};
use cdc_copy_testkit::rows::{column_names, customer};
use chrono::{TimeZone, Utc};
use serde_json::json;

const SCENARIOS: [usize; 3] = [1, 2, 4];
const BASELINE_ROWS: u64 = 100;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of a /proc stat line, in clock ticks.
fn stat_ticks(stat: &str) -> u64 {
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// CPU ticks of this process's threads, by thread name.
fn thread_ticks() -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        *by_name.entry(name.trim().to_string()).or_default() += stat_ticks(&stat);
    }
    by_name
}

/// CPU ticks of every `node` process on the machine whose command line names `location`
/// (the Azurite processes of this run, identified by their workspace).
fn azurite_ticks(ports: &[u16]) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("azurite") && ports.iter().any(|p| cmdline.contains(&format!(" {p} ")))
        {
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            total += stat_ticks(&stat);
        }
    }
    total
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn scenario(instances: usize) -> serde_json::Value {
    let tables = env_u64("CDC_BENCH_TABLES", 100) as usize;
    let changes = env_u64("CDC_BENCH_CHANGES", 10_000);
    let azurite = Azurite::start();
    let queues = AzuriteQueue::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("standin")
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let start = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
        let model = CdcModel::new(start);
        let names: Vec<TableRef> = (0..tables)
            .map(|i| TableRef::parse(&format!("dbo.t{i:03}")).unwrap())
            .collect();
        for t in &names {
            model
                .create_generated_table(
                    t.clone(),
                    column_names(),
                    vec!["customer_id".to_string()],
                    BASELINE_ROWS,
                    customer,
                )
                .unwrap();
            model
                .enable_cdc(t, &format!("dbo_{}", t.table), true)
                .unwrap();
        }
        model.advance(chrono::Duration::seconds(1));
        let list: Vec<String> = names.iter().map(ToString::to_string).collect();
        let vars: std::collections::HashMap<String, String> = [
            (
                "CDC_SQL_CONNECTION_STRING",
                "Server=tcp:127.0.0.1,1;Database=db;User ID=u;Password=not-used;Encrypt=true",
            ),
            (
                "CDC_STORAGE_CONNECTION_STRING",
                azurite.connection_string.as_str(),
            ),
            ("CDC_CONTAINER", &unique_container("fanout")),
            ("CDC_TABLES", &list.join(",")),
            ("CDC_CAPTURE_WAIT_SECONDS", "0"),
            ("CDC_FANOUT", "queue"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let settings = Arc::new(Settings::from_map(&vars).expect("bench settings"));
        let storage: &StorageAccount = &settings.storage;
        // The full load stamps its window end with the job's clock: the model's.
        let clock = model.clone();
        let ctx = Context {
            clock: Arc::new(move || clock.now()),
            ..Context::new(
                settings.clone(),
                Arc::new(model.clone()),
                BlobTarget::new(storage, &settings.container).unwrap(),
            )
        };
        let load = jobs::full_load::run(
            &ctx,
            &FullLoadRequest::default_all(),
            Duration::from_secs(600),
        )
        .await;
        assert_eq!(load.status, Status::Done, "{:?}", load.logs());
        for t in &names {
            model.generated_inserts(t, changes, 100).unwrap();
        }
        model.advance(chrono::Duration::seconds(30));

        let queue = unique_container("tables");
        let function = QueueFunction {
            name: "CopyTable".into(),
            queue: queue.clone(),
            binding: "message".into(),
            outputs: [("poison".to_string(), format!("{queue}-poison"))].into(),
            max_dequeue_count: 5,
            retry_after: Duration::ZERO,
            lease: Duration::from_secs(600),
        };
        let standin = QueueHost::new(QueueClient::dev_account(&queues.endpoint()), function);
        standin.create_queues().await.unwrap();
        let handlers: Vec<Arc<HandlerInstance>> = (0..instances)
            .map(|i| {
                HandlerInstance::start(&settings, Arc::new(model.clone()), &format!("inst-{i}"))
            })
            .collect();
        for t in &names {
            let message = TableMessage {
                table: t.clone(),
                trigger_time: model.now(),
                is_past_due: false,
            };
            standin
                .client
                .put(&queue, &serde_json::to_string(&message).unwrap())
                .await
                .unwrap();
        }
        let ports = [azurite.blob_port, queues.port];
        let (threads_before, azurite_before) = (thread_ticks(), azurite_ticks(&ports));
        let started = Instant::now();
        let figures = futures::future::join_all(
            handlers
                .iter()
                .map(|h| standin.listen(&h.instance, Duration::from_millis(5))),
        )
        .await;
        let wall = started.elapsed().as_secs_f64();
        let (threads_after, azurite_after) = (thread_ticks(), azurite_ticks(&ports));
        let hz = ticks_per_second();
        let cpu = |prefix: &str| {
            threads_after
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .map(|(n, t)| t - threads_before.get(n).copied().unwrap_or(0))
                .sum::<u64>() as f64
                / hz
        };
        let per_instance: Vec<f64> = (0..instances).map(|i| cpu(&format!("inst-{i}"))).collect();
        let azurite_cpu = (azurite_after - azurite_before) as f64 / hz;
        let standin_cpu = cpu("standin");
        let succeeded: u64 = figures.iter().map(|f| f.succeeded).sum();
        assert_eq!(succeeded as usize, tables, "{figures:?}");
        for t in &names {
            let wm = model.watermark(t).unwrap();
            assert_eq!(wm.last_window_end, model.now(), "{t} copied");
        }
        let total_cpu: f64 = per_instance.iter().sum::<f64>() + azurite_cpu + standin_cpu;
        json!({
            "instances": instances,
            "tables": tables,
            "changes": changes,
            "wall_s": wall,
            "windows_per_s": tables as f64 / wall,
            "rows_per_s": (tables as u64 * changes) as f64 / wall,
            "cpu_per_instance_s": per_instance,
            "azurite_cpu_s": azurite_cpu,
            "standin_cpu_s": standin_cpu,
            "azurite_share": azurite_cpu / total_cpu.max(1e-9),
            "messages_per_instance": figures.iter().map(|f| f.succeeded).collect::<Vec<_>>(),
        })
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        let n: usize = args[i + 1].parse().expect("--scenario N");
        println!("RESULT {}", scenario(n));
        return;
    }
    let wanted: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let exe = std::env::current_exe().expect("current exe");
    println!(
        "| instances | wall s | windows/s | rows/s | CPU s per instance | Azurite CPU s (share) | stand-in CPU s | messages per instance |"
    );
    println!("|---:|---:|---:|---:|---|---:|---:|---|");
    for n in SCENARIOS
        .into_iter()
        .filter(|n| wanted.is_empty() || wanted.contains(n))
    {
        let out = Command::new(&exe)
            .args(["--scenario", &n.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("re-execute the bench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "scenario {n} failed: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or_else(|| panic!("scenario {n} printed no RESULT: {stdout}"));
        let r: serde_json::Value = serde_json::from_str(line).expect("RESULT is JSON");
        let per: Vec<String> = r["cpu_per_instance_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{:.1}", v.as_f64().unwrap()))
            .collect();
        println!(
            "| {n} | {:.1} | {:.1} | {:.0} | {} | {:.1} ({:.0} %) | {:.1} | {} |",
            r["wall_s"].as_f64().unwrap(),
            r["windows_per_s"].as_f64().unwrap(),
            r["rows_per_s"].as_f64().unwrap(),
            per.join(" / "),
            r["azurite_cpu_s"].as_f64().unwrap(),
            100.0 * r["azurite_share"].as_f64().unwrap(),
            r["standin_cpu_s"].as_f64().unwrap(),
            r["messages_per_instance"],
        );
    }
}
