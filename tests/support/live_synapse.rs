//! A live Synapse on a copy of the real-Synapse fixture (tests/fixtures/synapse/serve.py),
//! for the suites that compare with what Synapse's own admin API does, or let a tool
//! call it.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::TestDatabase;

/// The folder of the real-Synapse fixture and its serve.py.
pub fn synapse_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse")
}

/// A live Synapse (serve.py) on a fixture copy: stopped when dropped.
pub struct LiveSynapse {
    child: Child,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The access token of the fixture's server admin, @admin:fixture.test.
    pub admin_token: String,
}

impl LiveSynapse {
    /// Starts Synapse on the fixture copy in `workdir` (its homeserver.db and media_store,
    /// or the restored `postgres` database with `workdir/media_store`); call
    /// [`LiveSynapse::ready`] to wait for it, so that several can start at once.
    pub fn start(workdir: &Path, postgres: Option<&TestDatabase>) -> Child {
        let python = std::env::var("SYNAPSE_PYTHON").unwrap_or_else(|_| {
            panic!(
                "SYNAPSE_PYTHON is not set: run the tests with ./scripts/test, which provides \
                 a Python with matrix-synapse, or point SYNAPSE_PYTHON at one"
            )
        });
        let mut command = Command::new(python);
        command
            .arg(synapse_fixture_dir().join("serve.py"))
            .arg(workdir);
        if let Some(database) = postgres {
            command.arg("--postgres").arg(&database.url);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start serve.py")
    }

    /// Waits until the started Synapse answers.
    pub fn ready(mut child: Child) -> Self {
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("serve.py did not start Synapse ({e}): {line:?}"));
        Self {
            child,
            url: info["url"].as_str().unwrap().to_owned(),
            admin_token: info["admin_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Starts Synapse on the fixture copy in `workdir` and waits for it.
    pub fn serve(workdir: &Path, postgres: Option<&TestDatabase>) -> Self {
        Self::ready(Self::start(workdir, postgres))
    }

    /// An admin API request with curl; its JSON answer.
    pub fn admin(&self, method: &str, path: &str, body: &Value) -> Value {
        let url = format!("{}{path}", self.url);
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "-X", method, "-H"])
            .arg(format!("Authorization: Bearer {}", self.admin_token))
            .args(["-H", "Content-Type: application/json", "-d"])
            .arg(body.to_string())
            .arg(&url)
            .output()
            .expect("curl must be installed");
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{method} {url}: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{url}: {e}: {answer}"))
    }

    /// Synapse's own purge of a room's history up to `event`, local events included,
    /// waited for.
    pub fn purge_history(&self, room: &str, event: &str) {
        let started = self.admin(
            "POST",
            &format!("/_synapse/admin/v1/purge_history/{room}"),
            &serde_json::json!({"delete_local_events": true, "purge_up_to_event_id": event}),
        );
        let purge_id = started["purge_id"].as_str().unwrap();
        loop {
            let status = self.admin(
                "GET",
                &format!("/_synapse/admin/v1/purge_history_status/{purge_id}"),
                &Value::Null,
            );
            match status["status"].as_str() {
                Some("active") => std::thread::sleep(std::time::Duration::from_millis(100)),
                Some("complete") => return,
                _ => panic!("{room}: Synapse's purge failed: {status}"),
            }
        }
    }
}

impl Drop for LiveSynapse {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // serve.py stops Synapse when its stdin closes
        let _ = self.child.wait();
    }
}
