//! The deployment files against the published JSON Schemas, and against the code.
//!
//! Schemas are read from `../shared/schemas` (searched upwards from the crate, so worktrees
//! nested one level deeper find it too) or from `CDC_COPY_SCHEMAS_DIR`. Validation is offline:
//! the jsonschema dev-dependency is built without `resolve-http`/`resolve-file`, so any
//! `$ref` to a remote URL is replaced by `{}` (accept anything) before compiling, and the
//! number replaced is printed. host.json, function.json and local.settings.json schemas
//! carry only local (`#/definitions/…`) refs today, so for them nothing is stripped.
//!
//! One upstream quirk: function.json's schema declares draft-04 but uses `const` (a draft-06
//! keyword) to tell `sql`/`mysql` output bindings apart. Under strict draft-04 rules `const` is
//! ignored, so every binding also matches `sqlBinding` and the `oneOf` fails for ANY
//! function.json (Python's jsonschema agrees). Editors read it with `const` honoured, so we
//! validate that schema as draft-07, which changes nothing else it uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cdc_copy::config::{Settings, SETTINGS};
use cdc_copy::host::payload::{
    HTTP_BINDING, HTTP_OUTPUT_BINDING, POISON_OUTPUT_BINDING, QUEUE_BINDING, TABLES_OUTPUT_BINDING,
    TIMER_BINDING,
};
use serde_json::{json, Value};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schemas_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CDC_COPY_SCHEMAS_DIR") {
        return PathBuf::from(dir);
    }
    let manifest = manifest_dir();
    manifest
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared").join("schemas"))
        .find(|p| p.join("host.json.schema.json").is_file())
        .unwrap_or_else(|| {
            panic!(
                "JSON Schemas not found in ../shared/schemas above {}; set CDC_COPY_SCHEMAS_DIR",
                manifest.display()
            )
        })
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Replaces every remote `$ref` (not starting with `#`) by an empty schema; returns how many.
fn strip_remote_refs(schema: &mut Value) -> usize {
    match schema {
        Value::Object(map) => {
            let remote = map
                .get("$ref")
                .and_then(Value::as_str)
                .is_some_and(|r| !r.starts_with('#'));
            if remote {
                map.clear();
                return 1;
            }
            map.values_mut().map(strip_remote_refs).sum()
        }
        Value::Array(items) => items.iter_mut().map(strip_remote_refs).sum(),
        _ => 0,
    }
}

fn validator(schema_file: &str) -> jsonschema::Validator {
    let mut schema = read_json(&schemas_dir().join(schema_file));
    let stripped = strip_remote_refs(&mut schema);
    println!("{schema_file}: {stripped} remote $ref(s) replaced by {{}}");
    let mut options = jsonschema::options();
    if schema_file == "function.json.schema.json" {
        schema["$schema"] = json!("http://json-schema.org/draft-07/schema#");
        options = options.with_draft(jsonschema::Draft::Draft7);
    }
    options
        .build(&schema)
        .unwrap_or_else(|e| panic!("{schema_file} does not compile: {e}"))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

fn assert_valid(schema_file: &str, file: &str) -> Value {
    let instance = read_json(&manifest_dir().join(file));
    let errors = errors(&validator(schema_file), &instance);
    assert!(
        errors.is_empty(),
        "{file} against {schema_file}:\n{}",
        errors.join("\n")
    );
    instance
}

#[test]
fn host_json_is_valid_and_per_contract() {
    let host = assert_valid("host.json.schema.json", "host.json");
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "handler"
    );
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], false);
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    assert_eq!(host["functionTimeout"], "00:30:00");
}

#[test]
fn incremental_copy_function_json() {
    let f = assert_valid("function.json.schema.json", "IncrementalCopy/function.json");
    let bindings = f["bindings"].as_array().expect("bindings");
    assert_eq!(bindings.len(), 2);
    let timer = &bindings[0];
    let tables = &bindings[1];
    assert_eq!(
        (&tables["type"], &tables["direction"], &tables["name"]),
        (
            &json!("queue"),
            &json!("out"),
            &json!(TABLES_OUTPUT_BINDING)
        ),
        "CDC_FANOUT=queue answers with Outputs.{TABLES_OUTPUT_BINDING}"
    );
    assert_eq!(tables["queueName"], "cdc-copy-tables");
    assert_eq!(tables["connection"], "AzureWebJobsStorage");
    assert_eq!(timer["type"], "timerTrigger");
    assert_eq!(timer["direction"], "in");
    assert_eq!(
        timer["name"], TIMER_BINDING,
        "the handler reads Data.{TIMER_BINDING}"
    );
    assert_eq!(timer["schedule"], "%INCREMENTAL_COPY_SCHEDULE%");
    assert_eq!(
        timer["useMonitor"], true,
        "ScheduleStatus is needed for trigger times"
    );
    assert_eq!(
        timer["runOnStartup"], false,
        "would fire on every start/scale-out"
    );
    assert_eq!(f["retry"]["strategy"], "exponentialBackoff");
}

/// The queue-triggered function: its trigger binding is what the handler reads, its
/// `poison` output is the trigger queue's `-poison` queue (where the host moves messages too).
#[test]
fn copy_table_function_json() {
    let f = assert_valid("function.json.schema.json", "CopyTable/function.json");
    let bindings = f["bindings"].as_array().expect("bindings");
    assert_eq!(bindings.len(), 2);
    let (trigger, poison) = (&bindings[0], &bindings[1]);
    assert_eq!(trigger["type"], "queueTrigger");
    assert_eq!(trigger["direction"], "in");
    assert_eq!(
        trigger["name"], QUEUE_BINDING,
        "the handler reads Data.{QUEUE_BINDING}"
    );
    assert_eq!(trigger["queueName"], "cdc-copy-tables");
    assert_eq!(poison["type"], "queue");
    assert_eq!(poison["direction"], "out");
    assert_eq!(poison["name"], POISON_OUTPUT_BINDING);
    assert_eq!(
        poison["queueName"],
        format!("{}-poison", trigger["queueName"].as_str().unwrap())
    );
    for b in bindings {
        assert_eq!(b["connection"], "AzureWebJobsStorage", "{b}");
    }
    assert!(
        f.get("retry").is_none(),
        "queue triggers retry through maxDequeueCount, not a retry policy"
    );
}

/// host.json's queue settings: one message at a time per batch slot, at most four tables
/// per instance (the memory budget of CDC_TABLE_CONCURRENCY's default), and the handler's
/// CDC_QUEUE_MAX_DEQUEUE_COUNT default equal to maxDequeueCount.
#[test]
fn host_json_queue_settings() {
    let host = read_json(&manifest_dir().join("host.json"));
    let queues = &host["extensions"]["queues"];
    let concurrency =
        queues["batchSize"].as_u64().unwrap() + queues["newBatchThreshold"].as_u64().unwrap();
    assert_eq!(concurrency, 4, "batchSize + newBatchThreshold");
    let max = SETTINGS
        .iter()
        .find(|s| s.name == "CDC_QUEUE_MAX_DEQUEUE_COUNT")
        .and_then(|s| s.default)
        .unwrap();
    assert_eq!(queues["maxDequeueCount"].to_string(), max);
    assert_eq!(queues["visibilityTimeout"], "00:00:30");
    assert_eq!(queues["messageEncoding"], "base64");
}

#[test]
fn full_load_function_json() {
    let f = assert_valid("function.json.schema.json", "FullLoad/function.json");
    let bindings = f["bindings"].as_array().expect("bindings");
    let input = bindings
        .iter()
        .find(|b| b["direction"] == "in")
        .expect("trigger");
    let output = bindings
        .iter()
        .find(|b| b["direction"] == "out")
        .expect("output");
    assert_eq!(input["type"], "httpTrigger");
    assert_eq!(
        input["name"], HTTP_BINDING,
        "the handler reads Data.{HTTP_BINDING}"
    );
    assert_eq!(input["methods"], json!(["post"]));
    assert_eq!(input["authLevel"], "function");
    assert_eq!(output["type"], "http");
    assert_eq!(
        output["name"], HTTP_OUTPUT_BINDING,
        "the handler answers in Outputs.{HTTP_OUTPUT_BINDING}"
    );
}

#[test]
fn local_settings_example_is_valid_and_matches_settings() {
    let local = assert_valid(
        "local.settings.json.schema.json",
        "local.settings.example.json",
    );
    let values = local["Values"].as_object().expect("Values");
    assert_eq!(values["FUNCTIONS_WORKER_RUNTIME"], "custom");
    assert_eq!(values["AzureWebJobsStorage"], "UseDevelopmentStorage=true");

    let documented: BTreeSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
    let in_example: BTreeSet<&str> = values.keys().map(String::as_str).collect();
    let cdc = |set: &BTreeSet<&str>| -> BTreeSet<String> {
        set.iter()
            .filter(|n| n.starts_with("CDC_"))
            .map(|n| n.to_string())
            .collect()
    };
    assert_eq!(
        cdc(&in_example),
        cdc(&documented),
        "CDC_ settings: example vs config::SETTINGS"
    );
    for name in &in_example {
        let host_setting = matches!(*name, "FUNCTIONS_WORKER_RUNTIME" | "AzureWebJobsStorage");
        assert!(
            host_setting || documented.contains(name),
            "{name} is in the example but not in config::SETTINGS"
        );
    }
    assert!(
        in_example.contains("INCREMENTAL_COPY_SCHEDULE"),
        "the timer needs its schedule"
    );

    // The example works as is (with its placeholder password).
    let vars = values
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string values").to_string()))
        .collect();
    let settings = Settings::from_map(&vars).unwrap_or_else(|e| panic!("example settings: {e}"));
    assert_eq!(settings.schedule.as_deref(), Some("0 */5 * * * *"));
}

/// Validation is not vacuous: each schema refuses a broken file.
#[test]
fn schemas_refuse_broken_files() {
    let host = validator("host.json.schema.json");
    let mut bad_host = read_json(&manifest_dir().join("host.json"));
    bad_host["functionTimeout"] = json!("30 minutes");
    assert!(
        !errors(&host, &bad_host).is_empty(),
        "functionTimeout pattern"
    );
    let mut bad_host = read_json(&manifest_dir().join("host.json"));
    bad_host["customHandler"]["enableForwardingHttpRequest"] = json!("no");
    assert!(!errors(&host, &bad_host).is_empty(), "boolean");

    let function = validator("function.json.schema.json");
    let mut bad = read_json(&manifest_dir().join("IncrementalCopy/function.json"));
    bad["retry"]["minimumInterval"] = json!("10s");
    assert!(
        !errors(&function, &bad).is_empty(),
        "retry interval pattern"
    );
    let mut bad = read_json(&manifest_dir().join("IncrementalCopy/function.json"));
    bad["bindings"][0]
        .as_object_mut()
        .expect("binding")
        .remove("name");
    assert!(!errors(&function, &bad).is_empty(), "binding without name");
    let mut bad = read_json(&manifest_dir().join("FullLoad/function.json"));
    bad["bindings"][0]["authLevel"] = json!("everyone");
    assert!(!errors(&function, &bad).is_empty(), "authLevel enum");

    let local = validator("local.settings.json.schema.json");
    let bad_local = json!({"IsEncrypted": "no", "Values": {}});
    assert!(
        !errors(&local, &bad_local).is_empty(),
        "IsEncrypted boolean"
    );
}

#[test]
fn settings_doc_lists_every_setting() {
    let doc =
        std::fs::read_to_string(manifest_dir().join("docs/settings.md")).expect("docs/settings.md");
    for s in SETTINGS {
        assert!(
            doc.contains(&format!("`{}`", s.name)),
            "docs/settings.md lacks `{}`",
            s.name
        );
        if let Some(default) = s.default {
            assert!(
                doc.contains(default),
                "docs/settings.md lacks the default of {}",
                s.name
            );
        }
    }
}

#[test]
fn funcignore_keeps_the_app_and_drops_the_sources() {
    let ignore = std::fs::read_to_string(manifest_dir().join(".funcignore")).expect(".funcignore");
    let lines: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for excluded in ["target/", "src/", "tests/", "infra/", "local.settings.json"] {
        assert!(
            lines.contains(excluded),
            ".funcignore should exclude {excluded}"
        );
    }
    for kept in [
        "host.json",
        "handler",
        "IncrementalCopy/",
        "FullLoad/",
        "CopyTable/",
        "*.json",
    ] {
        assert!(!lines.contains(kept), ".funcignore must not exclude {kept}");
    }
}

/// Issue 12, parallel full load: `LoadRange` is triggered by `cdc-copy-ranges` and sends an
/// unfinished range's message back to it through its `ranges` output; `FullLoad` has the same
/// `ranges` output for the messages of a split load (`CDC_FANOUT=queue`). Deployed, not
/// ignored.
#[test]
fn load_range_function_json() {
    use cdc_copy::host::payload::RANGES_OUTPUT_BINDING;
    let f = assert_valid("function.json.schema.json", "LoadRange/function.json");
    let bindings = f["bindings"].as_array().expect("bindings");
    let (trigger, again) = (&bindings[0], &bindings[1]);
    assert_eq!(trigger["type"], "queueTrigger");
    assert_eq!(trigger["name"], QUEUE_BINDING);
    assert_eq!(trigger["queueName"], "cdc-copy-ranges");
    assert_eq!(again["type"], "queue");
    assert_eq!(again["direction"], "out");
    assert_eq!(again["name"], RANGES_OUTPUT_BINDING);
    assert_eq!(again["queueName"], trigger["queueName"]);
    for b in bindings {
        assert_eq!(b["connection"], "AzureWebJobsStorage", "{b}");
    }
    let full = assert_valid("function.json.schema.json", "FullLoad/function.json");
    let ranges = full["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == RANGES_OUTPUT_BINDING)
        .expect("FullLoad's ranges output");
    assert_eq!(ranges["type"], "queue");
    assert_eq!(ranges["queueName"], "cdc-copy-ranges");
    let ignore = std::fs::read_to_string(manifest_dir().join(".funcignore")).expect(".funcignore");
    assert!(!ignore.lines().any(|l| l.trim() == "LoadRange/"));
}

/// Every queue a function.json names exists in the Bicep with its `-poison` queue, so the
/// app's queue role (scoped to exactly those queues, rbac.bicep) covers every binding.
#[test]
fn every_bound_queue_and_its_poison_queue_is_deployed() {
    let bicep = std::fs::read_to_string(manifest_dir().join("infra/app/storage.bicep"))
        .expect("infra/app/storage.bicep");
    let mut bound = BTreeSet::new();
    for entry in std::fs::read_dir(manifest_dir()).expect("repo root") {
        let path = entry.expect("dir entry").path().join("function.json");
        if !path.is_file() {
            continue;
        }
        for binding in read_json(&path)["bindings"].as_array().expect("bindings") {
            if let Some(queue) = binding["queueName"].as_str() {
                bound.insert(queue.to_string());
            }
        }
    }
    assert!(bound.contains("cdc-copy-ranges"), "{bound:?}");
    for queue in &bound {
        let trigger = queue.strip_suffix("-poison").unwrap_or(queue);
        for name in [trigger.to_string(), format!("{trigger}-poison")] {
            assert!(
                bicep.contains(&format!("'{name}'")),
                "infra/app/storage.bicep does not create queue {name}"
            );
        }
    }
}
