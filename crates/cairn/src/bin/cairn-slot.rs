//! `cairn-slot`: the root side of Cairn's A/B updates on a box. RAUC calls
//! it as its custom boot loader backend and its pre-install handler;
//! `cairn-update.service` runs `install`; `cairn-boot-check.service` runs
//! `gate` at every boot, before `boot-complete.target`. The decisions are
//! in the `cairn-update` crate; this binary reads and writes the ESP, asks
//! systemd, mounts a slot and runs RAUC.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use cairn_update::bootcount::{TRIES, entry_body};
use cairn_update::esp::Esp;
use cairn_update::gate::{self, Boot, Daemon, Verdict};
use cairn_update::state::{self, FORMAT, Outcome, Pending, StateDir, Status};
use cairn_update::{Slot, Version};

/// The root side of Cairn's A/B system updates (see README, "Updates").
#[derive(Parser, Debug)]
#[command(name = "cairn-slot", version, about, long_about = None)]
struct Args {
    /// Where the ESP is mounted, read-write.
    #[arg(long, global = true, default_value = "/boot")]
    esp: PathBuf,
    /// Where the update's state files live.
    #[arg(long, global = true, default_value = state::DEFAULT_DIR)]
    state: PathBuf,
    #[command(subcommand)]
    command: Command_,
}

#[derive(Subcommand, Debug)]
enum Command_ {
    /// RAUC's custom boot loader backend: get-primary, get-state SLOT,
    /// set-primary SLOT, set-state SLOT good|bad.
    Backend {
        /// The RAUC call and its arguments.
        call: Vec<String>,
    },
    /// RAUC's pre-install handler: refuses a bundle that is not newer than
    /// what runs (unless its owner allowed that version) and records the
    /// update as pending.
    PreInstall,
    /// Installs a bundle into the other slot with RAUC and reboots into it.
    Install {
        /// The bundle (a `.raucb` file); it is removed afterwards.
        bundle: PathBuf,
        /// Install, but do not reboot.
        #[arg(long)]
        no_reboot: bool,
    },
    /// The health gate, at every boot: keeps a newly installed slot only
    /// if cairnd becomes ready with its disks; records how an update ended.
    Gate {
        /// How long a new slot has to become healthy, in seconds.
        #[arg(long, default_value_t = gate::DEFAULT_WITHIN.as_secs())]
        within: u64,
    },
    /// Prints the slots and the last update's outcome.
    Status,
}

/// Where the running system says its version.
const RELEASE: &str = "/usr/lib/cairn/release";
/// cairnd's state: the node's key, its owner, the update inbox.
const NODE_STATE: &str = "/var/lib/cairn";
/// The kernel command line's options beyond root and slot, in each slot.
const KERNEL_OPTIONS: &str = "usr/lib/cairn/kernel-options";

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-slot: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let esp = Esp::new(&args.esp);
    let state = StateDir::new(&args.state);
    match &args.command {
        Command_::Backend { call } => backend(&esp, call),
        Command_::PreInstall => pre_install(&state),
        Command_::Install { bundle, no_reboot } => install(&esp, &state, bundle, *no_reboot),
        Command_::Gate { within } => gate(&esp, &state, Duration::from_secs(*within)),
        Command_::Status => {
            let entries = esp.entries()?;
            for slot in Slot::ALL {
                println!("slot {slot}: {:?}", entries.state(slot));
            }
            println!("booted: {:?}", booted_slot()?);
            match state.status()? {
                Some(status) => println!("{}", toml::to_string(&status)?),
                None => println!("no update yet"),
            }
            Ok(())
        }
    }
}

fn slot_arg(name: Option<&String>) -> anyhow::Result<Slot> {
    let name = name.context("a slot's bootname (a or b) is missing")?;
    Slot::from_bootname(name).with_context(|| format!("'{name}' is not a slot (a or b)"))
}

/// RAUC's custom backend calls; see RAUC's documentation of
/// `bootloader-custom-backend`.
fn backend(esp: &Esp, call: &[String]) -> anyhow::Result<()> {
    let entries = esp.entries()?;
    match call.first().map(String::as_str) {
        Some("get-primary") => {
            let primary = entries.primary().context("no Cairn boot entry boots")?;
            println!("{}", primary.bootname());
        }
        Some("get-state") => {
            println!("{}", entries.state(slot_arg(call.get(1))?).rauc_word());
        }
        Some("set-state") => {
            let slot = slot_arg(call.get(1))?;
            let ops = match call.get(2).map(String::as_str) {
                Some("good") => entries.set_good(slot),
                Some("bad") => entries.set_bad(slot),
                other => bail!("set-state takes good or bad, not {other:?}"),
            };
            esp.apply(&ops)?;
        }
        Some("set-primary") => {
            let slot = slot_arg(call.get(1))?;
            // The new slot's own kernel and options, from its root.
            let mounted = MountedSlot::mount(slot)?;
            esp.install_kernel(slot, &mounted.dir)?;
            let version = release_version(&mounted.dir.join(RELEASE.trim_start_matches('/')))?;
            let options =
                std::fs::read_to_string(mounted.dir.join(KERNEL_OPTIONS)).unwrap_or_default();
            drop(mounted);
            let body = entry_body(slot, &version.to_string(), &options);
            esp.apply(&entries.set_primary(slot, TRIES, &body))?;
        }
        other => bail!("unknown backend call {other:?}"),
    }
    Ok(())
}

/// A slot's root, mounted read-only for as long as this lives.
struct MountedSlot {
    dir: PathBuf,
}

impl MountedSlot {
    fn mount(slot: Slot) -> anyhow::Result<MountedSlot> {
        let dir = PathBuf::from(format!("/run/cairn-slot/{}", slot.bootname()));
        std::fs::create_dir_all(&dir)?;
        let device = format!("/dev/disk/by-partlabel/{}", slot.root_label());
        run_command(
            Command::new("mount")
                .args(["-o", "ro"])
                .arg(&device)
                .arg(&dir),
        )?;
        Ok(MountedSlot { dir })
    }
}

impl Drop for MountedSlot {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn run_command(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn release_version(path: &Path) -> anyhow::Result<Version> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the release version in {}", path.display()))?;
    Ok(text.trim().parse()?)
}

fn booted_slot() -> anyhow::Result<Slot> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")?;
    Slot::booted(&cmdline)
        .context("the kernel command line names no rauc.slot: not booted from a Cairn slot")
}

/// What systemd says of cairnd.
fn daemon() -> anyhow::Result<Daemon> {
    let text = run_command(Command::new("systemctl").args([
        "show",
        "cairnd.service",
        "-p",
        "ActiveState",
        "-p",
        "NRestarts",
        "-p",
        "StatusText",
    ]))?;
    let mut daemon = Daemon::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("ActiveState", v)) => daemon.active_state = v.to_owned(),
            Some(("NRestarts", v)) => daemon.restarts = v.parse().unwrap_or(0),
            Some(("StatusText", v)) => daemon.disks = Daemon::disks_from_status(v),
            _ => {}
        }
    }
    Ok(daemon)
}

fn pre_install(state: &StateDir) -> anyhow::Result<()> {
    let bundle = bundle_version()?;
    let running = release_version(Path::new(RELEASE))?;
    let (allowed, not_allowed) = match downgrade_allowed(Path::new(NODE_STATE), &bundle) {
        Ok(allowed) => (allowed, None),
        Err(why) => (None, Some(why)),
    };
    if let Err(refusal) = cairn_update::version::may_install(&running, &bundle, allowed.as_ref()) {
        let reason = match not_allowed {
            Some(why) => format!("{refusal} (the owner's downgrade offer does not count: {why})"),
            None => refusal.to_string(),
        };
        record(
            state,
            bundle.to_string(),
            state::Result::Refused,
            reason.clone(),
        )?;
        bail!("{reason}");
    }
    state.set_pending(&Pending {
        format: FORMAT,
        version: bundle.to_string(),
        from_version: running.to_string(),
        from_slot: booted_slot()?,
        disks_online: daemon()?.disks.map_or(0, |(online, _)| online),
        installed: false,
        failure: None,
    })?;
    Ok(())
}

/// The version the box's owner allowed going back to, if cairnd kept a
/// downgrade offer for `bundle`'s version: checked here against the
/// node's key and owner, since a cairnd taken over could write the file
/// but not sign it.
fn downgrade_allowed(node_state: &Path, bundle: &Version) -> anyhow::Result<Option<Version>> {
    use cairn_node::updates::{DOWNGRADE_FILE, DowngradeOffer};
    let path = node_state.join("updates").join(DOWNGRADE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let offer = DowngradeOffer::parse(&text, &path.display().to_string())?;
    let node = cairn_net::identity::Identity::load_existing(node_state)?
        .context("this box has no node key yet")?
        .id;
    let owner = cairn_node::ownership::NodeControl::open(node_state)?
        .ownership()
        .info()
        .owner;
    offer.allows(&node, owner.as_ref(), &bundle.to_string())?;
    Ok(Some(bundle.clone()))
}

/// The version in the manifest of the bundle RAUC has mounted (verified:
/// its signature checked, every block by dm-verity as it is read). RAUC
/// 1.8 gives system handlers the mount point, not the manifest's fields.
fn bundle_version() -> anyhow::Result<Version> {
    if let Ok(version) = std::env::var("RAUC_MF_VERSION") {
        return Ok(version.parse()?);
    }
    let mount = std::env::var("RAUC_BUNDLE_MOUNT_POINT")
        .or_else(|_| std::env::var("RAUC_UPDATE_SOURCE"))
        .context("RAUC_BUNDLE_MOUNT_POINT is not set: cairn-slot pre-install is RAUC's pre-install handler")?;
    let manifest = Path::new(&mount).join("manifest.raucm");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read the bundle's manifest {}", manifest.display()))?;
    manifest_version(&text)
        .with_context(|| {
            format!(
                "the bundle's manifest {} names no version",
                manifest.display()
            )
        })?
        .parse()
        .context("the bundle's version")
}

/// `version=` in the `[update]` section of a RAUC manifest.
fn manifest_version(manifest: &str) -> Option<String> {
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if section == "update"
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "version"
        {
            return Some(value.trim().to_owned());
        }
    }
    None
}

/// The most telling line of what `rauc install` said: its last error,
/// without the bundle's path, rather than the closing "failed".
fn rauc_reason(said: &str) -> String {
    let lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let telling = lines.iter().rev().find(|l| {
        let lower = l.to_lowercase();
        (lower.contains("error") || lower.contains("fail") || lower.contains("refus"))
            && !lower.starts_with("installing `")
            && !lower.ends_with(": finished")
    });
    let line = telling
        .or(lines.last())
        .copied()
        .unwrap_or("rauc install failed");
    // "installing /path/x.raucb: <what>" → "<what>"
    match line
        .strip_prefix("installing ")
        .and_then(|l| l.split_once(".raucb: "))
    {
        Some((_, what)) => what.to_owned(),
        None => line.to_owned(),
    }
}

/// Writes how an update ended into the status file.
fn record(
    state: &StateDir,
    version: String,
    result: state::Result,
    reason: String,
) -> anyhow::Result<()> {
    let running = release_version(Path::new(RELEASE))?;
    state.set_status(&Status {
        format: FORMAT,
        slot: booted_slot()?,
        version: running.to_string(),
        last: Some(Outcome {
            version,
            result,
            reason,
            at: cairn_host::unix_now(),
        }),
    })?;
    Ok(())
}

fn install(esp: &Esp, state: &StateDir, bundle: &Path, no_reboot: bool) -> anyhow::Result<()> {
    // Out of cairnd's reach while RAUC reads it.
    let taken = state.dir().join("installing.raucb");
    std::fs::create_dir_all(state.dir())
        .with_context(|| format!("cannot create {}", state.dir().display()))?;
    std::fs::rename(bundle, &taken)
        .with_context(|| format!("cannot take the bundle {}", bundle.display()))?;
    let offered = std::fs::read_to_string(bundle.with_file_name("ready.version"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    let _ = std::fs::remove_file(bundle.with_file_name("ready.version"));
    let started = cairn_host::unix_now();
    let installed = Command::new("rauc").arg("install").arg(&taken).output();
    let _ = std::fs::remove_file(&taken);
    let output = installed.context("cannot run rauc")?;
    if !output.status.success() {
        let why = rauc_reason(&format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
        // A bundle the pre-install handler refused is already recorded,
        // with its reason.
        let refused_before = state
            .status()?
            .and_then(|s| s.last)
            .is_some_and(|last| last.result == state::Result::Refused && last.at >= started);
        if !refused_before {
            record(state, offered, state::Result::Refused, why.clone())?;
        }
        state.clear_pending()?;
        bail!("the update was refused, nothing was changed: {why}");
    }
    let mut pending = state.pending()?.context(
        "rauc installed without running cairn-slot pre-install: check /etc/rauc/system.conf",
    )?;
    pending.installed = true;
    state.set_pending(&pending)?;
    let entries = esp.entries()?;
    println!(
        "installed {} into slot {}; slots: A {:?}, B {:?}",
        pending.version,
        pending.from_slot.other(),
        entries.state(Slot::A),
        entries.state(Slot::B)
    );
    if !no_reboot {
        run_command(Command::new("systemctl").arg("reboot"))?;
    }
    Ok(())
}

fn gate(esp: &Esp, state: &StateDir, within: Duration) -> anyhow::Result<()> {
    let Ok(booted) = booted_slot() else {
        println!(
            "not booted from a Cairn system slot (no rauc.slot= on the kernel command line): nothing to check"
        );
        return Ok(());
    };
    let pending = state.pending()?;
    let running = release_version(Path::new(RELEASE))?;
    match gate::boot(pending.as_ref(), booted) {
        Boot::Ordinary => {
            let last = state.status()?.and_then(|s| s.last);
            state.set_status(&Status {
                format: FORMAT,
                slot: booted,
                version: running.to_string(),
                last,
            })?;
            Ok(())
        }
        Boot::RolledBack => {
            let pending = pending.context("a rollback without a pending update")?;
            let why = pending.failure.clone().unwrap_or_else(|| {
                format!(
                    "slot {} did not come up: the boot loader gave up after {TRIES} tries",
                    booted.other()
                )
            });
            eprintln!(
                "cairn-slot: update to {} rolled back: {why}",
                pending.version
            );
            record(state, pending.version, state::Result::RolledBack, why)?;
            state.clear_pending()?;
            Ok(())
        }
        Boot::Interrupted => {
            let pending = pending.context("an interrupted update without a pending one")?;
            record(
                state,
                pending.version,
                state::Result::Interrupted,
                format!(
                    "writing slot {} did not finish (power cut or crash); this box runs {running}, untouched",
                    booted.other()
                ),
            )?;
            state.clear_pending()?;
            Ok(())
        }
        Boot::Trial => {
            let mut pending = pending.context("a trial without a pending update")?;
            let started = Instant::now();
            let failure = loop {
                match gate::judge(&daemon()?, pending.disks_online, started.elapsed(), within) {
                    Verdict::Wait => std::thread::sleep(Duration::from_secs(2)),
                    Verdict::Pass => break None,
                    Verdict::Fail(why) => break Some(why),
                }
            };
            match failure {
                // systemd-bless-boot drops the entry's counter once
                // boot-complete.target, which this unit precedes, is reached.
                None => {
                    record(
                        state,
                        pending.version.clone(),
                        state::Result::Kept,
                        format!(
                            "updated from {} and healthy on slot {booted}",
                            pending.from_version
                        ),
                    )?;
                    state.clear_pending()?;
                    println!("slot {booted} ({}) kept", pending.version);
                    Ok(())
                }
                Some(why) => {
                    eprintln!(
                        "cairn-slot: slot {booted} failed its health gate: {why}; going back to slot {}",
                        booted.other()
                    );
                    pending.failure = Some(why);
                    state.set_pending(&pending)?;
                    esp.apply(&esp.entries()?.set_bad(booted))?;
                    run_command(Command::new("systemctl").arg("reboot"))?;
                    bail!("slot {booted} failed its health gate");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What cairnd writes when its owner offers a bundle with
    /// `--allow-downgrade` is believed only with the owner's signature
    /// over this box's id and that version.
    #[test]
    fn a_downgrade_is_allowed_only_by_the_box_owners_signature() {
        use cairn_node::updates::{DOWNGRADE_FILE, SignedOffer};
        use cairn_proto::signed;
        let state = tempfile::tempdir().unwrap();
        let node = cairn_net::identity::Identity::load_or_create(state.path())
            .unwrap()
            .id;
        let owner_key = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let owner = signed::owner_id(&owner_key);
        let version: Version = "1.5.0".parse().unwrap();
        // No offer kept: nothing allowed, nothing wrong.
        assert_eq!(downgrade_allowed(state.path(), &version).unwrap(), None);
        let inbox = cairn_node::updates::UpdateInbox::new(
            state.path(),
            cairn_node::daemon_config::UpdateSection {
                enabled: true,
                release_file: state.path().join("release"),
                status_dir: state.path().join("status"),
            },
        );
        let bundle = cairn_proto::BundleRef {
            hash: [4; 32],
            size: 1000,
            version: "1.5.0".into(),
        };
        let sign = |key: &ed25519_dalek::SigningKey| SignedOffer {
            bundle: bundle.clone(),
            allow_downgrade: true,
            from: None,
            not_after: 1_900_000_000,
            signature: signed::sign(
                key,
                &signed::update_message(&node, &bundle, true, None, 1_900_000_000),
            ),
        };
        inbox.take_offer(&sign(&owner_key), node).unwrap();
        assert!(state.path().join("updates").join(DOWNGRADE_FILE).exists());
        // An unclaimed box: nobody's signature counts.
        let err = downgrade_allowed(state.path(), &version).unwrap_err();
        assert!(err.to_string().contains("no owner"), "{err}");
        std::fs::write(
            state.path().join("ownership.toml"),
            format!(
                "[owner]\nowner = '{}'\nclient = '{}'\nsince = 0\n",
                owner.to_hex(),
                node.to_hex()
            ),
        )
        .unwrap();
        assert_eq!(
            downgrade_allowed(state.path(), &version).unwrap(),
            Some(version.clone())
        );
        // Another version than the one signed.
        assert!(downgrade_allowed(state.path(), &"1.4.0".parse().unwrap()).is_err());
        // Signed by someone else (as a cairnd taken over would have it).
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        inbox.take_offer(&sign(&stranger), node).unwrap();
        let err = downgrade_allowed(state.path(), &version).unwrap_err();
        assert!(
            err.to_string().contains("not signed by this box's owner"),
            "{err}"
        );
    }

    #[test]
    fn the_version_comes_from_the_manifests_update_section() {
        let manifest = "[update]\ncompatible=cairn-amd64\nversion=2.0.0\n\n[bundle]\nformat=verity\nversion=9\n";
        assert_eq!(manifest_version(manifest).as_deref(), Some("2.0.0"));
        assert_eq!(manifest_version("[bundle]\nversion=1\n"), None);
    }

    #[test]
    fn raucs_reason_is_its_last_error_not_the_closing_line() {
        let said = "installing /var/lib/cairn-update/installing.raucb: started\n\
            installing /var/lib/cairn-update/installing.raucb: Checking and mounting bundle...\n\
            installing /var/lib/cairn-update/installing.raucb: signature verification failed: Verify error:unable to get local issuer certificate\n\
            installing /var/lib/cairn-update/installing.raucb: finished\n\
            Installing `/var/lib/cairn-update/installing.raucb` failed\n";
        assert_eq!(
            rauc_reason(said),
            "signature verification failed: Verify error:unable to get local issuer certificate"
        );
        assert_eq!(rauc_reason(""), "rauc install failed");
    }
}
