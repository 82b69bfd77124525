#!/usr/bin/python3
"""oxvirtd benchmark driver (run by bench/oxvirtd.sh with Debian's /usr/bin/python3).

Usage: oxvirtd_bench.py URI DAEMON_PID GUEST_KERNEL WORK_DIR

Measures, against a running oxvirtd: the round trip of listAllDomains() and dom.info() on an
open connection with 10 domains defined, `virsh list --all` wall time beside virsh's own floor
(`virsh -c test:///default list --all`), the daemon's RSS idle and with 10 running VMs, and VMs
started per second (define + start, 20 in a row). Prints each figure and its ratio to the
reference numbers of issue 4 (libvirtd 9.0 + QEMU on the same kind of machine).
"""

import statistics
import subprocess
import sys
import time

import libvirt

REFERENCE = {
    "listAllDomains": 100.0,  # us, libvirtd 9.0
    "virsh_list": 24.0,  # ms, against a 23.7 ms floor
    "rss_idle": 25.5,  # MiB
    "rss_10": 39.0,  # MiB
    "starts_per_s": 2.0,
}


def domain_xml(name, kernel):
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type>hvm</type><kernel>{kernel}</kernel><cmdline>counter</cmdline></os>
  <features><acpi/><apic/></features>
  <devices><serial type='pty'/></devices>
</domain>"""


def median_us(call, runs):
    for _ in range(runs // 10):
        call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1000.0)
    return statistics.median(samples), min(samples), max(samples)


def median_ms_of(argv, runs):
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env={"LC_ALL": "C"})
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples), min(samples), max(samples)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def ratio(value, reference):
    return f"  ({value / reference:.2f}x libvirtd's {reference})"


def main():
    uri, pid, kernel, work = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    conn = libvirt.open(uri)
    domains = [conn.defineXML(domain_xml(f"bench{i}", kernel)) for i in range(10)]
    rss_idle = rss_mib(pid)

    lad = median_us(conn.listAllDomains, 2000)
    info = median_us(domains[0].info, 2000)
    virsh = median_ms_of(["virsh", "-c", uri, "list", "--all"], 20)
    floor = median_ms_of(["virsh", "-c", "test:///default", "list", "--all"], 20)

    # Started paused, as the reference was: ten spinning guests would saturate the 2-core
    # machines and measure the scheduler instead of the daemon.
    for dom in domains:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    time.sleep(0.5)
    rss_10 = rss_mib(pid)
    running_info = median_us(domains[0].info, 500)
    for dom in domains:
        dom.destroy()

    start = time.perf_counter()
    started = []
    for i in range(20):
        dom = conn.defineXML(domain_xml(f"rate{i}", kernel))
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        started.append(dom)
    elapsed = time.perf_counter() - start
    rate = 20 / elapsed
    for dom in started:
        dom.destroy()
        dom.undefine()
    for dom in domains:
        dom.undefine()
    conn.close()

    print(f"listAllDomains() round trip (10 defined): median {lad[0]:.1f} us "
          f"[{lad[1]:.1f}-{lad[2]:.1f}]{ratio(lad[0], REFERENCE['listAllDomains'])}; target <= 50 us")
    print(f"dom.info() round trip, shut-off domain:   median {info[0]:.1f} us "
          f"[{info[1]:.1f}-{info[2]:.1f}]")
    print(f"dom.info() round trip, paused domain:     median {running_info[0]:.1f} us "
          f"[{running_info[1]:.1f}-{running_info[2]:.1f}] (asks oxvmm's API)")
    print(f"virsh list --all: median {virsh[0]:.2f} ms [{virsh[1]:.2f}-{virsh[2]:.2f}], "
          f"client floor (test:///default) {floor[0]:.2f} ms: +{virsh[0] - floor[0]:.2f} ms "
          f"(libvirtd: +0.3 ms); target within 1 ms")
    print(f"daemon RSS idle: {rss_idle:.1f} MiB{ratio(rss_idle, REFERENCE['rss_idle'])}; "
          f"target <= {REFERENCE['rss_idle'] / 2} MiB")
    print(f"daemon RSS with 10 VMs (paused): {rss_10:.1f} MiB{ratio(rss_10, REFERENCE['rss_10'])}; "
          f"target <= {REFERENCE['rss_10'] / 2} MiB")
    print(f"VMs started per second (define + start paused, 20 in a row): {rate:.1f}/s "
          f"({rate / REFERENCE['starts_per_s']:.1f}x libvirtd's {REFERENCE['starts_per_s']}); "
          f"target >= 50/s")


if __name__ == "__main__":
    main()
