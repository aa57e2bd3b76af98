//! Release versions, and which bundles a box takes.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A release version: one to four dot-separated decimal numbers (`0.2.0`,
/// `2026.12.1`), compared number by number (a missing one is 0).
#[derive(Debug, Clone, Eq)]
pub struct Version(Vec<u32>);

/// Why a version could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a release version: write one to four numbers with dots, like 0.2.0")]
pub struct BadVersion(pub String);

impl FromStr for Version {
    type Err = BadVersion;
    fn from_str(text: &str) -> Result<Version, BadVersion> {
        let bad = || BadVersion(text.chars().take(64).collect());
        let parts: Vec<u32> = text
            .trim()
            .split('.')
            .map(|p| {
                if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    Err(bad())
                } else {
                    p.parse().map_err(|_| bad())
                }
            })
            .collect::<Result<_, _>>()?;
        if parts.len() > 4 {
            return Err(bad());
        }
        Ok(Version(parts))
    }
}

impl Version {
    fn part(&self, i: usize) -> u32 {
        self.0.get(i).copied().unwrap_or(0)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (0..4)
            .map(|i| self.part(i).cmp(&other.part(i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// Why a box refuses a bundle before writing anything.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// The bundle is the version already running, or older, and the owner
    /// did not allow that version.
    #[error(
        "bundle {bundle} is not newer than {running}, which this box runs; to go back to {bundle}, its owner sends it with `cairn update --allow-downgrade NODE BUNDLE`"
    )]
    NotNewer {
        /// The bundle's version.
        bundle: Version,
        /// The running system's version.
        running: Version,
    },
}

/// Whether a box running `running` installs a bundle of version `bundle`:
/// only a newer one, or exactly the version its owner allowed.
pub fn may_install(
    running: &Version,
    bundle: &Version,
    allowed: Option<&Version>,
) -> Result<(), Refusal> {
    if bundle > running || allowed == Some(bundle) {
        Ok(())
    } else {
        Err(Refusal::NotNewer {
            bundle: bundle.clone(),
            running: running.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    #[test]
    fn versions_compare_number_by_number() {
        assert!(v("0.10.0") > v("0.9.9"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert!(v("2026.12.1") > v("2026.2.30"));
        for bad in ["", "1..2", "1.2.3.4.5", "v1", "1.-2", "1.2a", "9999999999"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        assert_eq!(v("0.2.0").to_string(), "0.2.0");
    }

    #[test]
    fn only_newer_bundles_or_the_one_the_owner_allowed() {
        assert_eq!(may_install(&v("1.0"), &v("2.0"), None), Ok(()));
        assert!(matches!(
            may_install(&v("2.0"), &v("1.0"), None),
            Err(Refusal::NotNewer { .. })
        ));
        assert!(may_install(&v("2.0"), &v("2.0"), None).is_err());
        assert_eq!(may_install(&v("2.0"), &v("1.0"), Some(&v("1.0"))), Ok(()));
        assert!(may_install(&v("2.0"), &v("1.0"), Some(&v("1.5"))).is_err());
        let refused = may_install(&v("2.0"), &v("1.0"), None)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("not newer than 2.0"), "{refused}");
    }
}
