//! Records, at build time, which kube version Cargo.lock made this binary from and which rustc
//! built it, so the started line states what was built, not what a file claims.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    println!(
        "cargo:rustc-env=WATCHDROP_KUBE_VERSION={}",
        locked_version(&lock, "kube")
    );
    println!(
        "cargo:rustc-env=WATCHDROP_K8S_OPENAPI_VERSION={}",
        locked_version(&lock, "k8s-openapi")
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .unwrap_or_default();
    println!("cargo:rustc-env=WATCHDROP_RUSTC_VERSION={}", version.trim());
}

/// The version of the `[[package]]` named `name` in Cargo.lock's text; "unknown" if absent.
fn locked_version(lock: &str, name: &str) -> String {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted
            && let Some(version) = lines.next().and_then(|l| l.trim().strip_prefix("version = "))
        {
            return version.trim_matches('"').to_owned();
        }
    }
    "unknown".to_owned()
}
