//! Re-attaching after the supervising daemon dies: a real "daemon" process (this test binary
//! re-run in a helper role) starts a VM and is killed with SIGKILL; the test then plays the
//! restarted daemon.
//!
//! Process tree: test → reaper (a child subreaper, as init or systemd would be) → daemon →
//! oxvmm. When the daemon is killed, oxvmm is re-parented to the reaper, so it is not the
//! test's child (the restarted daemon must watch it through a pidfd without being able to
//! `waitid` it), and it is still reaped when it exits: no zombie is left anywhere.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    TIMEOUT, TestDirs, assert_reaped, expect_event, guest, identify, require_kvm, uuid, xml,
};
use oxvirtd::events::StoppedDetail;
use oxvirtd::process::PidFd;
use oxvirtd::{DomainRegistry, DomainState, EventKind, RunningReason, ShutoffReason, StartSpec};

const ROLE: &str = "OXVIRTD_TEST_ROLE";
const STATE_DIR: &str = "OXVIRTD_TEST_STATE";
const RUNTIME_DIR: &str = "OXVIRTD_TEST_RUNTIME";
const CMDLINE: &str = "OXVIRTD_TEST_CMDLINE";
const HELPER: &str = "recover_helper_process";
const VM: &str = "survivor";

/// Not a test: the reaper and daemon roles of the tests below (run by them, with `ROLE` set).
#[test]
#[ignore = "helper process of the recover tests; they run it"]
fn recover_helper_process() {
    match std::env::var(ROLE).as_deref() {
        Ok("reaper") => run_reaper(),
        Ok("daemon") => run_daemon(),
        // Run by hand (`--ignored`) without a role: nothing to do.
        _ => {}
    }
}

/// Becomes a child subreaper, runs the daemon role, and reaps every descendant re-parented to
/// it until none is left.
fn run_reaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag of this process.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(result, 0, "PR_SET_CHILD_SUBREAPER");
    let exe = std::env::current_exe().unwrap();
    let daemon = Command::new(exe)
        .args(helper_args())
        .env(ROLE, "daemon")
        .spawn()
        .unwrap();
    drop(daemon);
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`, a valid int.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return;
        }
    }
}

/// Starts the VM under a driver, reports `READY <own pid> <oxvmm pid>` and supervises it
/// until killed.
fn run_daemon() {
    let dirs = oxvirtd::Paths::new(
        std::env::var(STATE_DIR).unwrap(),
        std::env::var(RUNTIME_DIR).unwrap(),
    );
    let cmdline = std::env::var(CMDLINE).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = oxvirtd::NativeConfig::new(common::oxvmm_path());
        config.start_timeout = TIMEOUT;
        let driver = oxvirtd::NativeDriver::new(dirs, config, oxvirtd::EventBus::new()).unwrap();
        let active = driver.start(vm_spec(&cmdline)).await.unwrap();
        println!("READY {} {}", std::process::id(), active.pid);
        std::future::pending::<()>().await;
    });
}

fn helper_args() -> [&'static str; 4] {
    [HELPER, "--exact", "--ignored", "--nocapture"]
}

fn vm_spec(cmdline: &str) -> StartSpec {
    StartSpec {
        name: VM.to_string(),
        uuid: uuid(7),
        config: guest(cmdline),
        xml: xml(VM, uuid(7)),
        persistent: true,
    }
}

/// The reaper, the daemon under it and the VM the daemon started.
struct DeadDaemon {
    reaper: Child,
    vm_pid: i32,
}

impl DeadDaemon {
    /// Runs the helper daemon with a VM booting `cmdline`, then kills the daemon with SIGKILL.
    fn start_and_kill(dirs: &TestDirs, cmdline: &str) -> DeadDaemon {
        let mut reaper = Command::new(std::env::current_exe().unwrap())
            .args(helper_args())
            .env(ROLE, "reaper")
            .env(STATE_DIR, dirs.paths.state_dir())
            .env(RUNTIME_DIR, dirs.paths.runtime_dir())
            .env(CMDLINE, cmdline)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = reaper.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        // Reads to the end: the helpers' test harnesses write after READY, and a closed pipe
        // would fail them.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY ") {
                    let _ = ready_tx.send(line);
                }
            }
        });
        let ready = ready_rx
            .recv_timeout(TIMEOUT)
            .expect("the helper daemon never became ready");
        let pids: Vec<i32> = ready[6..].split(' ').map(|p| p.parse().unwrap()).collect();
        let daemon = PidFd::open(pids[0]).unwrap();
        daemon.send_signal(libc::SIGKILL).unwrap();
        while !daemon.has_exited().unwrap() {
            std::thread::sleep(Duration::from_millis(5));
        }
        DeadDaemon {
            reaper,
            vm_pid: pids[1],
        }
    }

    /// Waits for the reaper, which exits once the VM is gone and reaped.
    fn wait_for_reaper(mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.reaper.try_wait().unwrap() {
                assert!(status.success(), "reaper: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "the reaper never finished");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DeadDaemon {
    fn drop(&mut self) {
        // On a failed test: do not leave a VM behind.
        if let Ok(vm) = PidFd::open(self.vm_pid) {
            let _ = vm.send_signal(libc::SIGKILL);
        }
        let _ = self.reaper.kill();
        let _ = self.reaper.wait();
    }
}

#[tokio::test]
async fn kvm_recover_reattaches_to_a_vm_whose_daemon_was_killed_and_can_destroy_it() {
    require_kvm();
    let dirs = TestDirs::new("recover");
    let dead = DeadDaemon::start_and_kill(&dirs, "counter");
    assert!(
        PidFd::open(dead.vm_pid).is_ok(),
        "the VM survives its daemon"
    );

    let driver = dirs.driver();
    let mut events = driver.subscribe();
    let report = driver.recover().await.unwrap();

    assert_eq!(report.reattached.len(), 1, "{report:?}");
    let survivor = &report.reattached[0];
    assert_eq!((survivor.name.as_str(), survivor.id), (VM, 1));
    assert_eq!(survivor.pid, dead.vm_pid);
    assert_eq!(survivor.state, DomainState::Running(RunningReason::Booted));
    assert!(report.stopped.is_empty() && report.unreadable.is_empty());
    assert_eq!(driver.info(VM).await.unwrap().boots, 1);
    driver.suspend(VM).await.unwrap();
    driver.resume(VM).await.unwrap();
    let next = driver
        .start(StartSpec {
            name: "newcomer".to_string(),
            uuid: uuid(8),
            config: guest("counter"),
            xml: xml("newcomer", uuid(8)),
            persistent: false,
        })
        .await
        .unwrap();
    assert_eq!(next.id, 2, "ids go on after the re-attached VM's");

    let reason = driver.destroy(VM).await.unwrap();

    assert_eq!(reason, ShutoffReason::Destroyed);
    let stopped = expect_event(&mut events, |e| {
        e.name == VM && matches!(e.kind, EventKind::Stopped(_))
    })
    .await;
    assert_eq!(stopped.kind, EventKind::Stopped(StoppedDetail::Destroyed));
    assert!(!dirs.paths.runtime_record(VM).exists());
    driver.destroy("newcomer").await.unwrap();
    assert_reaped(next.pid);
    let vm_pid = dead.vm_pid;
    dead.wait_for_reaper();
    assert_reaped(vm_pid);
    common::assert_no_zombie_children();
}

#[tokio::test]
async fn kvm_a_vm_that_stopped_while_the_daemon_was_down_is_reported_shut_off() {
    require_kvm();
    let dirs = TestDirs::new("down");
    let store = oxvirtd::DefinitionStore::open(&dirs.paths).unwrap();
    store.save(VM, &xml(VM, uuid(7))).unwrap();
    let dead = DeadDaemon::start_and_kill(&dirs, "wait-shutdown");
    // With no daemon: press the power button through oxvmm's API; the guest powers off.
    let client = vmm_api::Client::new(dirs.paths.api_socket(VM));
    let deadline = Instant::now() + TIMEOUT;
    while !dirs.serial_log(VM).contains("waiting for the power button") {
        assert!(Instant::now() < deadline, "guest not waiting");
        std::thread::sleep(Duration::from_millis(20));
    }
    client.shutdown().unwrap();
    let vm_pid = dead.vm_pid;
    dead.wait_for_reaper();
    assert_reaped(vm_pid);

    let driver = dirs.driver();
    let (registry, problems) =
        DomainRegistry::open(&dirs.paths, driver.clone(), &identify).unwrap();
    let report = driver.recover().await.unwrap();

    assert!(problems.is_empty(), "{problems:?}");
    assert!(report.reattached.is_empty(), "{report:?}");
    assert_eq!(
        report.stopped,
        [(VM.to_string(), uuid(7), ShutoffReason::Shutdown)]
    );
    let summary = registry.lookup_by_name(VM).unwrap();
    assert_eq!(summary.state, DomainState::Shutoff(ShutoffReason::Shutdown));
    assert_eq!(summary.id, None);
    assert!(!dirs.paths.runtime_record(VM).exists());
    assert!(!dirs.paths.api_socket(VM).exists());
}
