//! A real `oxvirtd` process for the daemon tests: its own state and runtime directories, its
//! log, and the real clients (`virsh`, `/usr/bin/python3` with libvirt) pointed at its socket.
//!
//! The test process is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so the oxvmm processes of
//! a daemon killed with SIGKILL become its children rather than PID 1's (which does not reap on
//! these machines); a background thread reaps exited `oxvmm` children, and only those, so the
//! exit statuses of virsh and the daemon stay with their `Child` handles.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use super::oxvmm_path;

/// How long a test waits for anything a guest or the daemon does.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon binary cargo built for these tests.
pub fn oxvirtd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_oxvirtd"))
}

/// Fails loudly, naming the Debian package, when `program` is missing.
pub fn require(program: &str, package: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{program}` is not installed: install the Debian package `{package}` to run this test"
    );
}

/// Makes this process a child subreaper and starts the thread that reaps orphaned oxvmm
/// processes (once per test binary).
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag of this process.
        let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(ret, 0, "PR_SET_CHILD_SUBREAPER");
        std::thread::spawn(|| {
            loop {
                reap_orphaned_vmms();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    });
}

/// Reaps zombie children of this process that are oxvmm processes.
fn reap_orphaned_vmms() {
    for zombie in super::zombie_children() {
        if zombie.comm == "oxvmm" {
            let mut status = 0;
            // SAFETY: waitpid on a specific zombie child of ours; `status` is a valid int.
            unsafe { libc::waitpid(zombie.pid, &mut status, libc::WNOHANG) };
        }
    }
}

/// One daemon (and its successors after restarts) over one pair of directories.
pub struct TestDaemon {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
    child: Option<Child>,
    generation: u32,
}

impl TestDaemon {
    /// Starts a daemon over fresh directories.
    pub fn start(name: &str) -> TestDaemon {
        become_subreaper();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        // Short: socket paths live under it.
        let root = std::env::temp_dir().join(format!(
            "oxd-{name}-{}-{}",
            std::process::id(),
            nanos % 1_000_000
        ));
        std::fs::create_dir_all(&root).unwrap();
        let mut daemon = TestDaemon {
            state_dir: root.join("state"),
            runtime_dir: root.join("run"),
            root,
            child: None,
            generation: 0,
        };
        daemon.spawn();
        daemon
    }

    /// The read-write socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("oxvirtd-sock")
    }

    /// The read-only socket.
    pub fn socket_ro(&self) -> PathBuf {
        self.runtime_dir.join("oxvirtd-sock-ro")
    }

    /// The URI virsh and python use.
    pub fn uri(&self) -> String {
        format!("oxvirt+unix:///system?socket={}", self.socket().display())
    }

    /// The URI of the read-only socket.
    pub fn uri_ro(&self) -> String {
        format!(
            "oxvirt+unix:///system?socket={}",
            self.socket_ro().display()
        )
    }

    fn log_path(&self, generation: u32) -> PathBuf {
        self.root.join(format!("oxvirtd.{generation}.log"))
    }

    /// Every daemon log so far.
    pub fn log(&self) -> String {
        (0..=self.generation)
            .map(|g| std::fs::read_to_string(self.log_path(g)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path(self.generation)).unwrap();
        let child = Command::new(oxvirtd_path())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--runtime-dir")
            .arg(&self.runtime_dir)
            .arg("--oxvmm")
            .arg(oxvmm_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the daemon accepts connections.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if UnixStream::connect(self.socket()).is_ok() && self.socket_ro().exists() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("oxvirtd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "oxvirtd did not listen within {TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL (its VMs go on).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM and checks that it exits successfully.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill() takes no pointers; the pid is our child's, not yet reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().unwrap();
            assert!(status.success(), "oxvirtd: {status}\n{}", self.log());
        }
    }

    /// Starts a new daemon over the same directories (after [`kill9`] or [`terminate`]).
    ///
    /// [`kill9`]: TestDaemon::kill9
    /// [`terminate`]: TestDaemon::terminate
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon still runs");
        self.generation += 1;
        self.spawn();
    }

    /// Starts virsh with `args`, kills the daemon (SIGKILL) `delay` later, waits for virsh
    /// and starts the daemon again: a request cut short.
    pub fn cut_short(&mut self, args: &[&str], delay: Duration) {
        let virsh = Command::new("virsh")
            .arg("-c")
            .arg(self.uri())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        self.kill9();
        let _ = virsh.wait_with_output();
        self.restart();
    }

    /// Runs virsh against this daemon.
    pub fn virsh(&self, args: &[&str]) -> Output {
        self.virsh_uri(&self.uri(), args)
    }

    /// Runs virsh against `uri`.
    pub fn virsh_uri(&self, uri: &str, args: &[&str]) -> Output {
        require("virsh", "libvirt-clients");
        Command::new("virsh")
            .arg("-c")
            .arg(uri)
            .args(args)
            .env("HOME", &self.root)
            .env("LC_ALL", "C")
            .output()
            .unwrap()
    }

    /// Runs virsh and asserts it succeeded; returns its standard output.
    pub fn virsh_ok(&self, args: &[&str]) -> String {
        let out = self.virsh(args);
        assert!(
            out.status.success(),
            "virsh {args:?}: {}\ndaemon log:\n{}",
            text(&out),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs virsh, asserts it failed, returns its standard error.
    pub fn virsh_err(&self, args: &[&str]) -> String {
        let out = self.virsh(args);
        assert!(
            !out.status.success(),
            "virsh {args:?} succeeded: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Writes `xml` to a file and defines it with virsh.
    pub fn define(&self, name: &str, xml: &str) -> String {
        let file = self.write_file(&format!("{name}.xml"), xml);
        self.virsh_ok(&["define", file.to_str().unwrap()])
    }

    /// Writes a file under the test's directory.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let file = self.root.join(name);
        std::fs::write(&file, contents).unwrap();
        file
    }

    /// Runs a python3-libvirt script (`URI` is defined for it) with Debian's python.
    pub fn python(&self, script: &str) -> Output {
        let program = format!("import libvirt\nURI = {:?}\n{script}", self.uri());
        let out = Command::new("/usr/bin/python3")
            .args(["-c", &program])
            .env("LC_ALL", "C")
            .output()
            .expect("/usr/bin/python3 (Debian package python3)");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("No module named 'libvirt'"),
            "python3-libvirt is not installed: install the Debian package `python3-libvirt`"
        );
        out
    }

    /// `virsh domstate NAME --reason`, trimmed.
    pub fn domstate(&self, name: &str) -> String {
        self.virsh_ok(&["domstate", name, "--reason"])
            .trim()
            .to_string()
    }

    /// Polls `domstate --reason` until it is `want`.
    pub fn wait_state(&self, name: &str, want: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let state = self.domstate(name);
            if state == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {state:?}, never {want:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pids of the VMs in the runtime records.
    pub fn vm_pids(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir(self.runtime_dir.join("domains")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".json") && !name.ends_with(".vm.json")
            })
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                let json: serde_json::Value = serde_json::from_str(&text).ok()?;
                json.get("pid")?.as_i64().map(|p| p as i32)
            })
            .collect()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
        // The VMs outlive the daemon by design; a test must not leave them running.
        let pids = self.vm_pids();
        for &pid in &pids {
            // SAFETY: kill() takes no pointers. The pid is from our own runtime record; its
            // process is our descendant (or re-parented to us), not yet reaped by us.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Give the reaper thread the zombies before this test (maybe the process) ends.
        let deadline = Instant::now() + Duration::from_secs(3);
        while pids
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Status, stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A definition of the bundled test guest running `cmdline`, with `devices` added.
pub fn guest_xml(name: &str, cmdline: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'>\n  <name>{name}</name>\n  <memory unit='MiB'>64</memory>\n  \
         <vcpu>1</vcpu>\n  <os>\n    <type>hvm</type>\n    <kernel>{}</kernel>\n    \
         <cmdline>{cmdline}</cmdline>\n  </os>\n  <features><acpi/><apic/></features>\n  \
         <devices>\n    <serial type='pty'/>\n    {devices}\n  </devices>\n</domain>\n",
        guests::OXGUEST_PATH
    )
}

/// Writes `input` to a child's standard input, ignoring a closed pipe.
pub fn feed(stdin: &mut std::process::ChildStdin, input: &[u8]) {
    let _ = stdin.write_all(input);
    let _ = stdin.flush();
}
