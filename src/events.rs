//! Events for machines: with `events = PATH` (or `-` for stdout), the pool writes
//! one JSON object per line when something a supervisor or a test waits for
//! happens. The format is part of the interface (`docs/ARCHITECTURE.md`, Events);
//! log lines are for people and may change.
//!
//! ```text
//! {"event":"listening","addr":"127.0.0.1:8080","kind":"http","listener":"http0"}
//! {"event":"ready","pid":1234,"zerg_server":"/run/zergpool.sock"}
//! {"event":"attached","pid":1240,"zergling":1}
//! {"event":"detached","pid":1240,"reason":"channel closed","stuck":false,"zergling":1}
//! {"event":"reload-complete"}
//! {"event":"stopped"}
//! ```
//!
//! Every line starts with `{"event":`; the other keys follow in alphabetical
//! order. Each line is written whole with one `write` (a pipe reader never sees half a
//! line); a write error (the reader went away) turns the events off with one
//! warning, and never disturbs the pool.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

static SINK: OnceLock<Mutex<Option<Box<dyn Write + Send>>>> = OnceLock::new();

/// Where the events go: `-` is stdout, anything else a file opened for appending
/// (created if needed). Call once, at start.
pub fn open(target: &Path) -> std::io::Result<()> {
    let sink: Box<dyn Write + Send> = if target == Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        Box::new(OpenOptions::new().create(true).append(true).open(target)?)
    };
    let _ = SINK.set(Mutex::new(Some(sink)));
    Ok(())
}

/// Writes one event: `{"event": name, ...fields}`. Does nothing without `open`.
pub fn emit(name: &str, fields: Value) {
    let Some(sink) = SINK.get() else { return };
    let line = line(name, &fields);
    let Ok(mut guard) = sink.lock() else { return };
    if let Some(w) = guard.as_mut() {
        if let Err(e) = w.write_all(line.as_bytes()).and_then(|()| w.flush()) {
            tracing::warn!(error = %e, "cannot write events; they are off from now on");
            *guard = None;
        }
    }
}

/// One event as its line: `"event"` first, so that a reader can pick event
/// lines by their start, then `fields` (an object) in alphabetical order.
fn line(name: &str, fields: &Value) -> String {
    let mut line = format!("{{\"event\":{}", Value::from(name));
    if let Value::Object(f) = fields {
        if !f.is_empty() {
            let rest = fields.to_string();
            line.push(',');
            line.push_str(&rest[1..rest.len() - 1]);
        }
    }
    line.push_str("}\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_with_the_event_name() {
        let l = line("attached", &serde_json::json!({ "zergling": 1, "pid": 7 }));
        assert_eq!(l, "{\"event\":\"attached\",\"pid\":7,\"zergling\":1}\n");
        assert_eq!(line("stopped", &serde_json::json!({})), "{\"event\":\"stopped\"}\n");
        let back: Value = serde_json::from_str(l.trim_end()).unwrap();
        assert_eq!((back["event"].as_str(), back["zergling"].as_u64()), (Some("attached"), Some(1)));
    }
}
