//! The domain registry: persistent definitions (the store) plus running domains (the native
//! driver), seen as libvirt sees domains. This is what the RPC dispatcher calls.
//!
//! The registry never parses XML. [`DomainRegistry::define`] takes a name and UUID the caller
//! already read from valid XML; [`DomainRegistry::start`] takes the `VmConfig` the caller
//! derived from [`DomainRegistry::definition`]; at daemon start, [`DomainRegistry::open`] asks
//! the caller's `identify` function for the name and UUID in each stored definition.
//!
//! Operations that change which domains exist or run (define, undefine, start, create,
//! autostart) are serialized by one async lock, so checks and changes cannot interleave.
//! Operations on a running domain (shutdown, destroy, suspend, ...) go straight to
//! [`DomainRegistry::driver`].

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;
use vmm_api::VmConfig;

use crate::events::{DefinedDetail, EventKind, LifecycleEvent, UndefinedDetail};
use crate::ident::{NameError, Uuid, validate_name};
use crate::native::{ActiveDomain, NativeDriver, NativeError, StartSpec};
use crate::paths::Paths;
use crate::state::DomainState;
use crate::store::{DefinitionStore, StoreError};

/// Reads the name and UUID out of a stored definition (the caller's XML parser).
pub type IdentifyFn = dyn Fn(&str) -> Result<(String, Uuid), String> + Send + Sync;

/// A failed registry operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No domain matches (libvirt's VIR_ERR_NO_DOMAIN).
    #[error("no domain with {what}")]
    NoDomain {
        /// What was looked for (`name 'x'`, `UUID ...`, `id 3`).
        what: String,
    },
    /// The name is taken by a domain with another UUID.
    #[error("domain {name:?} already exists with UUID {uuid}")]
    NameExists {
        /// The name.
        name: String,
        /// The existing domain's UUID.
        uuid: Uuid,
    },
    /// The UUID is taken by a domain with another name.
    #[error("UUID {uuid} is already used by domain {name:?}")]
    UuidInUse {
        /// The UUID.
        uuid: Uuid,
        /// The existing domain's name.
        name: String,
    },
    /// The operation needs a persistent domain.
    #[error("domain {name:?} is transient (it has no persistent definition)")]
    NotPersistent {
        /// The domain.
        name: String,
    },
    /// The domain is already running.
    #[error("domain {name:?} is already active")]
    AlreadyActive {
        /// The domain.
        name: String,
    },
    /// The caller could not derive a VM configuration (autostart).
    #[error("domain {name:?}: {message}")]
    Config {
        /// The domain.
        name: String,
        /// The caller's error.
        message: String,
    },
    /// The name cannot be a domain name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The definition store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] NativeError),
}

/// A persistent definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    /// Domain name.
    pub name: String,
    /// Domain UUID.
    pub uuid: Uuid,
    /// The XML text, as defined.
    pub xml: String,
}

/// One domain as `virsh list --all` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSummary {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: Uuid,
    /// Id while active (libvirt shows -1 otherwise).
    pub id: Option<u32>,
    /// Whether it has a persistent definition.
    pub persistent: bool,
    /// Whether it starts with the daemon.
    pub autostart: bool,
    /// State and reason.
    pub state: DomainState,
}

/// Whether a define created or replaced a definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefineOutcome {
    /// A new persistent domain (or a transient one made persistent).
    Added,
    /// An existing definition was replaced.
    Updated,
}

/// A stored definition that [`DomainRegistry::open`] could not use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadProblem {
    /// The file's domain name.
    pub name: String,
    /// What is wrong.
    pub problem: String,
}

#[derive(Clone, Debug)]
struct Entry {
    uuid: Uuid,
    xml: String,
    autostart: bool,
}

/// Definitions and running domains together.
#[derive(Debug)]
pub struct DomainRegistry {
    store: DefinitionStore,
    driver: NativeDriver,
    definitions: Mutex<BTreeMap<String, Entry>>,
    jobs: tokio::sync::Mutex<()>,
}

impl DomainRegistry {
    /// Loads every stored definition (through `identify`) next to `driver`. Definitions that
    /// cannot be used (unreadable, `identify` fails, the name inside differs from the file's,
    /// a UUID already loaded) are skipped and returned as problems.
    pub fn open(
        paths: &Paths,
        driver: NativeDriver,
        identify: &IdentifyFn,
    ) -> Result<(Self, Vec<LoadProblem>), RegistryError> {
        let store = DefinitionStore::open(paths)?;
        let mut definitions = BTreeMap::new();
        let mut problems = Vec::new();
        for name in store.names()? {
            match load_entry(&store, &name, identify, &definitions) {
                Ok(entry) => {
                    definitions.insert(name, entry);
                }
                Err(problem) => {
                    tracing::warn!(domain = %name, "definition skipped: {problem}");
                    problems.push(LoadProblem { name, problem });
                }
            }
        }
        let registry = DomainRegistry {
            store,
            driver,
            definitions: Mutex::new(definitions),
            jobs: tokio::sync::Mutex::new(()),
        };
        Ok((registry, problems))
    }

    /// The native driver, for operations on running domains.
    pub fn driver(&self) -> &NativeDriver {
        &self.driver
    }

    /// A receiver of every lifecycle event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.driver.subscribe()
    }

    fn definitions(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.definitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Defines (or redefines) a persistent domain from already validated XML.
    pub async fn define(
        &self,
        name: &str,
        uuid: Uuid,
        xml: &str,
    ) -> Result<DefineOutcome, RegistryError> {
        validate_name(name)?;
        let _job = self.jobs.lock().await;
        self.check_identity(name, uuid)?;
        self.store.save(name, xml)?;
        let existed = {
            let mut definitions = self.definitions();
            let autostart = definitions.get(name).is_some_and(|e| e.autostart);
            let entry = Entry {
                uuid,
                xml: xml.to_string(),
                autostart,
            };
            definitions.insert(name.to_string(), entry).is_some()
        };
        let active = self.driver.active(name);
        if active.is_some() && !existed {
            self.driver.set_persistent(name, true)?;
        } else if !existed {
            self.driver.forget_shutoff_reason(name);
        }
        let outcome = if existed {
            DefineOutcome::Updated
        } else {
            DefineOutcome::Added
        };
        let detail = match outcome {
            DefineOutcome::Added => DefinedDetail::Added,
            DefineOutcome::Updated => DefinedDetail::Updated,
        };
        self.emit(name, uuid, active.map(|a| a.id), EventKind::Defined(detail));
        Ok(outcome)
    }

    /// Refuses a name taken by another UUID and a UUID taken by another name.
    fn check_identity(&self, name: &str, uuid: Uuid) -> Result<(), RegistryError> {
        let known = self.identities();
        if let Some((_, existing)) = known.iter().find(|(n, _)| n == name)
            && *existing != uuid
        {
            return Err(RegistryError::NameExists {
                name: name.to_string(),
                uuid: *existing,
            });
        }
        if let Some((other, _)) = known.iter().find(|(n, u)| *u == uuid && n != name) {
            return Err(RegistryError::UuidInUse {
                uuid,
                name: other.clone(),
            });
        }
        Ok(())
    }

    /// Name and UUID of every domain, persistent or running.
    fn identities(&self) -> Vec<(String, Uuid)> {
        let mut known: Vec<(String, Uuid)> = self
            .definitions()
            .iter()
            .map(|(name, entry)| (name.clone(), entry.uuid))
            .collect();
        known.extend(
            self.driver
                .list_active()
                .into_iter()
                .map(|active| (active.name, active.uuid)),
        );
        known
    }

    /// Removes a persistent definition. A running domain goes on as a transient one.
    pub async fn undefine(&self, name: &str) -> Result<(), RegistryError> {
        let _job = self.jobs.lock().await;
        let Some(entry) = self.definitions().get(name).cloned() else {
            return Err(match self.driver.active(name) {
                Some(_) => RegistryError::NotPersistent {
                    name: name.to_string(),
                },
                None => no_name(name),
            });
        };
        self.store.remove(name)?;
        self.definitions().remove(name);
        let active = self.driver.active(name);
        if active.is_some() {
            self.driver.set_persistent(name, false)?;
        } else {
            self.driver.forget_shutoff_reason(name);
        }
        let id = active.map(|a| a.id);
        self.emit(
            name,
            entry.uuid,
            id,
            EventKind::Undefined(UndefinedDetail::Removed),
        );
        Ok(())
    }

    fn emit(&self, name: &str, uuid: Uuid, id: Option<u32>, kind: EventKind) {
        self.driver.events().emit(LifecycleEvent {
            name: name.to_string(),
            uuid,
            id,
            kind,
        });
    }

    /// Every domain, persistent or running, sorted by name.
    pub fn list(&self) -> Vec<DomainSummary> {
        let definitions = self.definitions().clone();
        let mut active: BTreeMap<String, ActiveDomain> = self
            .driver
            .list_active()
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect();
        let mut list: Vec<DomainSummary> = definitions
            .into_iter()
            .map(|(name, entry)| {
                let running = active.remove(&name);
                self.summary_of(name, Some(&entry), running)
            })
            .collect();
        list.extend(
            active
                .into_values()
                .map(|running| self.summary_of(running.name.clone(), None, Some(running))),
        );
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    fn summary_of(
        &self,
        name: String,
        entry: Option<&Entry>,
        running: Option<ActiveDomain>,
    ) -> DomainSummary {
        let state = match &running {
            Some(active) => active.state,
            None => self.driver.state(&name),
        };
        DomainSummary {
            uuid: running
                .as_ref()
                .map(|a| a.uuid)
                .or(entry.map(|e| e.uuid))
                .unwrap_or(Uuid([0; 16])),
            id: running.as_ref().map(|a| a.id),
            persistent: entry.is_some(),
            autostart: entry.is_some_and(|e| e.autostart),
            state,
            name,
        }
    }

    /// The domain called `name`.
    pub fn lookup_by_name(&self, name: &str) -> Result<DomainSummary, RegistryError> {
        let entry = self.definitions().get(name).cloned();
        let running = self.driver.active(name);
        if entry.is_none() && running.is_none() {
            return Err(no_name(name));
        }
        Ok(self.summary_of(name.to_string(), entry.as_ref(), running))
    }

    /// The domain with this UUID.
    pub fn lookup_by_uuid(&self, uuid: Uuid) -> Result<DomainSummary, RegistryError> {
        let name = self
            .identities()
            .into_iter()
            .find(|(_, u)| *u == uuid)
            .map(|(name, _)| name)
            .ok_or_else(|| RegistryError::NoDomain {
                what: format!("UUID {uuid}"),
            })?;
        self.lookup_by_name(&name)
    }

    /// The running domain with this id.
    pub fn lookup_by_id(&self, id: u32) -> Result<DomainSummary, RegistryError> {
        let active = self
            .driver
            .active_by_id(id)
            .ok_or_else(|| RegistryError::NoDomain {
                what: format!("id {id}"),
            })?;
        self.lookup_by_name(&active.name)
    }

    /// The persistent definition of `name` (what to derive a `VmConfig` from for a start).
    pub fn definition(&self, name: &str) -> Result<Definition, RegistryError> {
        let entry = self.definitions().get(name).cloned();
        match entry {
            Some(entry) => Ok(Definition {
                name: name.to_string(),
                uuid: entry.uuid,
                xml: entry.xml,
            }),
            None if self.driver.active(name).is_some() => Err(RegistryError::NotPersistent {
                name: name.to_string(),
            }),
            None => Err(no_name(name)),
        }
    }

    /// The XML of `name`: the live definition while it runs (unless `inactive`), else the
    /// persistent one (a transient domain only has the live one).
    pub fn xml(&self, name: &str, inactive: bool) -> Result<String, RegistryError> {
        let persistent = self.definitions().get(name).map(|e| e.xml.clone());
        let live = self.driver.live_xml(name);
        let chosen = if inactive {
            persistent.or(live)
        } else {
            live.or(persistent)
        };
        chosen.ok_or_else(|| no_name(name))
    }

    /// Starts a persistent domain with the configuration the caller derived from its
    /// definition.
    pub async fn start(
        &self,
        name: &str,
        config: VmConfig,
    ) -> Result<DomainSummary, RegistryError> {
        let _job = self.jobs.lock().await;
        let definition = self.definition(name)?;
        if self.driver.is_active_or_starting(name) {
            return Err(RegistryError::AlreadyActive {
                name: name.to_string(),
            });
        }
        let spec = StartSpec {
            name: definition.name,
            uuid: definition.uuid,
            config,
            xml: definition.xml,
            persistent: true,
        };
        self.driver.start(spec).await?;
        self.lookup_by_name(name)
    }

    /// Creates and starts a domain from XML without defining it (libvirt's createXML): it
    /// vanishes when it stops. If an inactive persistent domain has this name and UUID, it is
    /// started with this XML as its live definition and stays persistent.
    pub async fn create(
        &self,
        name: &str,
        uuid: Uuid,
        xml: &str,
        config: VmConfig,
    ) -> Result<DomainSummary, RegistryError> {
        validate_name(name)?;
        let _job = self.jobs.lock().await;
        self.check_identity(name, uuid)?;
        if self.driver.is_active_or_starting(name) {
            return Err(RegistryError::AlreadyActive {
                name: name.to_string(),
            });
        }
        let spec = StartSpec {
            name: name.to_string(),
            uuid,
            config,
            xml: xml.to_string(),
            persistent: self.definitions().contains_key(name),
        };
        self.driver.start(spec).await?;
        self.lookup_by_name(name)
    }

    /// Whether `name` starts with the daemon (always false for a transient domain).
    pub fn autostart(&self, name: &str) -> Result<bool, RegistryError> {
        self.lookup_by_name(name).map(|d| d.autostart)
    }

    /// Sets whether a persistent domain starts with the daemon.
    pub async fn set_autostart(&self, name: &str, enabled: bool) -> Result<(), RegistryError> {
        let _job = self.jobs.lock().await;
        self.definition(name)?;
        self.store.set_autostart(name, enabled)?;
        if let Some(entry) = self.definitions().get_mut(name) {
            entry.autostart = enabled;
        }
        Ok(())
    }

    /// Starts every inactive domain marked autostart, with the configuration `config_for`
    /// derives from its definition; returns each attempt's result, by name. Call after
    /// [`NativeDriver::recover`].
    pub async fn start_autostart<F>(
        &self,
        config_for: F,
    ) -> Vec<(String, Result<DomainSummary, RegistryError>)>
    where
        F: Fn(&Definition) -> Result<VmConfig, String>,
    {
        let names: Vec<String> = self
            .definitions()
            .iter()
            .filter(|(_, entry)| entry.autostart)
            .map(|(name, _)| name.clone())
            .collect();
        let mut results = Vec::new();
        for name in names {
            if self.driver.is_active_or_starting(&name) {
                continue;
            }
            let result = match self.definition(&name) {
                Ok(definition) => match config_for(&definition) {
                    Ok(config) => self.start(&name, config).await,
                    Err(message) => Err(RegistryError::Config {
                        name: name.clone(),
                        message,
                    }),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                tracing::warn!(domain = %name, "autostart failed: {e}");
            }
            results.push((name, result));
        }
        results
    }
}

fn no_name(name: &str) -> RegistryError {
    RegistryError::NoDomain {
        what: format!("name {name:?}"),
    }
}

fn load_entry(
    store: &DefinitionStore,
    name: &str,
    identify: &IdentifyFn,
    loaded: &BTreeMap<String, Entry>,
) -> Result<Entry, String> {
    let xml = store.load(name).map_err(|e| e.to_string())?;
    let autostart = store.autostart(name).map_err(|e| e.to_string())?;
    let (inner_name, uuid) = identify(&xml)?;
    if inner_name != name {
        return Err(format!(
            "the file is named {name:?} but defines domain {inner_name:?}"
        ));
    }
    if let Some((other, _)) = loaded.iter().find(|(_, e)| e.uuid == uuid) {
        return Err(format!("UUID {uuid} is already used by domain {other:?}"));
    }
    Ok(Entry {
        uuid,
        xml,
        autostart,
    })
}

#[cfg(test)]
mod tests;
