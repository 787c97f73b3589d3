//! The watch scenario: `watcher(api, watcher::Config::default()).default_backoff()`, the way kube's
//! docs write a long-running watch, with every item printed.

use std::collections::HashSet;
use std::pin::pin;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::emit::{emit, error_chain, fields};

/// Prints one event-seen line. kube folds ADDED and MODIFIED into `Apply`; the contract's `type`
/// is derived from whether the name was known, and `kubeEvent` keeps what the library said.
fn seen(kind: &str, kube_event: &str, cm: &ConfigMap) {
    let value = cm
        .data
        .as_ref()
        .and_then(|d| d.get("value"))
        .map_or(Value::Null, |v| json!(v));
    emit(
        "event-seen",
        fields([
            ("type", json!(kind)),
            ("kubeEvent", json!(kube_event)),
            ("name", json!(cm.name_any())),
            ("value", value),
            ("resourceVersion", json!(cm.resource_version())),
        ]),
    );
}

/// Watch ConfigMaps in the namespace until the process is stopped. The library lists, watches,
/// re-watches and backs off by itself; the loop only prints what the stream yields.
pub async fn run(client: Client, namespace: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let mut known: HashSet<String> = HashSet::new();
    let mut stream = pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::Apply(cm)) => {
                let kind = if known.insert(cm.name_any()) {
                    "ADDED"
                } else {
                    "MODIFIED"
                };
                seen(kind, "Apply", &cm);
            }
            Ok(watcher::Event::InitApply(cm)) => {
                known.insert(cm.name_any());
                seen("ADDED", "InitApply", &cm);
            }
            Ok(watcher::Event::Delete(cm)) => {
                known.remove(&cm.name_any());
                seen("DELETED", "Delete", &cm);
            }
            Ok(watcher::Event::Init) => {
                // A (re-)list starts: what follows replaces what was known. Not a contract line;
                // kept as evidence of when the library re-listed.
                known.clear();
                emit("watcher-event", fields([("kubeEvent", json!("Init"))]));
            }
            Ok(watcher::Event::InitDone) => emit("watcher-event", fields([("kubeEvent", json!("InitDone"))])),
            Err(err) => emit("error", fields([("message", json!(error_chain(&err)))])),
        }
    }
    // The default backoff never gives up, so the stream does not end; if it ever did, the
    // watch would be over, and that must not look like a quiet success.
    emit("error", fields([("message", json!("the watcher stream ended"))]));
}
