//! The native driver with real oxvmm processes and the bundled guest: start, pause, resume,
//! information, shutdown, destroy, crash, reset and failed starts.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{TIMEOUT, TestDirs, assert_reaped, drain, expect_event, guest, require_kvm, uuid};
use oxvirtd::events::{ShutdownDetail, StartedDetail, StoppedDetail, SuspendedDetail};
use oxvirtd::{
    DomainState, EventKind, NativeError, PausedReason, RunningReason, ShutoffReason, StartSpec,
};
use vmm_api::VmConfig;

fn spec(name: &str, n: u8, config: VmConfig) -> StartSpec {
    StartSpec {
        name: name.to_string(),
        uuid: uuid(n),
        config,
        xml: format!("<domain><name>{name}</name></domain>"),
        persistent: true,
    }
}

#[tokio::test]
async fn kvm_start_suspend_resume_info_counters_balloon_and_destroy() {
    require_kvm();
    let dirs = TestDirs::new("lifecycle");
    let driver = dirs.driver();
    let mut events = driver.subscribe();
    let mut config = guest("counter");
    config.balloon = Some(Default::default());

    let active = driver.start(spec("vm", 1, config)).await.unwrap();

    assert_eq!(active.id, 1);
    assert_eq!(active.state, DomainState::Running(RunningReason::Booted));
    assert!(dirs.paths.runtime_record("vm").exists());
    let started = expect_event(&mut events, |_| true).await;
    assert_eq!(started.kind, EventKind::Started(StartedDetail::Booted));
    assert_eq!((started.id, started.uuid), (Some(1), uuid(1)));
    let info = driver.info("vm").await.unwrap();
    assert_eq!(info.boots, 1);
    assert_eq!(info.config.memory.size_mib, 64);
    assert_eq!(info.pid, active.pid);
    let counters = driver.counters("vm").await.unwrap();
    assert!(!counters.exits.is_empty(), "{counters:?}");
    driver.set_balloon("vm", 32).await.unwrap();

    driver.suspend("vm").await.unwrap();
    assert_eq!(driver.state("vm"), DomainState::Paused(PausedReason::User));
    assert_eq!(
        driver.info("vm").await.unwrap().state,
        DomainState::Paused(PausedReason::User)
    );
    driver.suspend("vm").await.unwrap();
    driver.resume("vm").await.unwrap();
    assert_eq!(
        driver.state("vm"),
        DomainState::Running(RunningReason::Unpaused)
    );
    let kinds: Vec<EventKind> = drain(&mut events).into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Suspended(SuspendedDetail::Paused),
            EventKind::Resumed(oxvirtd::events::ResumedDetail::Unpaused)
        ],
        "a second suspend of a paused VM sends nothing"
    );

    let reason = driver.destroy("vm").await.unwrap();

    assert_eq!(reason, ShutoffReason::Destroyed);
    assert_eq!(
        driver.state("vm"),
        DomainState::Shutoff(ShutoffReason::Destroyed)
    );
    let stopped = expect_event(&mut events, |_| true).await;
    assert_eq!(stopped.kind, EventKind::Stopped(StoppedDetail::Destroyed));
    assert!(!dirs.paths.runtime_record("vm").exists());
    assert!(!dirs.paths.api_socket("vm").exists());
    assert!(driver.list_active().is_empty());
    assert!(matches!(
        driver.suspend("vm").await,
        Err(NativeError::NotRunning { .. })
    ));
    assert_reaped(active.pid);
}

#[tokio::test]
async fn kvm_shutdown_of_a_guest_waiting_for_the_power_button_ends_shut_off_shutdown() {
    require_kvm();
    let dirs = TestDirs::new("shutdown");
    let driver = dirs.driver();
    let mut events = driver.subscribe();
    let active = driver
        .start(spec("vm", 1, guest("wait-shutdown")))
        .await
        .unwrap();
    dirs.wait_for_serial("vm", "waiting for the power button")
        .await;

    driver.shutdown("vm").await.unwrap();
    let reason = driver.wait_stopped("vm", TIMEOUT).await.unwrap();

    assert_eq!(reason, ShutoffReason::Shutdown);
    assert!(
        dirs.serial_log("vm")
            .contains("TEST wait-shutdown PASS power button"),
        "{}",
        dirs.serial_log("vm")
    );
    let shutdown = expect_event(&mut events, |e| matches!(e.kind, EventKind::Shutdown(_))).await;
    assert_eq!(shutdown.kind, EventKind::Shutdown(ShutdownDetail::Host));
    let stopped = expect_event(&mut events, |_| true).await;
    assert_eq!(stopped.kind, EventKind::Stopped(StoppedDetail::Shutdown));
    assert_eq!(
        driver.state("vm"),
        DomainState::Shutoff(ShutoffReason::Shutdown)
    );
    assert_reaped(active.pid);
}

/// Reads the console socket until `text` arrives.
fn read_console_until(console: &mut BufReader<UnixStream>, text: &str) {
    let mut seen = String::new();
    let deadline = Instant::now() + TIMEOUT;
    while !seen.contains(text) {
        assert!(
            Instant::now() < deadline,
            "console never showed {text:?}: {seen}"
        );
        let mut line = String::new();
        match console.read_line(&mut line) {
            Ok(0) => panic!("console closed before {text:?}: {seen}"),
            Ok(_) => seen.push_str(&line),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("console: {e}"),
        }
    }
}

#[tokio::test]
async fn kvm_a_crashing_guest_ends_shut_off_crashed() {
    require_kvm();
    let dirs = TestDirs::new("crash");
    let driver = dirs.driver();
    let mut events = driver.subscribe();
    // The guest waits for a line on its console before crashing, so it crashes under
    // supervision rather than before the start completes.
    let mut config = guest("serial-echo crash");
    config.serial = vmm_api::config::SerialConfig::Socket(dirs.paths.console_socket("vm"));
    let active = driver.start(spec("vm", 1, config)).await.unwrap();
    let stream = UnixStream::connect(dirs.paths.console_socket("vm")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut console = BufReader::new(stream);
    read_console_until(&mut console, "waiting up to 10 s for a line");

    console.get_mut().write_all(b"go\n").unwrap();
    let reason = driver.wait_stopped("vm", TIMEOUT).await.unwrap();

    assert_eq!(reason, ShutoffReason::Crashed);
    let stopped = expect_event(&mut events, |e| matches!(e.kind, EventKind::Stopped(_))).await;
    assert_eq!(stopped.kind, EventKind::Stopped(StoppedDetail::Crashed));
    assert_eq!(
        driver.state("vm"),
        DomainState::Shutoff(ShutoffReason::Crashed)
    );
    assert!(
        dirs.log("vm").contains("the guest crashed"),
        "{}",
        dirs.log("vm")
    );
    assert!(!dirs.paths.console_socket("vm").exists());
    assert_reaped(active.pid);
}

#[tokio::test]
async fn kvm_reset_boots_the_guest_again() {
    require_kvm();
    let dirs = TestDirs::new("reset");
    let driver = dirs.driver();
    driver.start(spec("vm", 1, guest("counter"))).await.unwrap();

    driver.reset("vm").await.unwrap();

    let deadline = Instant::now() + TIMEOUT;
    while driver.info("vm").await.unwrap().boots < 2 {
        assert!(Instant::now() < deadline, "no second boot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(driver.state("vm").is_active());
    driver.destroy("vm").await.unwrap();
}

#[tokio::test]
async fn kvm_an_oxvmm_that_dies_at_start_is_an_error_quoting_its_log() {
    require_kvm();
    let dirs = TestDirs::new("early");
    let driver = dirs.driver();
    let mut config = guest("demo");
    config.payload.kernel = "/nonexistent/kernel".into();

    let err = driver.start(spec("vm", 1, config)).await.unwrap_err();

    assert!(
        matches!(
            &err,
            NativeError::EarlyExit {
                exit: oxvirtd::process::ProcessExit::Code(1),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("/nonexistent/kernel"), "{err}");
    assert!(!driver.is_active_or_starting("vm"));
    assert!(!dirs.paths.runtime_record("vm").exists());
    assert!(!dirs.paths.vm_config_file("vm").exists());
    common::assert_no_zombie_children();
}

#[tokio::test]
async fn kvm_names_and_uuids_of_running_domains_are_exclusive() {
    require_kvm();
    let dirs = TestDirs::new("exclusive");
    let driver = dirs.driver();
    driver.start(spec("a", 1, guest("counter"))).await.unwrap();

    let same_name = driver.start(spec("a", 2, guest("counter"))).await;
    let same_uuid = driver.start(spec("b", 1, guest("counter"))).await;

    assert!(matches!(same_name, Err(NativeError::AlreadyActive { .. })));
    assert!(matches!(same_uuid, Err(NativeError::UuidInUse { .. })));
    let second = driver.start(spec("b", 2, guest("counter"))).await.unwrap();
    assert_eq!(second.id, 2, "a refused start takes no id");
    assert_eq!(driver.active_by_id(2).unwrap().name, "b");
    driver.suspend("a").await.unwrap();
    let refused = driver.shutdown("a").await.unwrap_err();
    assert!(refused.to_string().contains("paused"), "{refused}");
    assert_eq!(
        driver.destroy("a").await.unwrap(),
        ShutoffReason::Destroyed,
        "a paused VM is destroyed too"
    );
    driver.destroy("b").await.unwrap();
    common::assert_no_zombie_children();
}
