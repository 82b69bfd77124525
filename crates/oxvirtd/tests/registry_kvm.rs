//! The domain registry with real VMs: ids, transient domains, undefine while running,
//! autostart.

mod common;

use common::{TestDirs, assert_reaped, guest, identify, require_kvm, uuid, xml};
use oxvirtd::events::{DefinedDetail, StartedDetail, StoppedDetail, UndefinedDetail};
use oxvirtd::registry::Definition;
use oxvirtd::{DomainRegistry, DomainState, EventKind, RegistryError, ShutoffReason};
use vmm_api::VmConfig;

/// The test's stand-in for the domain → VmConfig conversion.
fn config_for(_: &Definition) -> Result<VmConfig, String> {
    Ok(guest("counter"))
}

fn open(dirs: &TestDirs) -> DomainRegistry {
    let (registry, problems) = DomainRegistry::open(&dirs.paths, dirs.driver(), &identify).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    registry
}

#[tokio::test]
async fn kvm_ids_count_up_and_transient_domains_vanish_when_they_stop() {
    require_kvm();
    let dirs = TestDirs::new("ids");
    let registry = open(&dirs);
    registry
        .define("a", uuid(1), &xml("a", uuid(1)))
        .await
        .unwrap();
    registry
        .define("b", uuid(2), &xml("b", uuid(2)))
        .await
        .unwrap();
    let mut events = registry.subscribe();

    let a = registry.start("a", guest("counter")).await.unwrap();
    let t = registry
        .create("t", uuid(3), &xml("t", uuid(3)), guest("counter"))
        .await
        .unwrap();
    let b = registry.start("b", guest("counter")).await.unwrap();

    assert_eq!((a.id, t.id, b.id), (Some(1), Some(2), Some(3)));
    let pids: Vec<i32> = registry
        .driver()
        .list_active()
        .iter()
        .map(|d| d.pid)
        .collect();
    assert_eq!(pids.len(), 3);
    assert!(!t.persistent && a.persistent);
    assert_eq!(registry.lookup_by_id(2).unwrap().name, "t");
    assert_eq!(registry.list().len(), 3);
    assert!(matches!(
        registry.start("a", guest("counter")).await,
        Err(RegistryError::AlreadyActive { .. })
    ));
    assert!(matches!(
        registry
            .create("a", uuid(9), "<x/>", guest("counter"))
            .await,
        Err(RegistryError::NameExists { .. })
    ));
    assert!(matches!(
        registry.undefine("t").await,
        Err(RegistryError::NotPersistent { .. })
    ));
    assert_eq!(registry.xml("t", false).unwrap(), xml("t", uuid(3)));

    registry.driver().destroy("t").await.unwrap();
    assert!(matches!(
        registry.lookup_by_name("t"),
        Err(RegistryError::NoDomain { .. })
    ));

    // Undefining a running domain makes it transient: it vanishes when it stops.
    registry.undefine("a").await.unwrap();
    let a_now = registry.lookup_by_name("a").unwrap();
    assert!(!a_now.persistent && a_now.state.is_active());
    registry.driver().destroy("a").await.unwrap();
    assert!(registry.lookup_by_name("a").is_err());

    // A persistent domain stays, shut off with the reason.
    registry.driver().destroy("b").await.unwrap();
    let b_now = registry.lookup_by_name("b").unwrap();
    assert_eq!(b_now.state, DomainState::Shutoff(ShutoffReason::Destroyed));
    assert_eq!(b_now.id, None);
    assert_eq!(registry.list().len(), 1);

    let kinds: Vec<(String, EventKind)> = common::drain(&mut events)
        .into_iter()
        .map(|e| (e.name, e.kind))
        .collect();
    let expected = [
        ("a", EventKind::Started(StartedDetail::Booted)),
        ("t", EventKind::Started(StartedDetail::Booted)),
        ("b", EventKind::Started(StartedDetail::Booted)),
        ("t", EventKind::Stopped(StoppedDetail::Destroyed)),
        ("a", EventKind::Undefined(UndefinedDetail::Removed)),
        ("a", EventKind::Stopped(StoppedDetail::Destroyed)),
        ("b", EventKind::Stopped(StoppedDetail::Destroyed)),
    ]
    .map(|(n, k)| (n.to_string(), k));
    assert_eq!(kinds, expected);
    for pid in pids {
        assert_reaped(pid);
    }
    common::assert_no_zombie_children();
}

#[tokio::test]
async fn kvm_defining_a_running_transient_domain_makes_it_persistent() {
    require_kvm();
    let dirs = TestDirs::new("persist");
    let registry = open(&dirs);
    let mut events = registry.subscribe();
    registry
        .create("t", uuid(1), &xml("t", uuid(1)), guest("counter"))
        .await
        .unwrap();

    registry
        .define("t", uuid(1), &xml("t", uuid(1)))
        .await
        .unwrap();
    registry.driver().destroy("t").await.unwrap();

    let t = registry.lookup_by_name("t").unwrap();
    assert!(t.persistent);
    assert_eq!(t.state, DomainState::Shutoff(ShutoffReason::Destroyed));
    let defined = common::drain(&mut events)
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::Defined(_)))
        .unwrap();
    assert_eq!(defined.kind, EventKind::Defined(DefinedDetail::Added));
    assert_eq!(defined.id, Some(1));
}

#[tokio::test]
async fn kvm_autostart_starts_the_marked_domains_once() {
    require_kvm();
    let dirs = TestDirs::new("autostart");
    {
        let registry = open(&dirs);
        registry
            .define("auto", uuid(1), &xml("auto", uuid(1)))
            .await
            .unwrap();
        registry
            .define("manual", uuid(2), &xml("manual", uuid(2)))
            .await
            .unwrap();
        registry.set_autostart("auto", true).await.unwrap();
    }
    // As at daemon start: a fresh registry over the same state directory.
    let registry = open(&dirs);
    assert!(
        registry
            .driver()
            .recover()
            .await
            .unwrap()
            .reattached
            .is_empty()
    );

    let results = registry.start_autostart(config_for).await;
    let again = registry.start_autostart(config_for).await;

    assert_eq!(results.len(), 1);
    let (name, result) = &results[0];
    assert_eq!(name, "auto");
    let started = result.as_ref().unwrap();
    assert_eq!(started.id, Some(1));
    assert!(started.autostart && started.state.is_active());
    assert!(again.is_empty(), "a running domain is not started twice");
    assert!(!registry.lookup_by_name("manual").unwrap().state.is_active());
    let pid = registry.driver().active("auto").unwrap().pid;
    registry.driver().destroy("auto").await.unwrap();
    assert_reaped(pid);
}
