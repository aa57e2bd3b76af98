//! The systemd side of the appliance, checked with systemd's own tools:
//! the service's hardening score, that every directive of every unit is
//! known to systemd, that sysusers.d makes the user and tmpfiles.d the
//! directories the unit and the udev helper rely on, and that the paths
//! agree between the unit, the helper and the example configuration.

use std::os::unix::fs::MetadataExt;

use cairn_system_tests::{repo_root, run_ok};

/// The exposure the issue allows (`systemd-analyze security`, 0 best, 10 worst).
const MAX_EXPOSURE: f64 = 2.5;

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_root().join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

#[test]
fn the_service_is_hardened_to_an_exposure_of_at_most_2_5() {
    let unit = repo_root().join("systemd/cairnd.service");
    let out = run_ok(
        "systemd-analyze",
        &[
            "security",
            "--offline=yes",
            "--no-pager",
            unit.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for cairnd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    eprintln!("systemd-analyze security cairnd.service: {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}:\n{text}"
    );
}

#[test]
fn systemd_knows_every_directive_of_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    // `verify` wants the binary to exist; point it at a real executable.
    let unit = read("systemd/cairnd.service").replace("/usr/bin/cairnd", "/bin/true");
    let path = dir.path().join("cairnd.service");
    std::fs::write(&path, unit).unwrap();
    // The service requires its socket: verified together, as installed.
    let socket = dir.path().join("cairnd.socket");
    std::fs::write(&socket, read("systemd/cairnd.socket")).unwrap();
    let out = run_ok(
        "systemd-analyze",
        &[
            "verify",
            "--man=no",
            path.to_str().unwrap(),
            socket.to_str().unwrap(),
        ],
    );
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(complaints.trim().is_empty(), "{complaints}");
}

#[test]
fn systemd_knows_every_directive_of_the_update_units() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for name in [
        "cairn-boot-check.service",
        "cairn-update.path",
        "cairn-update.service",
    ] {
        let unit = read(&format!("systemd/{name}")).replace("/usr/bin/cairn-slot", "/bin/true");
        let path = dir.path().join(name);
        std::fs::write(&path, unit).unwrap();
        paths.push(path.to_str().unwrap().to_owned());
    }
    let mut args = vec!["verify", "--man=no"];
    args.extend(paths.iter().map(String::as_str));
    let out = run_ok("systemd-analyze", &args);
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(complaints.trim().is_empty(), "{complaints}");
    // The gate guards boot-complete.target, which systemd-bless-boot waits for.
    let gate = read("systemd/cairn-boot-check.service");
    assert!(
        gate.contains("Before=boot-complete.target")
            && gate.contains("RequiredBy=boot-complete.target")
    );
}

#[test]
fn sysusers_and_tmpfiles_make_the_user_and_the_directories() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let root_arg = format!("--root={}", root.path().display());
    let sysusers = repo_root().join("systemd/sysusers.d/cairn.conf");
    run_ok("systemd-sysusers", &[&root_arg, sysusers.to_str().unwrap()]);
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let cairn = passwd
        .lines()
        .find(|l| l.starts_with("cairn:"))
        .unwrap_or_else(|| panic!("no cairn user:\n{passwd}"));
    let fields: Vec<&str> = cairn.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid != 0 && uid < 1000, "a system user: {cairn}");
    assert_eq!(fields[5], "/var/lib/cairn");
    assert_eq!(fields[6], "/usr/sbin/nologin", "no login: {cairn}");

    let tmpfiles = repo_root().join("systemd/tmpfiles.d/cairn.conf");
    run_ok(
        "systemd-tmpfiles",
        &[&root_arg, "--create", tmpfiles.to_str().unwrap()],
    );
    let meta = |p: &str| std::fs::metadata(root.path().join(p)).unwrap();
    let state = meta("var/lib/cairn");
    assert_eq!((state.uid(), state.mode() & 0o7777), (uid, 0o700));
    let disks = meta("srv/cairn/disks");
    assert_eq!((disks.uid(), disks.mode() & 0o7777), (0, 0o755));
    // cairn-slot's state: root's, readable by cairnd (it shows the status).
    let update = meta("var/lib/cairn-update");
    assert_eq!((update.uid(), update.mode() & 0o7777), (0, 0o755));
}

#[test]
fn the_unit_the_helper_and_the_example_config_agree_on_paths() {
    let unit = read("systemd/cairnd.service");
    let directive = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        directive("ExecStart="),
        vec!["/usr/bin/cairnd --config /etc/cairn/cairnd.toml"]
    );
    assert_eq!(directive("StateDirectory="), vec!["cairn"]);
    assert!(directive("ReadWritePaths=").contains(&"/srv/cairn/disks".to_owned()));
    assert_eq!(directive("Type="), vec!["notify"]);
    // Resource ceilings: one member's requests cannot take the whole box.
    for limit in ["MemoryMax=", "MemoryHigh=", "TasksMax=", "IOWeight="] {
        assert_eq!(directive(limit).len(), 1, "{limit} missing");
    }
    assert!(directive("WatchdogSec=").len() == 1);

    // The helper mounts under the directory the unit may write.
    let helper = read("systemd/cairn-adopt-disk");
    assert!(helper.contains("where=\"/srv/cairn/disks/$uuid\""));
    assert!(helper.contains("systemd-mount"));
    run_ok(
        "sh",
        &[
            "-n",
            repo_root()
                .join("systemd/cairn-adopt-disk")
                .to_str()
                .unwrap(),
        ],
    );
    // udev hands off; it never mounts by itself.
    let rules = read("systemd/udev/99-cairn.rules");
    let run_lines: Vec<&str> = rules
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("cairn-adopt-disk"))
        .collect();
    assert_eq!(run_lines.len(), 1, "{rules}");
    assert!(run_lines[0].contains("systemd-run --no-block"));
    assert!(
        !rules
            .lines()
            .any(|l| !l.starts_with('#') && l.contains(" mount "))
    );

    // The example configuration keeps state where the unit's StateDirectory
    // is, and its disks where the helper mounts them.
    let example = read("systemd/cairnd.toml");
    for line in example
        .lines()
        .filter(|l| l.contains("/srv/") || l.contains("/var/lib/"))
    {
        assert!(
            line.contains("/srv/cairn/disks") || line.contains("/var/lib/cairn"),
            "{line}"
        );
    }
}
