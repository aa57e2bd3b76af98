//! The Pi's A/B switching against a fake firmware: a real FAT file system
//! (an image made by mkfs.vfat) holds `autoboot.txt`, written through
//! [`PiBoot`]; the "firmware" reads it from the raw FAT image as the Pi's
//! does (mtools: this machine's kernel has no vfat to mount it), checks the
//! file system (fsck.vfat), picks the boot partition for a normal or a
//! tryboot reboot, and reports it in a fake
//! `/proc/device-tree/chosen/bootloader`. What a real Pi 4 and Pi 5 must
//! still confirm is listed in README, "Updates".
//!
//! Needs dosfstools and mtools (scripts/setup installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_update::pi::{BootFiles, PiBoot};
use cairn_update::tryboot::{Autoboot, next_boot};
use cairn_update::{Slot, SlotState, tryboot};

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/setup installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A FAT image's root directory, through mtools.
struct FatImage {
    image: PathBuf,
    scratch: PathBuf,
}

impl BootFiles for FatImage {
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        let out = Command::new("mtype")
            .args(["-i", self.image.to_str().unwrap(), &format!("::{name}")])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    }

    /// A new file, then renamed over the old (as on the mounted partition).
    fn replace(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::write(&self.scratch, bytes)?;
        let image = self.image.to_str().unwrap();
        run(
            "mcopy",
            &[
                "-o",
                "-i",
                image,
                self.scratch.to_str().unwrap(),
                "::new.tmp",
            ],
        );
        if self.read(name).is_ok() {
            run("mdel", &["-i", image, &format!("::{name}")]);
        }
        run("mren", &["-i", image, "::new.tmp", &format!("::{name}")]);
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("{}::{name}", self.image.display())
    }
}

/// A reboot: the firmware reads `autoboot.txt` from the FAT image, picks a
/// partition, and says what it did in the device tree.
fn reboot(image: &Path, device_tree: &Path, tryboot_flag: bool) {
    let fsck = Command::new("fsck.vfat")
        .args(["-n", image.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "the FAT file system is damaged: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let text =
        String::from_utf8(run("mtype", &["-i", image.to_str().unwrap(), "::autoboot.txt"]).stdout)
            .unwrap();
    let firmware = next_boot(Autoboot::parse(&text).unwrap(), tryboot_flag);
    std::fs::write(
        device_tree.join("tryboot"),
        u32::from(firmware.tryboot).to_be_bytes(),
    )
    .unwrap();
    std::fs::write(
        device_tree.join("partition"),
        firmware.partition.to_be_bytes(),
    )
    .unwrap();
}

#[test]
fn a_slot_is_tried_once_kept_only_by_the_gate_and_a_failed_one_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("autoboot.vfat");
    let device_tree = dir.path().join("bootloader");
    std::fs::create_dir(&device_tree).unwrap();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    run("mkfs.vfat", &["-n", "AUTOBOOT", image.to_str().unwrap()]);
    let pi = PiBoot {
        files: FatImage {
            image: image.clone(),
            scratch: dir.path().join("scratch"),
        },
        firmware_dir: device_tree.clone(),
    };

    // As the image is written: slot A, both ways.
    pi.set_autoboot(Autoboot {
        primary: Slot::A,
        tryboot: Slot::A,
    })
    .unwrap();
    reboot(&image, &device_tree, false);
    assert_eq!(pi.firmware().unwrap().booted(), Some(Slot::A));

    // An update written into B is tried by a tryboot reboot...
    pi.set_autoboot(pi.autoboot().unwrap().try_slot(Slot::B))
        .unwrap();
    reboot(&image, &device_tree, true);
    let firmware = pi.firmware().unwrap();
    assert_eq!(firmware.booted(), Some(Slot::B));
    assert!(firmware.tryboot);
    let autoboot = pi.autoboot().unwrap();
    assert_eq!(
        tryboot::state(autoboot, firmware, Slot::B),
        SlotState::Trial { left: 0 }
    );
    // ...fails its gate (or hangs, and the watchdog resets it): any reboot
    // without the flag is slot A again, and the dropped trial is not tried
    // again even by a tryboot reboot.
    pi.set_autoboot(autoboot.drop_trial(Slot::B)).unwrap();
    reboot(&image, &device_tree, false);
    assert_eq!(pi.firmware().unwrap().booted(), Some(Slot::A));
    reboot(&image, &device_tree, true);
    assert_eq!(pi.firmware().unwrap().booted(), Some(Slot::A));

    // Tried again, it passes its gate and is kept: every boot is B.
    pi.set_autoboot(pi.autoboot().unwrap().try_slot(Slot::B))
        .unwrap();
    reboot(&image, &device_tree, true);
    let booted = pi.firmware().unwrap().booted().unwrap();
    pi.set_autoboot(pi.autoboot().unwrap().keep(booted))
        .unwrap();
    reboot(&image, &device_tree, false);
    assert_eq!(pi.firmware().unwrap().booted(), Some(Slot::B));
    assert_eq!(
        tryboot::state(pi.autoboot().unwrap(), pi.firmware().unwrap(), Slot::A),
        SlotState::Bad
    );
}
