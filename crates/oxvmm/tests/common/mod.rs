//! Helpers for tests that run the real oxvmm binary.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the oxvmm binary under test.
pub const OXVMM: &str = env!("CARGO_BIN_EXE_oxvmm");

/// What one oxvmm run produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Everything the guest printed on COM1 (oxvmm's stdout).
    pub stdout: String,
    /// oxvmm's own messages.
    pub stderr: String,
}

impl Run {
    /// The `TEST <name> ...` line for `name`, panicking with the whole output when absent.
    pub fn test_line(&self, name: &str) -> &str {
        let prefix = format!("TEST {name} ");
        self.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no result line for {name}; output:\n{self}"))
    }

    /// Asserts scenario `name` passed and returns its details.
    pub fn passed(&self, name: &str) -> &str {
        let line = self.test_line(name);
        let details = line
            .strip_prefix(&format!("TEST {name} PASS"))
            .unwrap_or_else(|| panic!("scenario {name} did not pass: {line}\n{self}"));
        details.trim()
    }

    /// Asserts oxvmm exited with `code`.
    pub fn assert_exit(&self, code: i32) {
        assert_eq!(self.code, Some(code), "unexpected exit status\n{self}");
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Fails the test loudly when this machine has no usable /dev/kvm.
pub fn require_kvm() {
    let kvm = Path::new("/dev/kvm");
    assert!(
        kvm.exists(),
        "this test needs /dev/kvm, which does not exist on this machine (no KVM)"
    );
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(kvm) {
        panic!("this test needs read-write access to /dev/kvm: {e}");
    }
}

/// Runs oxvmm with `args`, killing it after `timeout`.
pub fn oxvmm(args: &[&str], timeout: Duration) -> Run {
    run_program(OXVMM, args, timeout)
}

/// Runs `program` (e.g. a wrapper around oxvmm) with a one-minute limit.
pub fn run_command(program: &str, args: &[&str]) -> Run {
    run_program(program, args, Duration::from_secs(60))
}

fn run_program(program: &str, args: &[&str], timeout: Duration) -> Run {
    let mut command = Command::new(program);
    command.args(args);
    finished(program, args, timeout, collect(command, None, timeout))
}

fn finished(program: &str, args: &[&str], timeout: Duration, collected: Collected) -> Run {
    let run = Run {
        code: collected.status.and_then(|s| s.code()),
        stdout: collected.stdout,
        stderr: collected.stderr,
    };
    assert!(
        collected.status.is_some(),
        "{program} {args:?} did not finish within {timeout:?}\n{run}"
    );
    run
}

/// What a child process left behind.
pub struct Collected {
    /// Exit status, or None when it was killed at the time limit.
    pub status: Option<std::process::ExitStatus>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `command` with `input` (or nothing) on its standard input, collecting its output;
/// kills it after `timeout`.
pub fn collect(mut command: Command, input: Option<&[u8]>, timeout: Duration) -> Collected {
    use std::io::Write;

    let program = command.get_program().to_string_lossy().into_owned();
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        // A short input fits in the pipe buffer, so this cannot block on a guest that never
        // reads; the pipe is closed after it.
        pipe.write_all(input)
            .expect("write the child's standard input");
    }
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || read_all(stdout));
    let err_reader = std::thread::spawn(move || read_all(stderr));
    let status = wait_or_kill(&mut child, timeout);
    Collected {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Runs the bundled guest with the given command line and extra options.
pub fn run_guest(cmdline: &str, extra: &[&str]) -> Run {
    require_kvm();
    let mut args = vec!["--kernel", guests::OXGUEST_PATH, "--cmdline", cmdline];
    args.extend_from_slice(extra);
    oxvmm(&args, Duration::from_secs(120))
}

/// Starts the bundled guest with the given command line, its API on socket `api`, and extra
/// options.
pub fn spawn_guest_with_api(cmdline: &str, api: &Path, extra: &[&str]) -> LiveVmm {
    let api_text = api.to_str().expect("a UTF-8 socket path");
    let mut args = vec![
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        cmdline,
        "--api-socket",
        api_text,
    ];
    args.extend_from_slice(extra);
    LiveVmm::spawn(&args)
}

/// Runs oxvmm with `args` and standard input from a pipe that first carries `input`, killing
/// it after `timeout`. The pipe is closed after `input`: oxvmm then stops reading it.
pub fn oxvmm_with_input(args: &[&str], input: &[u8], timeout: Duration) -> Run {
    let mut command = Command::new(OXVMM);
    command.args(args);
    finished(OXVMM, args, timeout, collect(command, Some(input), timeout))
}

fn read_all(mut from: impl Read) -> String {
    let mut text = String::new();
    let _ = from.read_to_string(&mut text);
    text
}

/// Waits for `child`; kills it and returns None after `timeout`.
fn wait_or_kill(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for oxvmm") {
            return Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running oxvmm whose serial output is read line by line while it runs.
pub struct LiveVmm {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl LiveVmm {
    /// Starts oxvmm with `args`.
    pub fn spawn(args: &[&str]) -> LiveVmm {
        use std::io::BufRead;

        let mut child = Command::new(OXVMM)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start oxvmm");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr_text.clone();
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            let text = read_all(stderr);
            sink.lock().unwrap().push_str(&text);
        });
        LiveVmm {
            child,
            lines,
            seen: Vec::new(),
            stderr: stderr_text,
        }
    }

    /// Waits for a line matching `want`; panics with everything seen after `timeout`.
    pub fn expect_line(&mut self, want: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no expected line within {timeout:?}; output so far:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    /// Lines that arrive within `period`.
    pub fn lines_for(&mut self, period: Duration) -> Vec<String> {
        let deadline = Instant::now() + period;
        let mut got = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            got.push(line);
        }
        got
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What oxvmm printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits for the process to exit; kills it after `timeout` and fails.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let status = wait_or_kill(&mut self.child, timeout);
        assert!(
            status.is_some(),
            "oxvmm did not exit within {timeout:?}; output:\n{}",
            self.seen.join("\n")
        );
        status.and_then(|s| s.code())
    }

    /// Kills the process (as a crash or `kill -9` would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LiveVmm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "oxvmm-test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// How long [`snapshot_and_kill`] and [`restore_running`] wait for an API socket.
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// Takes a full snapshot of the running VM behind API socket `api` into `dir/s` and kills
/// the VM (as a crash would: what it leaves behind, such as its sockets, stays); returns the
/// snapshot's directory.
pub fn snapshot_and_kill(vmm: &mut LiveVmm, api: &Path, dir: &Path) -> std::path::PathBuf {
    let snapshot = dir.join("s");
    vmm_api::Client::wait_for_socket(api, API_TIMEOUT)
        .unwrap_or_else(|e| panic!("API: {e}\nstderr:\n{}", vmm.stderr()))
        .snapshot(&vmm_api::SnapshotRequest {
            destination: snapshot.clone(),
            diff: false,
        })
        .unwrap_or_else(|e| panic!("snapshot: {e}\nstderr:\n{}", vmm.stderr()));
    vmm.kill();
    snapshot
}

/// Restores `snapshot` in a new process, running, with its API socket in `dir`; returns it
/// once it answers there (its event loop answers once every device is open) and says it runs.
pub fn restore_running(snapshot: &Path, dir: &Path) -> LiveVmm {
    let restored_api = dir.join("restored.sock");
    let restored = LiveVmm::spawn(&[
        "--restore",
        snapshot.to_str().unwrap(),
        "--resume",
        "--api-socket",
        restored_api.to_str().unwrap(),
    ]);
    let client = vmm_api::Client::wait_for_socket(&restored_api, API_TIMEOUT)
        .unwrap_or_else(|e| panic!("restored API: {e}\nstderr:\n{}", restored.stderr()));
    assert_eq!(client.info().unwrap().state, vmm_api::VmState::Running);
    restored
}
