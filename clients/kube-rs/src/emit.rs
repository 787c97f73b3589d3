//! The contract's JSON lines on stdout (clients/README.md), one object per line, flushed at once.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// The extra keys of one line, next to `ts` and `event`.
pub type Fields = Map<String, Value>;

/// Lines come from the main task and from the observing layer inside the client's stack, so
/// each line is written whole under one lock and never interleaves with another.
static STDOUT: Mutex<()> = Mutex::new(());

/// Set on SIGTERM: streams that end after it were ended by us, which is not evidence.
static STOPPING: AtomicBool = AtomicBool::new(false);

pub fn set_stopping() {
    STOPPING.store(true, Ordering::SeqCst);
}

pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Build the extra fields from `(key, value)` pairs.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Fields {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Print one line. The explicit flush keeps `ts` honest against the pcap and the LB log.
pub fn emit(event: &str, extra: Fields) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut line = extra;
    line.insert("ts".to_owned(), Value::from(ts));
    line.insert("event".to_owned(), Value::from(event));
    let mut text = Value::Object(line).to_string();
    text.push('\n');
    let _guard = STDOUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = std::io::stdout().lock();
    // Nothing useful can be done if stdout is gone; the runner then has no log and says so.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The error with its whole chain of causes, e.g. "watch stream failed: … : Connection reset by
/// peer (os error 104)". kube's Display shows only the outermost layer, which hides whether the
/// connection was reset or timed out.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Wrappers often repeat their cause's text in their own; keep each piece once.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}
