//! The engine's log: a sink the embedder sets (`wb_engine_set_logger`), called
//! from whichever engine thread has something to say (a call's thread, the
//! reporter thread). Messages logged before any sink was set (those of the
//! engine's start, such as the recovery of interrupted restores) are kept,
//! up to [`EARLY_MAX`], and given to the first sink set; later messages
//! without a sink are dropped.

use std::sync::{Arc, Mutex, RwLock};

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

/// How many messages logged before the first sink is set are kept for it.
pub const EARLY_MAX: usize = 100;

/// A replaceable sink, shared by the engine and its Panel client.
pub struct Logger {
    sink: RwLock<Option<Sink>>,
    /// The messages logged before any sink was set (`None` once one was).
    early: Mutex<Option<Vec<(Level, String)>>>,
}

impl Default for Logger {
    fn default() -> Logger {
        Logger {
            sink: RwLock::new(None),
            early: Mutex::new(Some(Vec::new())),
        }
    }
}

impl Logger {
    pub fn new() -> Arc<Logger> {
        Arc::new(Logger::default())
    }

    /// Replaces the sink (`None` silences the log). Once this returns, the
    /// previous sink is not running and is never called again: a message
    /// being delivered holds the sink for the duration of its call. The
    /// first call hands the new sink the messages logged before it.
    pub fn set(&self, sink: Option<Sink>) {
        let early = {
            let mut slot = self.sink.write().unwrap_or_else(|e| e.into_inner());
            *slot = sink;
            self.early.lock().unwrap_or_else(|e| e.into_inner()).take()
        };
        let slot = self.sink.read().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = slot.as_ref() {
            for (level, message) in early.unwrap_or_default() {
                sink(level, &message);
            }
        }
    }

    pub fn log(&self, level: Level, message: &str) {
        let slot = self.sink.read().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(sink) => sink(level, message),
            None => {
                let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(early) = early.as_mut().filter(|e| e.len() < EARLY_MAX) {
                    early.push((level, message.to_string()));
                }
            }
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
        logger.set(None);
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

    #[test]
    fn messages_logged_before_the_first_sink_are_given_to_it() {
        let logger = Logger::new();
        for i in 0..EARLY_MAX + 5 {
            logger.info(&format!("early {i}"));
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = Arc::clone(&seen);
        logger.set(Some(Box::new(move |_, m| {
            sink_seen.lock().unwrap().push(m.to_string())
        })));
        logger.info("late");
        logger.set(None);
        logger.info("dropped");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), EARLY_MAX + 1);
        assert_eq!(seen[0], "early 0");
        assert_eq!(seen[EARLY_MAX - 1], format!("early {}", EARLY_MAX - 1));
        assert_eq!(seen[EARLY_MAX], "late");
    }
}
