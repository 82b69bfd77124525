//! What the integration tests share: the back-end binary run as a child process, and a real
//! Linux guest (Debian's cloud kernel, busybox, an initramfs made here) under QEMU TCG as its
//! front-end.

#![allow(dead_code, reason = "each test binary uses part of this module")]

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The back-end under test.
pub const BACKEND: &str = env!("CARGO_BIN_EXE_oxvmm-vhost-user");
/// Longest a guest may run: a TCG boot takes a few seconds; a busy machine is slower.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(180);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("oxvirt-vu-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `oxvmm-vhost-user` running as a child, killed on drop.
pub struct Backend {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Backend {
    /// Starts `oxvmm-vhost-user --socket DIR/NAME.sock DEVICE OPTIONS` and waits for its socket.
    pub fn start(dir: &TempDir, name: &str, device: &str, options: &str) -> Self {
        let socket = dir.join(&format!("{name}.sock"));
        let log = dir.join(&format!("{name}.log"));
        let child = Command::new(BACKEND)
            .arg("--socket")
            .arg(&socket)
            .arg(device)
            .arg(options)
            .arg("--verbose")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut backend = Self { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !backend.socket.exists() {
            if let Some(status) = backend.child.try_wait().unwrap() {
                panic!("back-end exited ({status}):\n{}", backend.log());
            }
            assert!(
                Instant::now() < deadline,
                "no socket after 10 s:\n{}",
                backend.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        backend
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics unless the process still runs and never panicked.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("back-end exited ({status}):\n{}", self.log());
        }
        assert!(!self.log().contains("panicked"), "{}", self.log());
    }

    /// Waits until its log contains `text`.
    pub fn wait_for_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(Instant::now() < deadline, "{text:?} never logged:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The guest kernel, busybox and modules, fetched once per test binary.
pub struct GuestFiles {
    pub bzimage: PathBuf,
    pub busybox: PathBuf,
    pub modules: PathBuf,
}

pub fn guest_files() -> &'static GuestFiles {
    static FILES: OnceLock<GuestFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = crate_dir.join("../../target/linux-kernel");
        let script = crate_dir.join("tests/linux-modules.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} failed ({}); it needs apt-get, dpkg-deb, lz4 and the package registry:\n{}{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let modules = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("modules-"))
            })
            .expect("linux-modules.sh made no modules-* directory");
        GuestFiles {
            bzimage: dir.join("bzImage"),
            busybox: dir.join("busybox"),
            modules,
        }
    })
}

/// A cpio "newc" archive (what the kernel unpacks as its initramfs), built in memory.
#[derive(Default)]
pub struct Cpio {
    data: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), contents: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            contents.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.data.extend_from_slice(b"070701");
        for field in fields {
            self.data
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(contents);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, contents: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), contents);
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

/// An initramfs whose /init loads the virtio modules, runs `checks` (busybox sh) and powers
/// off. Lines the checks print as `RESULT key=value` are what [`Guest::result`] reads.
pub fn initramfs(path: &Path, checks: &str) {
    initramfs_with(path, checks, &[]);
}

/// [`initramfs`] with extra executables: `(name under bin/, contents)`.
pub fn initramfs_with(path: &Path, checks: &str, programs: &[(&str, Vec<u8>)]) {
    let files = guest_files();
    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "mnt",
        "tmp",
        "lib",
        "lib/modules",
    ] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file(
        "bin/busybox",
        0o755,
        &std::fs::read(&files.busybox).unwrap(),
    );
    for (name, contents) in programs {
        cpio.file(&format!("bin/{name}"), 0o755, contents);
    }
    let order = std::fs::read_to_string(files.modules.join("load-order")).unwrap();
    for module in order.lines() {
        let contents = std::fs::read(files.modules.join(module)).unwrap();
        cpio.file(&format!("lib/modules/{module}"), 0o644, &contents);
    }
    cpio.file("lib/modules/load-order", 0o644, order.as_bytes());
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         for m in $(cat /lib/modules/load-order); do\n\
           insmod /lib/modules/$m || echo \"RESULT insmod_failed=$m\"\n\
         done\n\
         echo GUEST-CHECKS-START\n\
         {checks}\n\
         echo GUEST-CHECKS-END\n\
         poweroff -f\n"
    );
    cpio.file("init", 0o755, init.as_bytes());
    std::fs::write(path, cpio.finish()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// What a guest printed on its serial console, once it powered off.
pub struct Guest {
    pub console: String,
}

impl Guest {
    /// Boots the kernel with `initramfs` under QEMU TCG, its RAM a shared memfd (vhost-user
    /// needs the back-end to map it), with the extra QEMU `devices` arguments; returns when
    /// QEMU exits.
    pub fn run(initramfs: &Path, devices: &[String]) -> Self {
        let files = guest_files();
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-accel", "tcg", "-m", "256M", "-smp", "1"])
            .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
            .args(["-numa", "node,memdev=mem"])
            .arg("-kernel")
            .arg(&files.bzimage)
            .arg("-initrd")
            .arg(initramfs)
            .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=3"])
            .args([
                "-nodefaults",
                "-nographic",
                "-serial",
                "stdio",
                "-no-reboot",
            ])
            .args(devices)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .expect("cannot run qemu-system-x86_64 (package qemu-system-x86)");
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stdout.read_to_end(&mut text);
            let mut errors = Vec::new();
            let _ = stderr.read_to_end(&mut errors);
            text.extend_from_slice(b"\n[qemu stderr]\n");
            text.extend_from_slice(&errors);
            String::from_utf8_lossy(&text).into_owned()
        });
        let deadline = Instant::now() + GUEST_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let console = reader.join().unwrap();
                panic!("the guest ran past {GUEST_TIMEOUT:?}:\n{console}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let console = reader.join().unwrap();
        assert!(status.success(), "qemu failed ({status}):\n{console}");
        assert!(
            console.contains("GUEST-CHECKS-END"),
            "the guest did not finish its checks:\n{console}"
        );
        Self { console }
    }

    /// The value of the guest's `RESULT key=value` line.
    pub fn result(&self, key: &str) -> &str {
        let prefix = format!("RESULT {key}=");
        self.console
            .lines()
            .find_map(|line| line.trim_end_matches('\r').strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("the guest printed no {key}:\n{}", self.console))
    }

    /// Panics if the guest reported a module that would not load.
    pub fn assert_modules_loaded(&self) {
        assert!(
            !self.console.contains("RESULT insmod_failed="),
            "{}",
            self.console
        );
    }
}

/// QEMU arguments for a vhost-user device `device` (e.g. `vhost-user-blk-pci`) on `socket`.
pub fn vhost_user_device(id: &str, socket: &Path, device: &str, extra: &str) -> Vec<String> {
    vec![
        "-chardev".to_owned(),
        format!("socket,id={id},path={}", socket.display()),
        "-device".to_owned(),
        format!("{device},chardev={id}{extra}"),
    ]
}

/// Compiles the C program `source` with `gcc -static -Os` into `dir`, for the guest (a static
/// binary runs on the initramfs's busybox-only root); returns the binary.
pub fn static_c_program(dir: &TempDir, name: &str, source: &str) -> Vec<u8> {
    let source_path = dir.join(&format!("{name}.c"));
    let binary = dir.join(name);
    std::fs::write(&source_path, source).unwrap();
    let output = Command::new("gcc")
        .args(["-static", "-Os", "-Wall", "-Werror", "-o"])
        .arg(&binary)
        .arg(&source_path)
        .output()
        .expect("cannot run gcc (packages gcc, libc6-dev)");
    assert!(
        output.status.success(),
        "gcc failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(binary).unwrap()
}

/// The SHA-256 of `data`, by the host's `sha256sum`, as the guest's busybox prints it.
pub fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
