//! The idle-request scenario: list twice per round with the idle time between, through one Client,
//! so the second list gets whatever connection the library's pool kept across the idle time.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::json;

use crate::emit::{emit, error_chain, fields};
use crate::observe::Observer;
use crate::settings::Settings;

pub async fn run(client: Client, settings: &Settings, observer: &Observer) {
    let api: Api<ConfigMap> = Api::namespaced(client, &settings.namespace);
    for round in 1..=settings.rounds {
        for request in 1..=2u32 {
            if request == 2 {
                tokio::time::sleep(settings.idle).await;
            }
            emit(
                "request-sent",
                fields([("round", json!(round)), ("request", json!(request))]),
            );
            observer.take_attempts();
            let result = api.list(&ListParams::default()).await;
            let mut done = fields([
                ("round", json!(round)),
                ("request", json!(request)),
                ("attempts", json!(observer.take_attempts())),
            ]);
            match result {
                Ok(list) => {
                    // Api::list returns Ok only for a 2xx answer, and kube-apiserver answers a
                    // successful LIST with 200.
                    done.insert("ok".to_owned(), json!(true));
                    done.insert("status".to_owned(), json!(200));
                    done.insert("items".to_owned(), json!(list.items.len()));
                }
                Err(err) => {
                    done.insert("ok".to_owned(), json!(false));
                    done.insert("message".to_owned(), json!(error_chain(&err)));
                    if let kube::Error::Api(status) = &err {
                        done.insert("status".to_owned(), json!(status.code));
                    }
                }
            }
            emit("request-done", done);
        }
    }
}
