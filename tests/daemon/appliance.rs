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
