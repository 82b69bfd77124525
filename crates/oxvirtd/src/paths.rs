//! Where the daemon keeps things (see `docs/oxvirtd.md`).
//!
//! ```text
//! <state>/domains/<name>.xml           persistent definition (opaque XML text)
//! <state>/autostart/<name>             autostart marker (empty file)
//! <state>/log/<name>.log               oxvmm's standard error, appended per start
//! <state>/log/<name>.serial.log        the guest's COM1 when the VmConfig says `stdio`
//! <runtime>/domains/<name>.json        runtime record of a running VM (pid, start time, ...)
//! <runtime>/domains/<name>.vm.json     the VmConfig oxvmm was started with (--config)
//! <runtime>/domains/<name>.api.sock    oxvmm's control API socket
//! <runtime>/domains/<name>.console.sock  serial console socket (for SerialConfig::Socket)
//! <runtime>/domains/<name>.vconsole.sock virtio console socket (for ConsoleConfig::Socket)
//! ```
//!
//! Every function taking a `name` expects a name that passed [`crate::ident::validate_name`].

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Default persistent state directory (as root).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/oxvirt";
/// Default runtime directory (as root; a tmpfs, emptied at boot).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/oxvirt";

/// Longest path a Unix socket can be bound to (`sun_path` is 108 bytes with the NUL).
pub const SOCKET_PATH_MAX: usize = 107;

/// The state and runtime directory layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    state_dir: PathBuf,
    runtime_dir: PathBuf,
}

impl Paths {
    /// A layout rooted at these two directories (nothing is created yet).
    pub fn new(state_dir: impl Into<PathBuf>, runtime_dir: impl Into<PathBuf>) -> Self {
        Paths {
            state_dir: state_dir.into(),
            runtime_dir: runtime_dir.into(),
        }
    }

    /// `/var/lib/oxvirt` and `/run/oxvirt`.
    pub fn system() -> Self {
        Paths::new(DEFAULT_STATE_DIR, DEFAULT_RUNTIME_DIR)
    }

    /// The persistent state root.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The runtime root.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// `<state>/domains`
    pub fn definitions_dir(&self) -> PathBuf {
        self.state_dir.join("domains")
    }

    /// `<state>/domains/<name>.xml`
    pub fn definition_file(&self, name: &str) -> PathBuf {
        self.definitions_dir().join(format!("{name}.xml"))
    }

    /// `<state>/autostart`
    pub fn autostart_dir(&self) -> PathBuf {
        self.state_dir.join("autostart")
    }

    /// `<state>/autostart/<name>`
    pub fn autostart_marker(&self, name: &str) -> PathBuf {
        self.autostart_dir().join(name)
    }

    /// `<state>/log`
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("log")
    }

    /// `<state>/log/<name>.log`: oxvmm's standard error.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.log"))
    }

    /// `<state>/log/<name>.serial.log`: the guest's COM1 when it goes to oxvmm's stdout.
    pub fn serial_log_file(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.serial.log"))
    }

    /// `<runtime>/domains`
    pub fn runtime_domains_dir(&self) -> PathBuf {
        self.runtime_dir.join("domains")
    }

    /// `<runtime>/domains/<name>.json`: the runtime record.
    pub fn runtime_record(&self, name: &str) -> PathBuf {
        self.runtime_domains_dir().join(format!("{name}.json"))
    }

    /// `<runtime>/domains/<name>.vm.json`: the configuration given to oxvmm.
    pub fn vm_config_file(&self, name: &str) -> PathBuf {
        self.runtime_domains_dir().join(format!("{name}.vm.json"))
    }

    /// `<runtime>/domains/<name>.api.sock`
    pub fn api_socket(&self, name: &str) -> PathBuf {
        self.runtime_domains_dir().join(format!("{name}.api.sock"))
    }

    /// `<runtime>/domains/<name>.console.sock`
    pub fn console_socket(&self, name: &str) -> PathBuf {
        self.runtime_domains_dir()
            .join(format!("{name}.console.sock"))
    }

    /// `<runtime>/domains/<name>.vconsole.sock`: the virtio console's socket.
    pub fn virtio_console_socket(&self, name: &str) -> PathBuf {
        self.runtime_domains_dir()
            .join(format!("{name}.vconsole.sock"))
    }

    /// `<runtime>/domains/<name>.vsock.sock`: host connections to the guest's vsock
    /// (Firecracker's convention: `CONNECT <port>`; guest connections go to `<this>_<port>`).
    pub fn vsock_socket(&self, name: &str) -> PathBuf {
        self.runtime_domains_dir()
            .join(format!("{name}.vsock.sock"))
    }

    /// Every runtime file of a VM (removed when it stops).
    pub fn runtime_files(&self, name: &str) -> [PathBuf; 6] {
        [
            self.vsock_socket(name),
            self.runtime_record(name),
            self.vm_config_file(name),
            self.api_socket(name),
            self.console_socket(name),
            self.virtio_console_socket(name),
        ]
    }

    /// Creates the directories: state ones 0755, runtime ones 0700 (sockets live there).
    pub fn create_dirs(&self) -> io::Result<()> {
        let mut public = std::fs::DirBuilder::new();
        public.recursive(true).mode(0o755);
        let mut private = std::fs::DirBuilder::new();
        private.recursive(true).mode(0o700);
        for dir in [self.definitions_dir(), self.autostart_dir(), self.log_dir()] {
            public
                .create(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        let dir = self.runtime_domains_dir();
        private
            .create(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_documented_names() {
        let paths = Paths::new("/s", "/r");

        assert_eq!(
            paths.definition_file("vm"),
            PathBuf::from("/s/domains/vm.xml")
        );
        assert_eq!(
            paths.autostart_marker("vm"),
            PathBuf::from("/s/autostart/vm")
        );
        assert_eq!(paths.log_file("vm"), PathBuf::from("/s/log/vm.log"));
        assert_eq!(
            paths.runtime_record("vm"),
            PathBuf::from("/r/domains/vm.json")
        );
        assert_eq!(
            paths.api_socket("vm"),
            PathBuf::from("/r/domains/vm.api.sock")
        );
        assert_eq!(
            paths.console_socket("vm"),
            PathBuf::from("/r/domains/vm.console.sock")
        );
    }

    #[test]
    fn the_longest_name_fits_a_socket_path_under_the_default_runtime_dir() {
        let name = "x".repeat(crate::ident::NAME_MAX_LEN);

        let paths = Paths::system();

        for socket in [
            paths.console_socket(&name),
            paths.virtio_console_socket(&name),
        ] {
            assert!(socket.as_os_str().len() <= SOCKET_PATH_MAX, "{socket:?}");
        }
    }

    #[test]
    fn create_dirs_makes_every_directory() {
        let root = crate::test_util::temp_dir("paths");
        let paths = Paths::new(root.join("state"), root.join("run"));

        paths.create_dirs().unwrap();

        for dir in [
            paths.definitions_dir(),
            paths.autostart_dir(),
            paths.log_dir(),
            paths.runtime_domains_dir(),
        ] {
            assert!(dir.is_dir(), "{dir:?}");
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
