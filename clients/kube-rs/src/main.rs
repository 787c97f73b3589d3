//! The kube-rs column of the watchdrop matrix. It follows the watcher contract in
//! clients/README.md: settings come from WATCHDROP_* variables, and what the library did is
//! printed as JSON lines on stdout. It adds no timeouts, keepalives or retries of its own: what
//! kube does by default (its client stack, its watcher's 290 s watch timeout and idle timeout, and
//! the default backoff its docs recommend) is what the matrix measures.

mod emit;
mod idle;
mod observe;
mod settings;
mod watch;

use std::process::ExitCode;

use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::emit::{emit, error_chain, fields, set_stopping};
use crate::observe::Observer;
use crate::settings::Settings;

const CLIENT: &str = "kube-rs";
const LIBRARY: &str = "kube";

const EXIT_CRASH: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The cell's kubeconfig as kube's docs load a given file, or the pod's in-cluster config when
/// WATCHDROP_KUBECONFIG is unset (kubernetes backend).
async fn load_config(settings: &Settings) -> Result<Config, String> {
    match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| error_chain(&e))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| error_chain(&e))
        }
        None => Config::incluster().map_err(|e| error_chain(&e)),
    }
}

/// The client every request of the run goes through: the stack `Client::try_from(config)` builds,
/// with the observing layer on top.
fn build_client(config: Config, observer: &Observer) -> Result<Client, String> {
    let builder = ClientBuilder::try_from(config).map_err(|e| error_chain(&e))?;
    Ok(builder.with_layer(observer).build())
}

async fn run(settings: Settings) -> ExitCode {
    let config = match load_config(&settings).await {
        Ok(config) => config,
        Err(message) => {
            emit("error", fields([("message", json!(message))]));
            return ExitCode::from(EXIT_CRASH);
        }
    };
    let observer = Observer::default();
    let client = match build_client(config, &observer) {
        Ok(client) => client,
        Err(message) => {
            emit("error", fields([("message", json!(message))]));
            return ExitCode::from(EXIT_CRASH);
        }
    };
    if settings.scenario == settings::SCENARIO_IDLE_REQUEST {
        idle::run(client, &settings, &observer).await;
        return ExitCode::SUCCESS;
    }
    watch::run(client, &settings.namespace).await;
    // The watch scenario runs until SIGTERM, even if the stream ended (already reported).
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}

#[tokio::main]
async fn main() -> ExitCode {
    // kube logs through `tracing`, as its examples show with tracing_subscriber; stderr keeps
    // those lines (warnings and errors at the default level) as evidence.
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    emit(
        "started",
        fields([
            ("client", json!(CLIENT)),
            ("library", json!(LIBRARY)),
            ("version", json!(env!("WATCHDROP_KUBE_VERSION"))),
            ("style", json!(settings::reported_style(env))),
            ("k8s-openapi", json!(env!("WATCHDROP_K8S_OPENAPI_VERSION"))),
            ("rustc", json!(env!("WATCHDROP_RUSTC_VERSION"))),
        ]),
    );
    let settings = match settings::from_env(env) {
        Ok(settings) => settings,
        Err(message) => {
            emit("error", fields([("message", json!(message))]));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // SIGTERM is how the runner ends a watch; both signals end the run with 0.
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            emit(
                "error",
                fields([("message", json!(format!("installing signal handlers: {err}")))]),
            );
            return ExitCode::from(EXIT_CRASH);
        }
    };
    // The flag is set inside the signal's own future, before select! drops the watch: streams
    // that the drop ends are ours, and the observer must not report them.
    let stopped = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        set_stopping();
    };
    tokio::select! {
        code = run(settings) => code,
        () = stopped => ExitCode::SUCCESS,
    }
}
