//! Everything the runner passes through the environment (clients/README.md).

use std::time::Duration;

pub const SCENARIO_WATCH: &str = "watch";
pub const SCENARIO_IDLE_REQUEST: &str = "idle-request";

/// The styles this folder implements; the first is the default.
pub const STYLES: &[&str] = &["watcher"];

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Path of the cell's kubeconfig; None: in-cluster config (kubernetes backend).
    pub kubeconfig: Option<String>,
    pub namespace: String,
    pub scenario: String,
    pub style: String,
    /// idle-request: number of rounds.
    pub rounds: u32,
    /// idle-request: time between the two requests of a round.
    pub idle: Duration,
}

/// Read the settings through `get` (`std::env::var` in main, a map in the unit tests).
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
    let var = |name: &str| get(name).unwrap_or_default();
    let style = match var("WATCHDROP_STYLE") {
        s if s.is_empty() => STYLES[0].to_owned(),
        s => s,
    };
    if !STYLES.contains(&style.as_str()) {
        return Err(format!("WATCHDROP_STYLE={style:?}: this client implements {STYLES:?}"));
    }
    let namespace = var("WATCHDROP_NAMESPACE");
    if namespace.is_empty() {
        return Err("WATCHDROP_NAMESPACE is not set".to_owned());
    }
    let scenario = var("WATCHDROP_SCENARIO");
    let (mut rounds, mut idle) = (0, Duration::ZERO);
    match scenario.as_str() {
        SCENARIO_WATCH => {}
        SCENARIO_IDLE_REQUEST => {
            let raw_rounds = var("WATCHDROP_ROUNDS");
            rounds = match raw_rounds.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(format!(
                        "WATCHDROP_ROUNDS={raw_rounds:?}: want a whole number of at least 1"
                    ));
                }
            };
            let raw_idle = var("WATCHDROP_IDLE");
            idle = match raw_idle.parse::<f64>() {
                Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s),
                _ => return Err(format!("WATCHDROP_IDLE={raw_idle:?}: want seconds, at least 0")),
            };
        }
        other => {
            return Err(format!(
                "WATCHDROP_SCENARIO={other:?}: want {SCENARIO_WATCH:?} or {SCENARIO_IDLE_REQUEST:?}"
            ));
        }
    }
    Ok(Settings {
        kubeconfig: get("WATCHDROP_KUBECONFIG").filter(|p| !p.is_empty()),
        namespace,
        scenario,
        style,
        rounds,
        idle,
    })
}

/// The style named in the started line, known before the settings are checked: idle-request
/// uses no watch at all, only two list calls.
pub fn reported_style(get: impl Fn(&str) -> Option<String>) -> String {
    if get("WATCHDROP_SCENARIO").as_deref() == Some(SCENARIO_IDLE_REQUEST) {
        return "list".to_owned();
    }
    get("WATCHDROP_STYLE")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| STYLES[0].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn watch_defaults_to_the_watcher_style() {
        let s = from_env(env(&[("WATCHDROP_SCENARIO", "watch"), ("WATCHDROP_NAMESPACE", "ns")])).unwrap();
        assert_eq!(s.style, "watcher");
        assert_eq!(s.kubeconfig, None);
    }

    #[test]
    fn idle_request_reads_rounds_and_idle() {
        let s = from_env(env(&[
            ("WATCHDROP_SCENARIO", "idle-request"),
            ("WATCHDROP_NAMESPACE", "ns"),
            ("WATCHDROP_ROUNDS", "2"),
            ("WATCHDROP_IDLE", "60.5"),
            ("WATCHDROP_KUBECONFIG", "/k"),
        ]))
        .unwrap();
        assert_eq!((s.rounds, s.idle), (2, Duration::from_millis(60_500)));
        assert_eq!(s.kubeconfig.as_deref(), Some("/k"));
    }

    #[test]
    fn bad_settings_name_the_variable() {
        for (pairs, needle) in [
            (vec![("WATCHDROP_SCENARIO", "watch")], "WATCHDROP_NAMESPACE"),
            (
                vec![("WATCHDROP_SCENARIO", "nope"), ("WATCHDROP_NAMESPACE", "ns")],
                "WATCHDROP_SCENARIO",
            ),
            (
                vec![
                    ("WATCHDROP_SCENARIO", "watch"),
                    ("WATCHDROP_NAMESPACE", "ns"),
                    ("WATCHDROP_STYLE", "informer"),
                ],
                "WATCHDROP_STYLE",
            ),
            (
                vec![("WATCHDROP_SCENARIO", "idle-request"), ("WATCHDROP_NAMESPACE", "ns")],
                "WATCHDROP_ROUNDS",
            ),
        ] {
            let err = from_env(env(&pairs)).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn idle_request_is_reported_as_list() {
        assert_eq!(reported_style(env(&[("WATCHDROP_SCENARIO", "idle-request")])), "list");
        assert_eq!(reported_style(env(&[("WATCHDROP_SCENARIO", "watch")])), "watcher");
    }
}
