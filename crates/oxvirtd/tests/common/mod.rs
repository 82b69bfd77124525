//! Helpers for the tests that run real oxvmm processes: under the native driver in this
//! process (this module), or under a real `oxvirtd` process ([`daemon`]).

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oxvirtd::events::EventBus;
use oxvirtd::{LifecycleEvent, NativeConfig, NativeDriver, Paths, Uuid};
use tokio::sync::broadcast;
use vmm_api::VmConfig;

pub mod daemon;

/// How long a test waits for anything a guest does.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The oxvmm binary: `$OXVIRTD_TEST_OXVMM`, else `oxvmm` in the target directory this test
/// binary was built into (`target/<profile>/deps/<test>` → `target/<profile>/oxvmm`).
pub fn oxvmm_path() -> PathBuf {
    if let Some(path) = std::env::var_os("OXVIRTD_TEST_OXVMM") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let oxvmm = profile_dir.join("oxvmm");
    assert!(
        oxvmm.is_file(),
        "{} does not exist: build it first with `cargo build -p oxvmm` (same target directory \
         and profile), or set OXVIRTD_TEST_OXVMM",
        oxvmm.display()
    );
    oxvmm
}

/// Fails the test loudly when this machine has no usable /dev/kvm.
pub fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("this test needs read-write access to /dev/kvm: {e}");
    }
}

/// A fresh state + runtime directory pair for one test, removed on drop.
pub struct TestDirs {
    pub root: PathBuf,
    pub paths: Paths,
}

impl TestDirs {
    pub fn new(name: &str) -> TestDirs {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        // Short: socket paths live under it.
        let root = std::env::temp_dir().join(format!(
            "oxvd-{name}-{}-{}",
            std::process::id(),
            nanos % 1_000_000_000
        ));
        std::fs::create_dir_all(&root).unwrap();
        let paths = Paths::new(root.join("state"), root.join("run"));
        TestDirs { root, paths }
    }

    /// A driver over these directories, with the test's oxvmm.
    pub fn driver(&self) -> NativeDriver {
        let mut config = NativeConfig::new(oxvmm_path());
        config.destroy_grace = Duration::from_secs(3);
        NativeDriver::new(self.paths.clone(), config, EventBus::new()).unwrap()
    }

    /// What the guest of `name` printed on COM1 (when its serial is `stdio`).
    pub fn serial_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.paths.serial_log_file(name)).unwrap_or_default()
    }

    /// oxvmm's log for `name`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.paths.log_file(name)).unwrap_or_default()
    }

    /// Waits until the guest of `name` printed a line containing `text`.
    pub async fn wait_for_serial(&self, name: &str, text: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.serial_log(name).contains(text) {
            assert!(
                Instant::now() < deadline,
                "{name} never printed {text:?}; serial:\n{}\nlog:\n{}",
                self.serial_log(name),
                self.log(name)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The bundled guest running `cmdline`, COM1 to the serial log.
pub fn guest(cmdline: &str) -> VmConfig {
    serde_json::from_value(serde_json::json!({
        "payload": {"kernel": guests::OXGUEST_PATH, "cmdline": cmdline},
        "memory": {"size_mib": 64},
    }))
    .unwrap()
}

/// A UUID for test domain number `n`.
pub fn uuid(n: u8) -> Uuid {
    Uuid([n; 16])
}

/// Receives events until one matches `want`; fails after [`TIMEOUT`] naming what came.
pub async fn expect_event(
    events: &mut broadcast::Receiver<LifecycleEvent>,
    want: impl Fn(&LifecycleEvent) -> bool,
) -> LifecycleEvent {
    let mut seen = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(event)) if want(&event) => return event,
            Ok(Ok(event)) => seen.push(event),
            Ok(Err(e)) => panic!("event channel: {e}; seen {seen:?}"),
            Err(_) => panic!("no expected event within {TIMEOUT:?}; seen {seen:?}"),
        }
    }
}

/// Every event already queued.
pub fn drain(events: &mut broadcast::Receiver<LifecycleEvent>) -> Vec<LifecycleEvent> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

/// Asserts that process `pid` is gone: not running, and not left as a zombie.
pub fn assert_reaped(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let stat = format!("/proc/{pid}/stat");
    while let Ok(text) = std::fs::read_to_string(&stat) {
        assert!(
            Instant::now() < deadline,
            "process {pid} still exists: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that no child of this test process stays a zombie (one that is being reaped by
/// a supervisor right now is given a moment).
pub fn assert_no_zombie_children() {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let zombies: Vec<String> = zombie_children().into_iter().map(|z| z.stat).collect();
        if zombies.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "zombie children: {zombies:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child of this test process that has exited and is not reaped yet.
pub struct Zombie {
    pub pid: i32,
    /// Its command name (`/proc/PID/stat`'s second field, without the parentheses).
    pub comm: String,
    /// Its whole `/proc/PID/stat`, for assertion messages.
    pub stat: String,
}

/// The zombie children of this test process.
pub fn zombie_children() -> Vec<Zombie> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut zombies = Vec::new();
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: it ends at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.first() == Some(&"Z")
            && fields.get(1) == Some(&me.as_str())
            && let Ok(pid) = stat[..open].trim().parse::<i32>()
        {
            let comm = stat[open + 1..close].to_string();
            zombies.push(Zombie { pid, comm, stat });
        }
    }
    zombies
}

/// A toy domain XML: just a name and a UUID, which [`identify`] reads back.
pub fn xml(name: &str, uuid: Uuid) -> String {
    format!("<domain><name>{name}</name><uuid>{uuid}</uuid></domain>")
}

/// The tests' stand-in for the domain crate's parser: the name and UUID of [`xml`]'s output.
pub fn identify(xml: &str) -> Result<(String, Uuid), String> {
    let between = |open: &str, close: &str| {
        let start = xml.find(open).ok_or("no tag")? + open.len();
        let end = xml[start..].find(close).ok_or("no end tag")? + start;
        Ok::<_, String>(xml[start..end].to_string())
    };
    let uuid = between("<uuid>", "</uuid>")?
        .parse()
        .map_err(|e: oxvirtd::ident::UuidError| e.to_string())?;
    Ok((between("<name>", "</name>")?, uuid))
}
