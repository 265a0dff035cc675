//! The `sluice` binary as a separate process: a clean environment, its own working
//! directory, killed (by its PID) when the handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn sluice(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.current_dir(dir);
    for var in sluice::config::KNOWN_VARS {
        command.env_remove(var);
    }
    command.env_remove("RUST_LOG");
    command
}

/// A new, empty working directory. The name has the time in it as well as the process id and
/// a counter: nextest runs each test in a process of its own, and a later test given a reused
/// process id found an earlier one's directory, `.env` included (one with an invalid
/// AUTH_REQUIRED made a gateway refuse to start).
pub fn workdir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir =
        std::env::temp_dir().join(format!("sluice-cli-{}-{nanos}", crate::server::uuid_like()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kills the child on drop, so a failing test never leaves a gateway running.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` (which must listen on `port`) and waits until it accepts connections.
pub async fn start(mut command: Command, port: u16) -> Running {
    let child = Running(command.spawn().unwrap());
    tokio::task::spawn_blocking(move || wait_for_port(port))
        .await
        .unwrap();
    child
}

/// `sluice` serving on a free loopback port.
pub fn gateway_command(port: u16) -> Command {
    let mut command = sluice(&workdir());
    command
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1");
    command
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listened on {port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
