//! The appliance as a BIG-IP runs it: the install on a simulated BIG-IP host (read-only
//! `/usr`, `/VERSION`, systemd 219's unit rules), its boot hook across a software upgrade,
//! N+1 beside N and back, the HA peer, uninstall; and the boot order, with a TCP address
//! that appears only after the daemon started. Both need root (mount and network
//! namespaces), as CI has.

use std::process::Command;

use crate::common::*;

fn assert_root(what: &str) {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "{what} needs root (mount and network namespaces): run the tests as root, as CI does"
    );
}

/// `tests/appliance/bigip-host.sh`: install, check as the service user, the boot hook twice,
/// a simulated upgrade (a fresh volume keeping /config and /shared), N+1, rollback,
/// sync-peer, uninstall --purge against the tree it started from.
#[test]
fn install_upgrade_rollback_and_uninstall_on_a_simulated_bigip() {
    assert_root("the simulated BIG-IP");
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(repo_file("tests/appliance/bigip-host.sh"))
        .env("WORK", work.path())
        .env("OTP_SIDECAR_BIN", env!("CARGO_BIN_EXE_otp-sidecar"))
        .output()
        .expect("run tests/appliance/bigip-host.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the simulated BIG-IP:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ok: uninstall --purge"),
        "the simulation stopped early:\n{stdout}"
    );
}

/// A network namespace of the test's own (only its loopback device), removed on drop.
struct NetNs(String);

impl NetNs {
    fn new(name: &str) -> NetNs {
        let ns = NetNs(format!("{name}-{}", std::process::id()));
        ns.ip(&["netns", "add", &ns.0]);
        ns.run("ip", &["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let status = Command::new("ip").args(args).status().expect("ip");
        assert!(status.success(), "ip {args:?}");
    }

    /// Runs `program` inside the namespace and says whether it succeeded.
    fn run(&self, program: &str, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("ip netns exec")
            .success()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Polls `ok` every 100 ms for up to `secs` seconds (a bound on waiting, not a speed claim).
fn eventually(secs: u64, mut ok: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// The sideband's address belongs to BIG-IP's `tmm` interface, which comes up with TMM, maybe
/// after the daemon: the Unix socket serves from the start, and the TCP address is bound once
/// it exists (here: added to the namespace's loopback after the daemon is up).
#[test]
fn a_tcp_address_that_appears_later_is_bound_while_the_unix_socket_serves() {
    assert_root("the network namespace");
    let ns = NetNs::new("otp-later");
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("otp.sock");
    let unix = unix.to_str().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let bin = env!("CARGO_BIN_EXE_otp-sidecar");
    let addr = "10.77.0.1:7777";
    let mut daemon = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            bin,
            "serve",
            "--dry-run",
            "--unix",
            unix,
        ])
        .args(["--tcp", addr, "--allow-unauthenticated-tcp"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the daemon in the namespace");
    let ping_unix = || {
        Command::new(bin)
            .args(["ping", "--unix", unix, "--timeout-ms", "2000"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let ping_tcp = || ns.run(bin, &["ping", "--tcp", addr, "--timeout-ms", "2000"]);

    assert!(
        eventually(20, ping_unix),
        "the Unix socket never answered while {addr} was missing"
    );
    assert!(!ping_tcp(), "{addr} answered before it existed");
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon exited over a TCP address that is not there yet"
    );
    ns.run("ip", &["addr", "add", "10.77.0.1/32", "dev", "lo"]);
    let bound = eventually(30, ping_tcp);
    let unix_still = ping_unix();
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(bound, "{addr} was never bound after it appeared:\n{log}");
    assert!(unix_still, "the Unix socket stopped answering:\n{log}");
    assert!(
        log.contains("cannot listen on TCP 10.77.0.1:7777 yet")
            && log.contains("now listening on TCP"),
        "{log}"
    );
}

/// `unix_group`: the socket and the folder the daemon owns get the group (the ILX Node user's),
/// so its members may connect; a group the host does not know stops `check` and `serve`.
#[test]
fn unix_group_hands_the_socket_and_its_folder_to_the_group() {
    assert_root("handing a socket to another group");
    use std::os::unix::fs::MetadataExt;
    let bin = env!("CARGO_BIN_EXE_otp-sidecar");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("run");
    std::fs::create_dir(&folder).unwrap();
    let unix = folder.join("otp.sock");
    let unix = unix.to_str().unwrap();
    // `daemon` (gid 1 on Debian and CentOS alike), by name; the check reports it.
    let group = std::fs::read_to_string("/etc/group").unwrap();
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("daemon:x:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .expect("a daemon group in /etc/group");
    let check = Command::new(bin)
        .args([
            "check",
            "--dry-run",
            "--unix",
            unix,
            "--unix-group",
            "daemon",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains(&format!("unix group:   daemon (gid {gid})")),
        "{report}"
    );

    let mut daemon = Command::new(bin)
        .args(["serve", "--dry-run", "--unix", unix])
        .env("OTP_SIDECAR_UNIX_GROUP", "daemon")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = eventually(20, || {
        Command::new(bin)
            .args(["ping", "--unix", unix, "--timeout-ms", "2000"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let socket_gid = std::fs::metadata(unix).map(|m| m.gid());
    let folder_gid = std::fs::metadata(&folder).map(|m| m.gid());
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    assert!(up, "the daemon with --unix-group never answered");
    assert_eq!(socket_gid.unwrap(), gid, "the socket's group");
    assert_eq!(folder_gid.unwrap(), gid, "the socket's folder's group");

    let unknown = Command::new(bin)
        .args([
            "check",
            "--dry-run",
            "--unix",
            unix,
            "--unix-group",
            "no-such-group-7",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success());
    assert!(
        said.contains("unix_group no-such-group-7: no such group"),
        "{said}"
    );
}
