//! Real GPIO lines through the kernel's `gpio-sim`: the LED driver must set
//! the line the kernel sees, and the button must read the level the kernel
//! is told to pull. Needs root and a kernel with `gpio-sim` loaded
//! (configfs at /sys/kernel/config/gpio-sim); without them it says so and
//! passes without checking anything, and the VM test is where it runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_board::board::{Board, ButtonWiring, Chip, LedWiring, Wiring};
use cairn_board::health::NodeState;
use cairn_board::panel::{FrontPanel, PanelAction, PanelTiming};

const CONFIGFS: &str = "/sys/kernel/config/gpio-sim";
const LABEL: &str = "cairn-gpio-sim";
const LED_LINE: u32 = 1;
const BUTTON_LINE: u32 = 3;

/// A simulated chip, removed again even if the test fails.
struct SimChip {
    device: PathBuf,
    bank: PathBuf,
    /// `/sys/devices/platform/<device>/<chip>`, where each line's `value`
    /// (what the consumer drives) and `pull` (what it reads) live.
    lines: PathBuf,
}

impl SimChip {
    fn create() -> std::io::Result<Self> {
        let device = Path::new(CONFIGFS).join(format!("cairn-test-{}", std::process::id()));
        let bank = device.join("bank0");
        fs::create_dir(&device)?;
        let mut chip = Self {
            device: device.clone(),
            bank: bank.clone(),
            lines: PathBuf::new(),
        };
        fs::create_dir(&bank)?;
        fs::write(bank.join("num_lines"), "8")?;
        fs::write(bank.join("label"), LABEL)?;
        fs::write(device.join("live"), "1")?;
        let device_name = fs::read_to_string(device.join("dev_name"))?;
        let chip_name = fs::read_to_string(bank.join("chip_name"))?;
        chip.lines = Path::new("/sys/devices/platform")
            .join(device_name.trim())
            .join(chip_name.trim());
        Ok(chip)
    }

    fn line(&self, offset: u32, attribute: &str) -> PathBuf {
        self.lines.join(format!("sim_gpio{offset}")).join(attribute)
    }

    fn driven(&self, offset: u32) -> String {
        fs::read_to_string(self.line(offset, "value"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn pull(&self, offset: u32, up: bool) {
        let pull = if up { "pull-up" } else { "pull-down" };
        fs::write(self.line(offset, "pull"), pull).unwrap();
    }
}

impl Drop for SimChip {
    fn drop(&mut self) {
        let _ = fs::write(self.device.join("live"), "0");
        let _ = fs::remove_dir(&self.bank);
        let _ = fs::remove_dir(&self.device);
    }
}

#[test]
fn the_led_and_the_button_work_on_real_gpio_lines() {
    if !Path::new(CONFIGFS).is_dir() {
        eprintln!(
            "skipped: this kernel has no gpio-sim ({CONFIGFS} is missing; `modprobe gpio-sim` as root where the module exists)"
        );
        return;
    }
    let chip = SimChip::create().expect("creating a gpio-sim chip (needs root)");
    // The button is wired to ground with a pull-up: released reads high.
    chip.pull(BUTTON_LINE, true);
    let mut board = Board::open_wiring(&Wiring {
        board: "gpio-sim".into(),
        led: Some(LedWiring::Gpio {
            chip: Chip::Label(LABEL.into()),
            line: LED_LINE,
            active_low: false,
        }),
        button: Some(ButtonWiring::Gpio {
            chip: Chip::Label(LABEL.into()),
            line: BUTTON_LINE,
            active_low: true,
        }),
        ..Wiring::default()
    });
    assert!(board.has_button(), "the button line was not opened");

    board.set_led(100);
    assert_eq!(chip.driven(LED_LINE), "1");
    board.set_led(0);
    assert_eq!(chip.driven(LED_LINE), "0");

    // A whole gesture through the real line, in simulated time: hold 6 s
    // opens the pairing window, and the LED line follows the pattern.
    let mut panel = FrontPanel::new(PanelTiming::default(), Duration::ZERO);
    let mut actions = Vec::new();
    let mut led_levels = std::collections::BTreeSet::new();
    for step in 0..800u64 {
        let now = Duration::from_millis(step * 10);
        chip.pull(BUTTON_LINE, !(100..6_100).contains(&(step * 10)));
        let pressed = board.button_pressed();
        actions.extend(panel.step(now, pressed, NodeState::Healthy));
        board.set_led(panel.led_level(now));
        led_levels.insert(chip.driven(LED_LINE));
    }
    assert_eq!(
        actions,
        vec![PanelAction::PairingOpened(Duration::from_secs(300))]
    );
    assert!(panel.pairing_open(Duration::from_secs(8)));
    assert_eq!(led_levels.len(), 2, "the LED line blinked: {led_levels:?}");
}
