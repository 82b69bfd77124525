//! Bad input on the command line: one line naming the option and value, exit status 1.

mod common;

use std::time::Duration;

use common::oxvmm;

fn assert_one_line_error(args: &[&str], expected: &[&str]) {
    let run = oxvmm(args, Duration::from_secs(30));
    run.assert_exit(1);
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "expected one line\n{run}");
    assert!(stderr.starts_with("oxvmm: "), "{run}");
    for text in expected {
        assert!(
            stderr.contains(text),
            "expected {text:?} in the error\n{run}"
        );
    }
    assert!(!stderr.contains("panicked"), "{run}");
}

#[test]
fn missing_kernel_is_named() {
    assert_one_line_error(
        &["--kernel", "/nonexistent/vmlinux"],
        &["--kernel /nonexistent/vmlinux", "No such file"],
    );
}

#[test]
fn a_file_that_is_not_a_kernel_is_refused() {
    let path = std::env::temp_dir().join(format!("oxvmm-not-a-kernel-{}", std::process::id()));
    std::fs::write(&path, "#!/bin/sh\necho hello\n").unwrap();
    let path_text = path.to_str().unwrap();
    assert_one_line_error(&["--kernel", path_text], &["--kernel", "not a kernel"]);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unreadable_kernel_is_named() {
    assert_one_line_error(&["--kernel", "/"], &["--kernel /"]);
}

#[test]
fn memory_values_are_checked() {
    let kernel = guests::OXGUEST_PATH;
    assert_one_line_error(&["--kernel", kernel, "--memory", "0"], &["--memory 0"]);
    assert_one_line_error(
        &["--kernel", kernel, "--memory", "foo"],
        &["--memory \"foo\""],
    );
    assert_one_line_error(
        &["--kernel", kernel, "--memory", "64T"],
        &["--memory 67108864M", "host"],
    );
}

#[test]
fn cpu_counts_are_checked() {
    let kernel = guests::OXGUEST_PATH;
    assert_one_line_error(&["--kernel", kernel, "--cpus", "0"], &["--cpus 0"]);
    assert_one_line_error(&["--kernel", kernel, "--cpus", "300"], &["--cpus 300"]);
    assert_one_line_error(
        &["--kernel", kernel, "--cpus", "255"],
        &["--cpus 255", "254"],
    );
    assert_one_line_error(&["--kernel", kernel, "--cpus", "-1"], &["-1"]);
}

#[test]
fn unknown_cpu_features_are_named() {
    let kernel = guests::OXGUEST_PATH;
    assert_one_line_error(
        &["--kernel", kernel, "--cpu-features", "-nosuchflag"],
        &["--cpu-features", "nosuchflag"],
    );
}

#[test]
fn a_missing_initrd_is_named() {
    let kernel = guests::OXGUEST_PATH;
    assert_one_line_error(
        &["--kernel", kernel, "--initrd", "/nonexistent/initrd"],
        &["--initrd /nonexistent/initrd"],
    );
}

#[test]
fn unknown_options_and_bad_values_exit_1() {
    assert_one_line_error(&["--kernel", "x", "--frobnicate"], &["--frobnicate"]);
    assert_one_line_error(&["--kernel", "x", "--serial", "tty"], &["--serial"]);
    assert_one_line_error(&["--kernel", "x", "--on-reboot", "dance"], &["--on-reboot"]);
    assert_one_line_error(&[], &["--kernel"]);
}

#[test]
fn print_config_shows_the_effective_config() {
    let run = oxvmm(
        &[
            "--demo",
            "--cpus",
            "2",
            "--memory",
            "128M",
            "--print-config",
        ],
        Duration::from_secs(30),
    );
    run.assert_exit(0);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(json["cpus"]["count"], 2);
    assert_eq!(json["memory"]["size_mib"], 128);
    assert_eq!(json["payload"]["kernel"], "builtin:oxguest");
}

#[test]
fn kvm_without_permission_on_dev_kvm_is_explained() {
    common::require_kvm();
    // /dev/kvm is root-only here (0600); an unprivileged user is refused. When the tests run
    // as a user who already lacks access, require_kvm above has failed instead.
    assert!(
        std::path::Path::new("/usr/bin/setpriv").exists(),
        "this test needs setpriv (Debian package util-linux) to drop privileges"
    );
    // A copy in a world-readable place, in case the build directory is not reachable by
    // the unprivileged user (CI clones under root's home).
    let dir = std::env::temp_dir().join(format!("oxvmm-noperm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("oxvmm");
    std::fs::copy(common::OXVMM, &binary).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = common::run_command(
        "/usr/bin/setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            binary.to_str().unwrap(),
            "--demo",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    run.assert_exit(1);
    assert!(
        run.stderr.contains("no permission to open /dev/kvm"),
        "{run}"
    );
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{run}");
}
