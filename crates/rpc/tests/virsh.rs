//! The real libvirt clients (Debian's virsh 9.0 and python3-libvirt) against our server: proves
//! the wire format byte for byte, since libvirt's own XDR code decodes everything we send.
//!
//! These tests need `virsh` (package libvirt-clients) and `/usr/bin/python3` with the
//! `libvirt` module (package python3-libvirt); they fail, naming the package, when missing.

mod support;

use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use support::{FakeHypervisor, TempDir, serve_unix, temp_dir};

/// Polls `done` for up to 10 s.
fn wait_until(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn require(program: &str, package: &str) {
    let found = Command::new(program).arg("--version").output().is_ok();
    assert!(
        found,
        "`{program}` is not installed: install the Debian package `{package}` to run this test"
    );
}

fn uri(socket: &Path) -> String {
    format!("oxvirt+unix:///system?socket={}", socket.display())
}

async fn virsh(socket: &Path, args: &[&str]) -> Output {
    require("virsh", "libvirt-clients");
    let mut cmd = Command::new("virsh");
    cmd.arg("-c").arg(uri(socket)).args(args);
    // Keep virsh away from any user config that could change its output.
    cmd.env("HOME", socket.parent().unwrap_or(Path::new("/")));
    cmd.env("LC_ALL", "C");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// A fake hypervisor serving consoles, and the `virsh console fake1` command for it.
struct ConsoleServer {
    /// Consoles the fake hypervisor opened so far.
    opened: Arc<AtomicU32>,
    /// Console data packets it echoed so far.
    echoes: Arc<AtomicU32>,
    /// To run with [`in_a_terminal`]: virsh console needs a terminal.
    command: String,
    /// Where the server's socket is; removed on drop.
    dir: TempDir,
}

/// Serves a fake hypervisor in a fresh directory named after `tag`, for `virsh console`.
fn serve_console(tag: &str) -> ConsoleServer {
    require("virsh", "libvirt-clients");
    require("script", "bsdutils");
    let hypervisor = FakeHypervisor::new();
    let opened = Arc::clone(&hypervisor.consoles_opened);
    let echoes = Arc::clone(&hypervisor.console_echoes);
    let dir = temp_dir(tag);
    let socket = serve_unix(hypervisor, dir.path());
    let command = format!("virsh -c '{}' console fake1", uri(&socket));
    ConsoleServer {
        opened,
        echoes,
        command,
        dir,
    }
}

/// Runs shell `command` in a terminal that script(1) provides, all its streams piped; returns
/// the child and its standard input.
fn in_a_terminal(command: &str) -> (Child, ChildStdin) {
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virsh_list_all_prints_our_domain() {
    // Arrange
    let hypervisor = FakeHypervisor::new();
    let dir = temp_dir("virsh-list");
    let socket = serve_unix(hypervisor.clone(), dir.path());

    // Act
    let out = virsh(&socket, &["list", "--all"]).await;

    // Assert
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout.lines().find(|l| l.contains("fake1")).expect(&all);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["7", "fake1", "running"], "{all}");
    assert_eq!(
        hypervisor.opened_names.lock().unwrap().as_slice(),
        ["oxvirt:///system"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virsh_dominfo_and_errors_read_like_libvirt() {
    // Arrange
    let hypervisor = FakeHypervisor::new();
    let dir = temp_dir("virsh-dominfo");
    let socket = serve_unix(hypervisor, dir.path());

    // Act
    let info = virsh(&socket, &["dominfo", "fake1"]).await;
    let not_paused = virsh(&socket, &["resume", "fake1"]).await;
    let unsupported = virsh(&socket, &["domblkstat", "fake1", "vda"]).await;
    let stats = virsh(&socket, &["domstats", "fake1"]).await;

    // Assert
    let stdout = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "{}", text(&info));
    assert!(stdout.contains("Name:           fake1"), "{}", text(&info));
    assert!(
        stdout.contains("State:          running"),
        "{}",
        text(&info)
    );
    assert!(stdout.contains("CPU(s):         2"), "{}", text(&info));
    assert!(
        stdout.contains("Max memory:     1048576 KiB"),
        "{}",
        text(&info)
    );
    assert!(
        stdout.contains("UUID:           4dea22b3-1d52-d8f3-2675-d52d2b5ad02f"),
        "{}",
        text(&info)
    );

    let stderr = String::from_utf8_lossy(&not_paused.stderr);
    assert!(!not_paused.status.success());
    assert!(
        stderr.contains("error: Requested operation is not valid: domain is not paused"),
        "{}",
        text(&not_paused)
    );

    let stderr = String::from_utf8_lossy(&unsupported.stderr);
    assert!(
        stderr.contains("this function is not supported by the connection driver"),
        "{}",
        text(&unsupported)
    );

    let stdout = String::from_utf8_lossy(&stats.stdout);
    assert!(
        stdout.contains("balloon.current=524288"),
        "{}",
        text(&stats)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_libvirt_lists_and_reads_info() {
    // Arrange
    require("/usr/bin/python3", "python3");
    let hypervisor = FakeHypervisor::new();
    let dir = temp_dir("python");
    let socket = serve_unix(hypervisor, dir.path());
    let script = format!(
        "import libvirt\n\
         c = libvirt.open('{}')\n\
         d = c.listAllDomains()[0]\n\
         print(d.name(), d.ID(), d.UUIDString(), d.info())\n\
         try:\n    c.lookupByName('nope')\n\
         except libvirt.libvirtError as e:\n    print('code', e.get_error_code())\n\
         c.close()\n",
        uri(&socket)
    );

    // Act
    let out = tokio::task::spawn_blocking(move || {
        Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    // Assert
    let all = text(&out);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("No module named 'libvirt'"),
        "python3-libvirt is not installed: install the Debian package `python3-libvirt`\n{all}"
    );
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "fake1 7 4dea22b3-1d52-d8f3-2675-d52d2b5ad02f [1, 1048576, 524288, 2, 1500000000]"
        ),
        "{all}"
    );
    assert!(stdout.contains("code 42"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virsh_event_loop_prints_lifecycle_events() {
    // Arrange
    let hypervisor = FakeHypervisor::new();
    let dir = temp_dir("virsh-event");
    let socket = serve_unix(hypervisor.clone(), dir.path());
    let watcher = {
        let socket = socket.clone();
        tokio::spawn(async move {
            virsh(
                &socket,
                &[
                    "event",
                    "--loop",
                    "--timeout",
                    "3",
                    "--event",
                    "lifecycle",
                    "--domain",
                    "fake1",
                ],
            )
            .await
        })
    };
    // Wait until virsh has registered its callback.
    for _ in 0..100 {
        if !hypervisor.callbacks.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Act
    let suspend = virsh(&socket, &["suspend", "fake1"]).await;
    let resume = virsh(&socket, &["resume", "fake1"]).await;
    // virsh exits on its --timeout.
    let out = watcher.await.unwrap();

    // Assert
    assert!(suspend.status.success(), "{}", text(&suspend));
    assert!(resume.status.success(), "{}", text(&resume));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("event 'lifecycle' for domain 'fake1': Suspended Paused"),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains("event 'lifecycle' for domain 'fake1': Resumed Unpaused"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virsh_console_exchanges_data_over_a_stream() {
    // Arrange
    let ConsoleServer {
        opened,
        echoes,
        command,
        dir: _dir,
    } = serve_console("virsh-console");

    // Act: type "hello", then the escape character Ctrl-].
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let (child, mut stdin) = in_a_terminal(&command);
        // virsh puts the terminal in raw mode before it opens the console.
        wait_until(|| opened.load(Ordering::SeqCst) > 0);
        stdin.write_all(b"hello").unwrap();
        wait_until(|| echoes.load(Ordering::SeqCst) > 0);
        // Give virsh time to print the echo before it sees the escape character.
        std::thread::sleep(std::time::Duration::from_millis(300));
        stdin.write_all(b"\x1d").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();

    // Assert
    let all = text(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Connected to domain 'fake1'"), "{all}");
    assert!(stdout.contains("console ready"), "{all}");
    assert!(stdout.contains("HELLO"), "{all}");
    assert!(out.status.success(), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virsh_console_ends_cleanly_when_the_server_ends_the_stream() {
    // Arrange
    let ConsoleServer {
        opened,
        command,
        dir: _dir,
        ..
    } = serve_console("virsh-console-end");

    // Act: "bye" makes the fake console end the stream, as a stopping VM does.
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let (mut child, mut stdin) = in_a_terminal(&command);
        wait_until(|| opened.load(Ordering::SeqCst) > 0);
        stdin.write_all(b"bye").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();

    // Assert: before the fix virsh said "Disconnected from ... due to I/O error" (exit 1).
    let all = text(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("console ready"), "{all}");
    assert!(!stdout.contains("Disconnected"), "{all}");
    assert_eq!(out.status.code(), Some(0), "{all}");
}
