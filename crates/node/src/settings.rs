//! The owner's settings that stick: the site, the donated space and the
//! donation policy, changed from `cairn settings` or the page's owner view
//! and kept in `settings.toml` in the state directory (the appliance's
//! writable partition) as an override of `cairnd.toml`, which lives on the
//! read-only root. The merged configuration goes through the same checks
//! as the file itself, so a bad value is refused with the key that holds it
//! before anything is written. Format in `docs/STORE.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use cairn_host::lock;
use cairn_proto::ids::OwnerId;
use cairn_proto::{SettingsChange, SettingsInfo};

use crate::daemon_config::{ConfigError, DaemonConfig};

/// The file's name in the state directory.
pub const FILE: &str = "settings.toml";
/// The format this code writes and reads.
pub const FORMAT: u32 = 1;

/// What `settings.toml` holds: each setting the owner changed; a key in
/// `unset` is set to nothing (no site, no quota, no per-owner share).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// Always [`FORMAT`].
    pub format: u32,
    /// `[swarm] site`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// `[store] quota_gib`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_gib: Option<u64>,
    /// `[donation] owners` (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub donation_owners: Option<Vec<String>>,
    /// `[donation] per_owner_mib`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_owner_mib: Option<u64>,
    /// `[donation] longest_lease_days`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_lease_days: Option<u64>,
    /// Settings set to nothing: `site`, `quota_gib`, `per_owner_mib`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unset: BTreeSet<String>,
}

/// The keys `unset` may name.
const UNSETTABLE: [&str; 3] = ["site", "quota_gib", "per_owner_mib"];

impl SettingsFile {
    /// Parses the file's text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let value_error = |key: &str, message: String| ConfigError::Value {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if file.format != FORMAT {
            return Err(value_error(
                "format",
                format!(
                    "format {} is not one this cairnd reads ({FORMAT}); a newer cairnd wrote it",
                    file.format
                ),
            ));
        }
        if let Some(odd) = file
            .unset
            .iter()
            .find(|key| !UNSETTABLE.contains(&key.as_str()))
        {
            return Err(value_error(
                "unset",
                format!("{odd:?} cannot be unset; only {}", UNSETTABLE.join(", ")),
            ));
        }
        Ok(file)
    }

    /// Lays the settings over `config`.
    pub fn apply(&self, config: &mut DaemonConfig) {
        let unset = |key: &str| self.unset.contains(key);
        if let Some(site) = &self.site {
            config.swarm.site = Some(site.clone());
        } else if unset("site") {
            config.swarm.site = None;
        }
        if let Some(quota) = self.quota_gib {
            config.store.quota_gib = Some(quota);
        } else if unset("quota_gib") {
            config.store.quota_gib = None;
        }
        if let Some(owners) = &self.donation_owners {
            config.donation.owners = owners.clone();
        }
        if let Some(share) = self.per_owner_mib {
            config.donation.per_owner_mib = Some(share);
        } else if unset("per_owner_mib") {
            config.donation.per_owner_mib = None;
        }
        if let Some(days) = self.longest_lease_days {
            config.donation.longest_lease_days = days;
        }
    }

    /// These settings with `change` made.
    pub fn changed(&self, change: &SettingsChange) -> Self {
        let mut next = self.clone();
        next.format = FORMAT;
        if let Some(site) = &change.site {
            next.site = site.clone();
            toggle(&mut next.unset, "site", site.is_none());
        }
        if let Some(quota) = change.quota_gib {
            next.quota_gib = quota;
            toggle(&mut next.unset, "quota_gib", quota.is_none());
        }
        if let Some(owners) = &change.donation_owners {
            next.donation_owners = Some(owners.iter().map(OwnerId::to_hex).collect());
        }
        if let Some(share) = change.per_owner_mib {
            next.per_owner_mib = share;
            toggle(&mut next.unset, "per_owner_mib", share.is_none());
        }
        if let Some(days) = change.longest_lease_days {
            next.longest_lease_days = Some(days);
        }
        next
    }
}

fn toggle(set: &mut BTreeSet<String>, key: &str, on: bool) {
    if on {
        set.insert(key.to_owned());
    } else {
        set.remove(key);
    }
}

/// The settings in force, as the protocol shows them.
pub fn info(config: &DaemonConfig, restarting: bool) -> SettingsInfo {
    SettingsInfo {
        site: config.swarm.site.clone(),
        quota_gib: config.store.quota_gib,
        donation_owners: config
            .donation
            .owners
            .iter()
            .filter_map(|hex| OwnerId::from_hex(hex).ok())
            .collect(),
        per_owner_mib: config.donation.per_owner_mib,
        longest_lease_days: config.donation.longest_lease_days,
        restarting,
    }
}

/// Why a change of settings was not kept.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The settings after the change do not make a valid configuration.
    #[error("{0}; nothing was changed")]
    Invalid(#[from] ConfigError),
    /// The file could not be written.
    #[error(
        "cannot keep the settings in {path}: {source}; nothing was changed (is the state partition full or read-only?)"
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The configuration file with the owner's settings over it, shared by the
/// request handler and the page; a kept change is announced to `cairnd`,
/// which restarts the node's services with it.
#[derive(Debug)]
pub struct Settings {
    /// `cairnd.toml` as read, before the settings.
    base: DaemonConfig,
    path: PathBuf,
    current: Mutex<SettingsFile>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Settings {
    /// Reads `config_path` and the settings kept in its state directory;
    /// returns them and the merged configuration. A broken settings file
    /// is an error naming it (cairnd does not start with settings it
    /// cannot read rather than silently dropping the owner's choices).
    pub fn load(config_path: &Path) -> Result<(Self, DaemonConfig), ConfigError> {
        let base = DaemonConfig::load(config_path)?;
        Self::over(base)
    }

    /// The settings kept in `base`'s state directory, over it.
    pub fn over(base: DaemonConfig) -> Result<(Self, DaemonConfig), ConfigError> {
        let path = base.state_dir.join(FILE);
        let current = match std::fs::read_to_string(&path) {
            Ok(text) => SettingsFile::parse(&text, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SettingsFile::default(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let mut merged = base.clone();
        current.apply(&mut merged);
        merged.check(&path)?;
        let settings = Self {
            base,
            path,
            current: Mutex::new(current),
            changed: tokio::sync::watch::Sender::new(0),
        };
        Ok((settings, merged))
    }

    /// The merged configuration now.
    pub fn config(&self) -> DaemonConfig {
        let mut merged = self.base.clone();
        lock(&self.current).apply(&mut merged);
        merged
    }

    /// Makes `change`, durably, if the result is a valid configuration;
    /// returns the settings in force (with `restarting` when something
    /// changed: the services restart to take it).
    pub fn change(&self, change: &SettingsChange) -> Result<SettingsInfo, SettingsError> {
        let mut current = lock(&self.current);
        let next = current.changed(change);
        let mut merged = self.base.clone();
        next.apply(&mut merged);
        merged.check(&self.path)?;
        if next == *current {
            return Ok(info(&merged, false));
        }
        let text = toml::to_string(&next).map_err(|e| SettingsError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        cairn_host::durable::replace_file(&self.path, text.as_bytes(), 0o600).map_err(
            |source| SettingsError::Write {
                path: self.path.clone(),
                source,
            },
        )?;
        *current = next;
        self.changed.send_modify(|n| *n += 1);
        Ok(info(&merged, true))
    }

    /// Changes each time settings are kept.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(dir: &Path) -> DaemonConfig {
        DaemonConfig::parse(
            &format!(
                "state_dir = {:?}\ndisks = ['/d']\n[swarm]\nsite = 'attic'\n[store]\nquota_gib = 10\n",
                dir.display().to_string()
            ),
            Path::new("/etc/cairn/cairnd.toml"),
        )
        .unwrap()
    }

    #[test]
    fn a_change_is_kept_read_back_over_the_file_and_unset_to_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, merged) = Settings::over(base(dir.path())).unwrap();
        assert_eq!(merged.swarm.site.as_deref(), Some("attic"));
        let owner = OwnerId([9; 32]);
        let kept = settings
            .change(&SettingsChange {
                site: Some(Some("cellar".into())),
                quota_gib: Some(None),
                donation_owners: Some(vec![owner]),
                per_owner_mib: Some(Some(512)),
                ..SettingsChange::default()
            })
            .unwrap();
        assert!(kept.restarting);
        assert_eq!(kept.site.as_deref(), Some("cellar"));
        assert_eq!(kept.quota_gib, None, "unset: all free space");
        // As cairnd reads it at its next start.
        let (_, again) = Settings::over(base(dir.path())).unwrap();
        assert_eq!(again.swarm.site.as_deref(), Some("cellar"));
        assert_eq!(again.store.quota_gib, None);
        assert_eq!(again.donation.owners, vec![owner.to_hex()]);
        assert_eq!(again.donation.per_owner_mib, Some(512));
        // Setting it again clears the unset.
        settings
            .change(&SettingsChange {
                quota_gib: Some(Some(3)),
                ..SettingsChange::default()
            })
            .unwrap();
        let (_, again) = Settings::over(base(dir.path())).unwrap();
        assert_eq!(again.store.quota_gib, Some(3));
        // The same change again changes nothing and restarts nothing.
        let same = settings
            .change(&SettingsChange {
                quota_gib: Some(Some(3)),
                ..SettingsChange::default()
            })
            .unwrap();
        assert!(!same.restarting);
    }

    #[test]
    fn a_bad_value_is_refused_with_its_key_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, _) = Settings::over(base(dir.path())).unwrap();
        let err = settings
            .change(&SettingsChange {
                longest_lease_days: Some(0),
                ..SettingsChange::default()
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("donation.longest_lease_days") && err.contains("settings.toml"),
            "{err}"
        );
        assert!(!dir.path().join(FILE).exists());
    }

    #[test]
    fn a_broken_file_names_its_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "format = 1\nquota = 5\n").unwrap();
        let err = Settings::over(base(dir.path())).unwrap_err().to_string();
        assert!(
            err.contains("settings.toml") && err.contains("line 2") && err.contains("quota"),
            "{err}"
        );
        std::fs::write(dir.path().join(FILE), "format = 2\n").unwrap();
        let err = Settings::over(base(dir.path())).unwrap_err().to_string();
        assert!(err.contains("format 2"), "{err}");
    }
}
