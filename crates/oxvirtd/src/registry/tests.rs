//! Registry tests that need no VM: definitions, identities, lookups, autostart, events.

use std::path::PathBuf;

use super::*;
use crate::events::EventBus;
use crate::native::NativeConfig;
use crate::state::ShutoffReason;
use crate::test_util::temp_dir;

/// The test's stand-in for the domain crate: `<domain><name>N</name><uuid>U</uuid></domain>`.
fn identify(xml: &str) -> Result<(String, Uuid), String> {
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let start = xml.find(&open).ok_or(format!("no <{tag}>"))? + open.len();
        let end = xml[start..]
            .find('<')
            .ok_or(format!("unterminated <{tag}>"))?
            + start;
        Ok::<_, String>(xml[start..end].to_string())
    };
    let uuid = field("uuid")?
        .parse()
        .map_err(|e: crate::ident::UuidError| e.to_string())?;
    Ok((field("name")?, uuid))
}

fn xml(name: &str, uuid: Uuid) -> String {
    format!("<domain><name>{name}</name><uuid>{uuid}</uuid></domain>")
}

fn uuid(n: u8) -> Uuid {
    Uuid([n; 16])
}

fn open(root: &std::path::Path) -> (DomainRegistry, Vec<LoadProblem>) {
    let paths = Paths::new(root.join("state"), root.join("run"));
    let config = NativeConfig::new(PathBuf::from("/nonexistent/oxvmm"));
    let driver = NativeDriver::new(paths.clone(), config, EventBus::new()).unwrap();
    DomainRegistry::open(&paths, driver, &identify).unwrap()
}

#[tokio::test]
async fn defined_domains_are_listed_shut_off_and_found_by_name_and_uuid() {
    let root = temp_dir("registry-define");
    let (registry, _) = open(&root);

    let first = registry
        .define("web", uuid(1), &xml("web", uuid(1)))
        .await
        .unwrap();
    registry
        .define("db", uuid(2), &xml("db", uuid(2)))
        .await
        .unwrap();

    assert_eq!(first, DefineOutcome::Added);
    let list = registry.list();
    assert_eq!(
        list.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["db", "web"]
    );
    let web = registry.lookup_by_name("web").unwrap();
    assert_eq!(web.uuid, uuid(1));
    assert_eq!(web.id, None);
    assert!(web.persistent && !web.autostart);
    assert_eq!(web.state, DomainState::Shutoff(ShutoffReason::Unknown));
    assert_eq!(registry.lookup_by_uuid(uuid(2)).unwrap().name, "db");
    assert!(matches!(
        registry.lookup_by_id(1),
        Err(RegistryError::NoDomain { .. })
    ));
    assert!(matches!(
        registry.lookup_by_name("nope"),
        Err(RegistryError::NoDomain { .. })
    ));
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn redefining_with_the_same_uuid_updates_and_conflicts_are_refused() {
    let root = temp_dir("registry-conflicts");
    let (registry, _) = open(&root);
    registry.define("web", uuid(1), "<v1/>").await.unwrap();

    let updated = registry.define("web", uuid(1), "<v2/>").await.unwrap();
    let same_name = registry.define("web", uuid(9), "<x/>").await.unwrap_err();
    let same_uuid = registry.define("other", uuid(1), "<x/>").await.unwrap_err();
    let bad_name = registry.define("a/b", uuid(3), "<x/>").await.unwrap_err();

    assert_eq!(updated, DefineOutcome::Updated);
    assert_eq!(registry.xml("web", true).unwrap(), "<v2/>");
    assert!(
        matches!(same_name, RegistryError::NameExists { uuid: u, .. } if u == uuid(1)),
        "{same_name}"
    );
    assert!(
        matches!(&same_uuid, RegistryError::UuidInUse { name, .. } if name == "web"),
        "{same_uuid}"
    );
    assert!(matches!(bad_name, RegistryError::Name(_)), "{bad_name}");
    assert_eq!(registry.list().len(), 1);
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn undefine_removes_the_domain_and_its_file() {
    let root = temp_dir("registry-undefine");
    let (registry, _) = open(&root);
    registry.define("web", uuid(1), "<x/>").await.unwrap();
    registry.set_autostart("web", true).await.unwrap();

    registry.undefine("web").await.unwrap();

    assert!(registry.list().is_empty());
    assert!(!root.join("state/domains/web.xml").exists());
    assert!(!root.join("state/autostart/web").exists());
    assert!(matches!(
        registry.undefine("web").await,
        Err(RegistryError::NoDomain { .. })
    ));
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn definitions_and_autostart_survive_a_reopen() {
    let root = temp_dir("registry-reopen");
    {
        let (registry, _) = open(&root);
        registry
            .define("web", uuid(1), &xml("web", uuid(1)))
            .await
            .unwrap();
        registry
            .define("db", uuid(2), &xml("db", uuid(2)))
            .await
            .unwrap();
        registry.set_autostart("db", true).await.unwrap();
    }

    let (registry, problems) = open(&root);

    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(registry.list().len(), 2);
    assert!(registry.autostart("db").unwrap());
    assert!(!registry.autostart("web").unwrap());
    assert_eq!(registry.lookup_by_uuid(uuid(1)).unwrap().name, "web");
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn unusable_stored_definitions_are_skipped_and_reported() {
    let root = temp_dir("registry-problems");
    let domains = root.join("state/domains");
    std::fs::create_dir_all(&domains).unwrap();
    std::fs::write(domains.join("good.xml"), xml("good", uuid(1))).unwrap();
    std::fs::write(domains.join("renamed.xml"), xml("other", uuid(2))).unwrap();
    std::fs::write(domains.join("garbage.xml"), "not xml").unwrap();
    std::fs::write(domains.join("twin.xml"), xml("twin", uuid(1))).unwrap();

    let (registry, problems) = open(&root);

    assert_eq!(registry.list().len(), 1);
    let mut names: Vec<&str> = problems.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["garbage", "renamed", "twin"]);
    let renamed = problems.iter().find(|p| p.name == "renamed").unwrap();
    assert!(renamed.problem.contains("\"other\""), "{}", renamed.problem);
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn define_and_undefine_send_events() {
    let root = temp_dir("registry-events");
    let (registry, _) = open(&root);
    let mut events = registry.subscribe();

    registry.define("web", uuid(1), "<x/>").await.unwrap();
    registry.define("web", uuid(1), "<y/>").await.unwrap();
    registry.undefine("web").await.unwrap();

    let kinds: Vec<EventKind> = (0..3).map(|_| events.try_recv().unwrap().kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Defined(DefinedDetail::Added),
            EventKind::Defined(DefinedDetail::Updated),
            EventKind::Undefined(UndefinedDetail::Removed),
        ]
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn autostart_needs_a_persistent_domain() {
    let root = temp_dir("registry-autostart");
    let (registry, _) = open(&root);

    let err = registry.set_autostart("ghost", true).await.unwrap_err();

    assert!(matches!(err, RegistryError::NoDomain { .. }), "{err}");
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn a_start_that_cannot_spawn_oxvmm_fails_and_leaves_the_domain_shut_off() {
    let root = temp_dir("registry-nospawn");
    let (registry, _) = open(&root);
    registry.define("web", uuid(1), "<x/>").await.unwrap();
    let config: VmConfig =
        serde_json::from_str(r#"{"payload":{"kernel":"builtin:oxguest"}}"#).unwrap();

    let err = registry.start("web", config).await.unwrap_err();

    assert!(err.to_string().contains("/nonexistent/oxvmm"), "{err}");
    assert!(!registry.lookup_by_name("web").unwrap().state.is_active());
    assert!(!registry.driver().is_active_or_starting("web"));
    assert!(!root.join("run/domains/web.vm.json").exists());
    std::fs::remove_dir_all(root).unwrap();
}
