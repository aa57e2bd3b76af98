//! The node's health: from what the daemon knows (disks, space, repair) and
//! what the board measures (temperature, power), decide the node's state,
//! the reasons to tell a person, and how much background work (scrub,
//! repair) the box may do. Plain code with hysteresis, so a temperature
//! hovering at a threshold does not make the LED and the work flap.

/// What the daemon and the sensors report, sampled at one time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthInputs {
    /// The daemon is still starting (disks opening, not yet serving).
    pub starting: bool,
    /// A fatal condition that stops serving, in words.
    pub fatal: Option<String>,
    /// Data disks configured.
    pub disks: usize,
    /// Data disks in service.
    pub disks_online: usize,
    /// Data disks taken out of service by I/O errors.
    pub disks_failed: usize,
    /// Bytes still free for shards, over all disks in service.
    pub free_bytes: u64,
    /// Bytes the disks in service may use for shards.
    pub capacity_bytes: u64,
    /// The hottest temperature measured, millidegrees Celsius.
    pub temperature_mc: Option<i32>,
    /// The supply is too weak now.
    pub undervoltage: bool,
    /// Repair or rebalance work is running.
    pub repairing: bool,
}

/// The node's state, as the LED shows it and peers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Starting up.
    Booting,
    /// Serving, nothing wrong.
    Healthy,
    /// Serving with a problem.
    Degraded,
    /// Serving and rebuilding or moving data.
    Repairing,
    /// Not serving.
    Error,
}

impl NodeState {
    /// One word, for logs, status lines and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Booting => "booting",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Repairing => "repairing",
            Self::Error => "error",
        }
    }
}

/// How much background work the box may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Background {
    /// Stop scrub and repair until the box cools down.
    Paused,
    /// Half rate.
    Reduced,
    /// As configured.
    Full,
}

impl Background {
    /// The share of the configured rate, in percent.
    pub fn percent(self) -> u32 {
        match self {
            Self::Paused => 0,
            Self::Reduced => 50,
            Self::Full => 100,
        }
    }
}

/// The decision for one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The state.
    pub state: NodeState,
    /// Why it is not healthy, each in words a person can act on.
    pub reasons: Vec<String>,
    /// Background work allowed.
    pub background: Background,
}

/// Thresholds. Defaults suit a Raspberry Pi, whose firmware throttles at 80 °C
/// (soft limit 60 °C on some models is left to the firmware).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// From here background work runs at half rate, millidegrees.
    pub warm_mc: i32,
    /// From here background work stops and the node is degraded.
    pub hot_mc: i32,
    /// A threshold is left only this far below it (hysteresis).
    pub cooling_margin_mc: i32,
    /// Free space under this share of capacity (percent) is low.
    pub low_space_percent: u64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            warm_mc: 70_000,
            hot_mc: 80_000,
            cooling_margin_mc: 5_000,
            low_space_percent: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Heat {
    Normal,
    Warm,
    Hot,
}

/// Applies a [`HealthPolicy`] sample after sample, remembering how hot it was.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    policy: HealthPolicy,
    heat: Heat,
}

impl HealthMonitor {
    /// A monitor that has seen nothing yet.
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            heat: Heat::Normal,
        }
    }

    /// Decides the health for this sample.
    pub fn assess(&mut self, inputs: &HealthInputs) -> Health {
        self.heat = self.next_heat(inputs.temperature_mc);
        let mut reasons = Vec::new();
        let mut background = Background::Full;
        if let Some(fatal) = &inputs.fatal {
            reasons.push(fatal.clone());
        }
        if inputs.disks > 0 && inputs.disks_online == 0 {
            reasons.push(
                "no data disk is in service; check that the disks are attached and mounted".into(),
            );
        }
        let serving_impossible = !reasons.is_empty();
        if inputs.disks_failed > 0 {
            reasons.push(format!(
                "{} of {} data disks failed; replace them (their shards are being rebuilt elsewhere)",
                inputs.disks_failed, inputs.disks
            ));
        }
        if inputs.disks_online > 0
            && inputs.free_bytes.saturating_mul(100)
                < inputs
                    .capacity_bytes
                    .saturating_mul(self.policy.low_space_percent)
        {
            reasons.push(format!(
                "low space: {} MiB free of {} MiB; add a disk or lower what others store here",
                inputs.free_bytes >> 20,
                inputs.capacity_bytes >> 20
            ));
        }
        match self.heat {
            Heat::Hot => {
                reasons.push(format!(
                    "too hot ({}); background work paused; give the box air or a fan",
                    celsius(inputs.temperature_mc)
                ));
                background = Background::Paused;
            }
            Heat::Warm => background = Background::Reduced,
            Heat::Normal => {}
        }
        if inputs.undervoltage {
            reasons.push(
                "power supply too weak (undervoltage); use the board's recommended supply".into(),
            );
            background = background.min(Background::Reduced);
        }
        let state = if serving_impossible {
            NodeState::Error
        } else if inputs.starting {
            NodeState::Booting
        } else if !reasons.is_empty() {
            NodeState::Degraded
        } else if inputs.repairing {
            NodeState::Repairing
        } else {
            NodeState::Healthy
        };
        Health {
            state,
            reasons,
            background,
        }
    }

    fn next_heat(&self, temperature: Option<i32>) -> Heat {
        // No reading keeps the last judgement rather than declaring it cool.
        let Some(t) = temperature else {
            return self.heat;
        };
        let p = &self.policy;
        let rising = if t >= p.hot_mc {
            Heat::Hot
        } else if t >= p.warm_mc {
            Heat::Warm
        } else {
            Heat::Normal
        };
        if rising >= self.heat {
            return rising;
        }
        // Cooling: step down only once well below the threshold left.
        let margin = p.cooling_margin_mc;
        match self.heat {
            Heat::Hot if t >= p.hot_mc - margin => Heat::Hot,
            Heat::Hot | Heat::Warm if t >= p.warm_mc - margin => Heat::Warm,
            _ => Heat::Normal,
        }
    }
}

fn celsius(mc: Option<i32>) -> String {
    mc.map_or_else(
        || "temperature unknown".into(),
        |mc| format!("{:.1} °C", f64::from(mc) / 1000.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving() -> HealthInputs {
        HealthInputs {
            disks: 2,
            disks_online: 2,
            free_bytes: 500 << 30,
            capacity_bytes: 1000 << 30,
            temperature_mc: Some(45_000),
            ..HealthInputs::default()
        }
    }

    #[test]
    fn a_quiet_box_is_healthy_and_works_at_full_rate() {
        let health = HealthMonitor::new(HealthPolicy::default()).assess(&serving());
        assert_eq!(health.state, NodeState::Healthy);
        assert!(health.reasons.is_empty());
        assert_eq!(health.background, Background::Full);
    }

    #[test]
    fn each_problem_degrades_with_its_reason() {
        let mut monitor = HealthMonitor::new(HealthPolicy::default());
        let cases: Vec<(HealthInputs, &str)> = vec![
            (
                HealthInputs {
                    disks_online: 1,
                    disks_failed: 1,
                    ..serving()
                },
                "1 of 2 data disks failed",
            ),
            (
                HealthInputs {
                    free_bytes: 10 << 30,
                    ..serving()
                },
                "low space",
            ),
            (
                HealthInputs {
                    undervoltage: true,
                    ..serving()
                },
                "undervoltage",
            ),
        ];
        for (inputs, reason) in cases {
            let health = monitor.assess(&inputs);
            assert_eq!(health.state, NodeState::Degraded, "{reason}");
            assert!(
                health.reasons.iter().any(|r| r.contains(reason)),
                "{health:?}"
            );
        }
    }

    #[test]
    fn no_disk_is_an_error_and_outranks_everything() {
        let health = HealthMonitor::new(HealthPolicy::default()).assess(&HealthInputs {
            disks_online: 0,
            disks_failed: 2,
            starting: true,
            repairing: true,
            ..serving()
        });
        assert_eq!(health.state, NodeState::Error);
        assert!(health.reasons[0].contains("no data disk"));
    }

    #[test]
    fn booting_then_repairing_then_healthy() {
        let mut monitor = HealthMonitor::new(HealthPolicy::default());
        let starting = HealthInputs {
            starting: true,
            ..serving()
        };
        assert_eq!(monitor.assess(&starting).state, NodeState::Booting);
        let repairing = HealthInputs {
            repairing: true,
            ..serving()
        };
        assert_eq!(monitor.assess(&repairing).state, NodeState::Repairing);
        assert_eq!(monitor.assess(&serving()).state, NodeState::Healthy);
    }

    #[test]
    fn heat_throttles_background_work_first_with_hysteresis() {
        let mut monitor = HealthMonitor::new(HealthPolicy::default());
        let at = |monitor: &mut HealthMonitor, c: i32| {
            monitor.assess(&HealthInputs {
                temperature_mc: Some(c * 1000),
                ..serving()
            })
        };
        let warm = at(&mut monitor, 72);
        assert_eq!(
            (warm.state, warm.background),
            (NodeState::Healthy, Background::Reduced)
        );
        let hot = at(&mut monitor, 81);
        assert_eq!(
            (hot.state, hot.background),
            (NodeState::Degraded, Background::Paused)
        );
        assert!(hot.reasons[0].contains("81.0 °C"), "{hot:?}");
        // Hovering just under the threshold stays hot; well below steps down.
        assert_eq!(at(&mut monitor, 78).background, Background::Paused);
        assert_eq!(at(&mut monitor, 74).background, Background::Reduced);
        assert_eq!(at(&mut monitor, 66).background, Background::Reduced);
        assert_eq!(at(&mut monitor, 64).background, Background::Full);
        // A missing reading keeps the last judgement.
        at(&mut monitor, 85);
        let unknown = monitor.assess(&HealthInputs {
            temperature_mc: None,
            ..serving()
        });
        assert_eq!(unknown.background, Background::Paused);
    }
}
