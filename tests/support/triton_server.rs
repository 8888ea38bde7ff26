//! A real Triton server for tests and benchmarks: `python -m wam_export.triton_serve <repo>` (pytriton's
//! tritonserver with the stages bound in onnxruntime; it runs itself under .prefix-triton).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A pytriton server on a repository; killed (with its tritonserver) when dropped.
pub struct Server {
    child: Child,
}

impl Server {
    pub fn start(repo: &Path, port: u16) -> Server {
        let python = std::env::var("WAM_PYTHON").unwrap_or_else(|_| "python".into());
        let mut child = Command::new(python)
            .args(["-m", "wam_export.triton_serve"])
            .arg(repo)
            .args(["--http-port", &port.to_string()])
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python -m wam_export.triton_serve (source scripts/env.sh)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("ready ") {
                    let _ = tx.send(line);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                return Server { child };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the Triton server exited before it was ready: {status}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the Triton server did not report ready within 120 s");
            }
        }
    }

    /// Waits until nothing listens on `port` (a stopped tritonserver can take seconds to let go).
    pub fn wait_port_free(port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {port} still in use after 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        // SIGTERM first: the server stops its tritonserver child.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
