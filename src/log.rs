//! The engine's log: a sink the embedder sets (`wb_engine_set_logger`), called
//! from whichever engine thread has something to say (a call's thread, the
//! reporter thread). Without a sink, messages are dropped.

use std::sync::{Arc, RwLock};

/// Severity of a log message (the C ABI's `WB_LOG_*` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

/// What receives the messages.
pub type Sink = Box<dyn Fn(Level, &str) + Send + Sync>;

/// A replaceable sink, shared by the engine and its Panel client.
#[derive(Default)]
pub struct Logger {
    sink: RwLock<Option<Sink>>,
}

impl Logger {
    pub fn new() -> Arc<Logger> {
        Arc::new(Logger::default())
    }

    /// Replaces the sink (`None` silences the log). Once this returns, the
    /// previous sink is not running and is never called again: a message
    /// being delivered holds the sink for the duration of its call.
    pub fn set(&self, sink: Option<Sink>) {
        let mut slot = self.sink.write().unwrap_or_else(|e| e.into_inner());
        *slot = sink;
    }

    pub fn log(&self, level: Level, message: &str) {
        let slot = self.sink.read().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = slot.as_ref() {
            sink(level, message);
        }
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }
}

/// A log line as text: `message key=value ...`, each value quoted (as a
/// JSON string) when it is empty or holds a space, `"`, `=` or a control
/// character, as Go's log/slog text handler writes values.
pub fn line<K: AsRef<str>, V: AsRef<str>>(
    message: &str,
    fields: impl IntoIterator<Item = (K, V)>,
) -> String {
    let mut line = message.to_string();
    for (key, value) in fields {
        let (key, value) = (key.as_ref(), value.as_ref());
        let plain = !value.is_empty()
            && !value
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
        line += &match plain {
            true => format!(" {key}={value}"),
            false => format!(" {key}={}", serde_json::Value::from(value)),
        };
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn messages_reach_the_sink_set_last_and_none_after_it_is_removed() {
        let logger = Logger::new();
        logger.warn("dropped: no sink yet");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = Arc::clone(&seen);
        logger.set(Some(Box::new(move |level, m| {
            sink_seen.lock().unwrap().push((level, m.to_string()))
        })));
        logger.warn("a retry");
        logger.info("delivered");
        logger.set(None);
        logger.warn("dropped again");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (Level::Warn, "a retry".to_string()),
                (Level::Info, "delivered".to_string())
            ]
        );
    }
}
