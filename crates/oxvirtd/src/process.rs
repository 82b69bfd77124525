//! Watching, signalling and reaping a process through a pidfd, and reading `/proc/<pid>/stat`.
//!
//! A pidfd names one process for as long as it is open, so signals sent through it can never
//! reach a process that reused the pid. It becomes readable when the process exits, whether
//! or not it is our child; `waitid(P_PIDFD)` then reaps it when it is.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessExit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It was not our child (a VM re-attached after a daemon restart): its status went to its
    /// new parent.
    NotOurChild,
}

/// An open pidfd.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// Opens a pidfd for `pid`. Succeeds for a zombie too; fails with `ESRCH` once it is gone.
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
        // memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd_open: bad descriptor"))?;
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PidFd { fd, pid })
    }

    /// The process id (valid as a name only while the process is not reaped).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` to the process; `ESRCH` once it has exited.
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal takes our open pidfd, a signal number, a null siginfo
        // (meaning "as kill() would") and flags; no memory is written.
        let result = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if result < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Whether the process has exited (the pidfd is readable), without waiting.
    pub fn has_exited(&self) -> io::Result<bool> {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `poll` is one valid pollfd for the duration of the call; timeout 0.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        if ready < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ready > 0 && poll.revents & libc::POLLIN != 0)
    }

    /// Reaps the process if it is our child and has exited. `Ok(None)`: still running.
    /// [`ProcessExit::NotOurChild`] when it is not our child (only meaningful after the pidfd
    /// became readable, i.e. the process exited).
    pub fn try_reap(&self) -> io::Result<Option<ProcessExit>> {
        self.wait(libc::WNOHANG)
    }

    /// Waits for our child to exit and reaps it (for a child just killed with SIGKILL).
    pub fn reap_blocking(&self) -> io::Result<ProcessExit> {
        loop {
            match self.wait(0) {
                Ok(Some(exit)) => return Ok(exit),
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn wait(&self, flags: libc::c_int) -> io::Result<Option<ProcessExit>> {
        // SAFETY: siginfo_t is plain data; all-zero is a valid value that waitid overwrites.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let id = libc::id_t::try_from(self.fd.as_raw_fd())
            .map_err(|_| io::Error::other("negative pidfd"))?;
        // SAFETY: `info` is a valid siginfo_t for the kernel to fill; P_PIDFD with our open
        // pidfd names exactly one process.
        let result = unsafe { libc::waitid(libc::P_PIDFD, id, &mut info, libc::WEXITED | flags) };
        if result < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ECHILD) => Ok(Some(ProcessExit::NotOurChild)),
                _ => Err(error),
            };
        }
        // SAFETY: waitid succeeded, so `info` holds SIGCHLD data (or si_pid 0 with WNOHANG
        // when nothing has exited); these accessors read the fields of that union member.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        Ok(Some(match info.si_code {
            libc::CLD_EXITED => ProcessExit::Code(status),
            _ => ProcessExit::Signal(status),
        }))
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The fields of `/proc/<pid>/stat` the daemon uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks: with the pid, it identifies a process.
    pub start_time: u64,
}

/// Reads `/proc/<pid>/stat`.
pub fn proc_stat(pid: i32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_proc_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat: {text:?}"),
        )
    })
}

/// Parses a stat line; the command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3 (state); field N is `fields[N - 3]`.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_time: field(22)?,
    })
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of [`ProcStat`] times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 \
                    98765 1000000 100 18446744073709551615";

        let stat = parse_proc_stat(line).unwrap();

        assert_eq!(stat.state, 'S');
        assert_eq!(stat.cpu_ticks, 10);
        assert_eq!(stat.start_time, 98765);
        assert_eq!(parse_proc_stat("1 (x) S 1"), None);
    }

    #[test]
    fn our_own_stat_is_readable_and_stable() {
        let pid = std::process::id() as i32;

        let first = proc_stat(pid).unwrap();
        let second = proc_stat(pid).unwrap();

        assert_eq!(first.start_time, second.start_time);
        assert!(first.state == 'R' || first.state == 'S', "{first:?}");
    }

    /// Spawns `command` and hands it to a pidfd, which reaps it (as the driver does).
    fn spawn_watched(command: &mut Command) -> PidFd {
        let child = command.spawn().unwrap();
        let pid = child.id() as i32;
        drop(child);
        PidFd::open(pid).unwrap()
    }

    #[test]
    fn a_child_is_signalled_and_reaped_through_its_pidfd() {
        let pidfd = spawn_watched(Command::new("sleep").arg("30"));
        assert_eq!(pidfd.try_reap().unwrap(), None);
        assert!(!pidfd.has_exited().unwrap());

        pidfd.send_signal(libc::SIGKILL).unwrap();
        let exit = pidfd.reap_blocking().unwrap();

        assert_eq!(exit, ProcessExit::Signal(libc::SIGKILL));
        assert!(pidfd.send_signal(0).is_err(), "the process is gone");
    }

    #[test]
    fn exit_codes_are_reported() {
        let pidfd = spawn_watched(Command::new("sh").args(["-c", "exit 2"]));

        while !pidfd.has_exited().unwrap() {
            std::thread::sleep(Duration::from_millis(5));
        }

        assert_eq!(pidfd.try_reap().unwrap(), Some(ProcessExit::Code(2)));
    }

    #[test]
    fn a_process_that_is_not_our_child_is_not_reaped() {
        // pid 1 is never our child.
        let pidfd = PidFd::open(1).unwrap();

        assert_eq!(pidfd.try_reap().unwrap(), Some(ProcessExit::NotOurChild));
    }

    #[test]
    fn opening_a_pid_that_does_not_exist_fails() {
        let pid_max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();

        assert!(PidFd::open(pid_max + 1).is_err());
    }
}
