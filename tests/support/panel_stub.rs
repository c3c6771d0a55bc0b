//! `tests/support/panel_stub.py` run as a child process, for the Rust tests
//! (the one Panel stub of the project: the conformance suite runs it too).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Stub {
    child: Child,
    pub url: String,
    pub token_id: String,
    pub token: String,
}

impl Stub {
    /// A stub on a free port.
    pub fn start() -> Stub {
        Stub::start_on(0)
    }

    /// A stub on `port` (0: a free one).
    pub fn start_on(port: u16) -> Stub {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/panel_stub.py");
        let mut child = Command::new("python3")
            .arg(script)
            .env("STUB_PORT", port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the Panel stub");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: Value = serde_json::from_str(&line).expect("the stub prints its address");
        Stub {
            child,
            url: info["panel_url"].as_str().unwrap().to_string(),
            token_id: info["token_id"].as_str().unwrap().to_string(),
            token: info["token"].as_str().unwrap().to_string(),
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let mut r = ureq::get(format!("{}{path}", self.url)).call().unwrap();
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    }

    pub fn configure(&self, cfg: Value) {
        ureq::post(format!("{}/_test/config", self.url))
            .header("Content-Type", "application/json")
            .send(cfg.to_string())
            .unwrap();
    }

    pub fn put(&self, key: &str, data: &[u8]) {
        ureq::put(format!("{}/_test/put?key={key}", self.url))
            .send(data)
            .unwrap();
    }

    pub fn state(&self) -> Value {
        self.get("/_test/state")
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The credentials the stub expects (`TOKEN_ID`, `TOKEN` in panel_stub.py),
/// for an engine configured before the stub runs.
pub const TOKEN_ID: &str = "stub-token-id";
pub const TOKEN: &str = "stub-token-secret";
