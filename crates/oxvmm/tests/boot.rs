//! Boots the bundled test guest on real KVM, one test per scenario.

mod common;

use std::time::Duration;

use common::{oxvmm, require_kvm, run_guest};

/// Usable RAM the guest must see for `mib` MiB, computed from the platform layout.
fn expected_usable_bytes(mib: u64) -> u64 {
    arch::memory::e820_map(mib << 20)
        .iter()
        .filter(|e| e.kind == arch::memory::E820_RAM)
        .map(|e| e.size)
        .sum()
}

#[test]
fn kvm_serial_scenario_passes() {
    let run = run_guest("serial", &[]);
    run.assert_exit(0);
    run.passed("serial");
}

#[test]
fn kvm_e820_matches_the_layout_below_the_hole() {
    let run = run_guest("e820", &["--memory", "256M"]);
    run.assert_exit(0);
    let details = run.passed("e820");
    let expected = format!("usable={}", expected_usable_bytes(256));
    assert!(details.contains(&expected), "want {expected}: {details}");
}

#[test]
fn kvm_e820_matches_the_layout_across_the_hole() {
    let run = run_guest("e820", &["--memory", "3200M"]);
    run.assert_exit(0);
    let details = run.passed("e820");
    let expected = format!("usable={}", expected_usable_bytes(3200));
    assert!(details.contains(&expected), "want {expected}: {details}");
    assert!(
        run.stdout.contains("e820: 0x0000000100000000"),
        "no RAM above 4 GiB:\n{run}"
    );
}

#[test]
fn kvm_rtc_reads_the_host_date() {
    let run = run_guest("rtc", &[]);
    run.assert_exit(0);
    let details = run.passed("rtc");
    let today = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .expect("date");
    let today = String::from_utf8_lossy(&today.stdout).trim().to_string();
    assert!(
        details.starts_with(&today),
        "RTC says {details}, host says {today}"
    );
}

#[test]
fn kvm_smp_brings_up_every_vcpu() {
    let run = run_guest("smp", &["--cpus", "2"]);
    run.assert_exit(0);
    let details = run.passed("smp");
    assert!(details.contains("cpus=2/2"), "{details}");
    assert!(details.contains("apic_ids=0,1"), "{details}");
}

#[test]
fn kvm_single_vcpu_smp_reports_one() {
    let run = run_guest("smp", &["--cpus", "1"]);
    run.assert_exit(0);
    assert!(run.passed("smp").contains("cpus=1/1"));
}

#[test]
fn kvm_poweroff_exits_zero() {
    let run = run_guest("poweroff serial", &[]);
    run.assert_exit(0);
    run.passed("poweroff");
    assert!(
        !run.stdout.contains("TEST serial"),
        "scenarios after poweroff ran:\n{run}"
    );
}

fn boots(run: &common::Run) -> usize {
    run.stdout.matches("oxguest: started").count()
}

#[test]
fn kvm_i8042_reset_reboots_in_place() {
    let run = run_guest("reset serial", &[]);
    run.assert_exit(0);
    assert!(run.passed("reset").contains("i8042"), "{run}");
    run.passed("serial");
    assert_eq!(boots(&run), 2, "{run}");
}

#[test]
fn kvm_acpi_reset_reboots_in_place() {
    let run = run_guest("reset-acpi", &["--cpus", "2"]);
    run.assert_exit(0);
    assert!(run.passed("reset-acpi").contains("acpi"), "{run}");
    assert_eq!(boots(&run), 2, "{run}");
}

#[test]
fn kvm_triple_fault_reboots_in_place() {
    let run = run_guest("reset-triple", &[]);
    run.assert_exit(0);
    assert!(run.passed("reset-triple").contains("triple"), "{run}");
    assert_eq!(boots(&run), 2, "{run}");
}

#[test]
fn kvm_reset_with_on_reboot_exit_exits_zero_without_rebooting() {
    let run = run_guest("reset", &["--on-reboot", "exit"]);
    run.assert_exit(0);
    assert_eq!(boots(&run), 1, "{run}");
    assert!(!run.stdout.contains("TEST reset PASS"), "{run}");
}

#[test]
fn kvm_smp_works_again_after_a_reboot() {
    let run = run_guest("reset smp", &["--cpus", "2"]);
    run.assert_exit(0);
    assert!(run.passed("smp").contains("cpus=2/2"), "{run}");
}

#[test]
fn kvm_both_elf_entry_points_boot() {
    let pvh = run_guest("serial", &["--boot-protocol", "pvh"]);
    pvh.assert_exit(0);
    assert!(pvh.stdout.contains("oxguest: started (pvh)"), "{pvh}");
    let linux64 = run_guest("serial", &["--boot-protocol", "linux64"]);
    linux64.assert_exit(0);
    assert!(
        linux64.stdout.contains("oxguest: started (linux64)"),
        "{linux64}"
    );
}

#[test]
fn kvm_command_line_reaches_the_guest() {
    let run = run_guest("serial token=abc123", &["--boot-protocol", "linux64"]);
    run.assert_exit(0);
    run.passed("serial");
}

#[test]
fn kvm_unknown_scenarios_fail_visibly() {
    let run = run_guest("nosuchscenario", &[]);
    run.assert_exit(0);
    assert!(run.test_line("nosuchscenario").contains("FAIL"), "{run}");
}

#[test]
fn kvm_demo_reports_cpus_memory_and_date() {
    require_kvm();
    let run = oxvmm(
        &["--demo", "--cpus", "2", "--memory", "128M"],
        Duration::from_secs(120),
    );
    run.assert_exit(0);
    assert!(run.stdout.contains("vCPUs online: 2"), "{run}");
    let mib = expected_usable_bytes(128) >> 20;
    assert!(run.stdout.contains(&format!("memory: {mib} MiB")), "{run}");
    assert!(run.stdout.contains("RTC: 20"), "{run}");
}

#[test]
fn kvm_serial_to_a_file_and_off() {
    let path = std::env::temp_dir().join(format!("oxvmm-serial-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let dest = format!("file={}", path.display());
    let run = run_guest("serial", &["--serial", &dest]);
    run.assert_exit(0);
    assert!(run.stdout.is_empty(), "{run}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("TEST serial PASS"), "{text}");
    std::fs::remove_file(&path).unwrap();

    let off = run_guest("serial", &["--serial", "off"]);
    off.assert_exit(0);
    assert!(off.stdout.is_empty(), "{off}");
}

#[test]
fn kvm_json_config_boots_like_the_command_line() {
    let path = std::env::temp_dir().join(format!("oxvmm-config-{}.json", std::process::id()));
    let config = serde_json::json!({
        "payload": {"kernel": guests::OXGUEST_PATH, "cmdline": "smp"},
        "cpus": {"count": 2},
        "memory": {"size_mib": 128},
    });
    std::fs::write(&path, config.to_string()).unwrap();
    require_kvm();
    let run = oxvmm(
        &["--config", path.to_str().unwrap()],
        Duration::from_secs(120),
    );
    run.assert_exit(0);
    assert!(run.passed("smp").contains("cpus=2/2"), "{run}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn kvm_masked_cpu_features_boot() {
    let run = run_guest("serial", &["--cpu-features", "-cx16,-xsave,-avx2"]);
    run.assert_exit(0);
    run.passed("serial");
}
