//! The node's data disks as they come and go: which there are at start,
//! and a task that takes disks mounted in `disks_dir` into service and out
//! of it while the node runs, by the decisions of [`crate::disk_watch`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::fs::RealMount;
use cairn_store::{DiskState, ShardStore};
use tracing::{error, info, warn};

use crate::daemon_config::DaemonConfig;
use crate::disk_watch::{self, DiskChange, DiskWatch};

/// The data disks there are now: those named in `disks`, and the file
/// systems mounted in `disks_dir` (whose devices are still there).
pub fn disks_now(config: &DaemonConfig) -> Vec<PathBuf> {
    let mut disks = config.disks.clone();
    if let Some(dir) = &config.disks_dir {
        match disk_watch::scan(dir) {
            Ok(mounted) => {
                for (path, device) in mounted {
                    if !disks.contains(&path) && disk_watch::block_device_present(device) {
                        disks.push(path);
                    }
                }
            }
            Err(e) => warn!(dir = %dir.display(), "cannot look for data disks in disks_dir: {e}"),
        }
    }
    disks
}

/// How often `disks_dir` is looked at: a disk plugged in is serving, and one
/// pulled out is out of service, within this.
pub const WATCH_PERIOD: Duration = Duration::from_secs(3);

/// Takes disks mounted in `dir` into service and out of it as they come and go.
pub async fn watch(dir: PathBuf, store: Arc<ShardStore>) {
    struct Watching {
        watch: DiskWatch,
        retry: Vec<PathBuf>,
        told: std::collections::HashMap<PathBuf, String>,
    }
    impl Watching {
        /// Remembers what was said about `path`; true when it differs from last time,
        /// so a disk that stays refused is not logged every few seconds.
        fn is_news(&mut self, path: &std::path::Path, said: &str) -> bool {
            self.told
                .insert(path.to_owned(), said.to_owned())
                .as_deref()
                != Some(said)
        }
    }
    let state = Arc::new(std::sync::Mutex::new(Watching {
        watch: DiskWatch::new(),
        retry: Vec::new(),
        told: Default::default(),
    }));
    let mut ticker = tokio::time::interval(WATCH_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (dir, store, state) = (dir.clone(), Arc::clone(&store), Arc::clone(&state));
        let step = tokio::task::spawn_blocking(move || {
            let mut state = cairn_host::lock(&state);
            let mounted = match disk_watch::scan(&dir) {
                Ok(mounted) => mounted,
                Err(e) => {
                    let said = format!("cannot look for data disks: {e}");
                    if state.is_news(&dir, &said) {
                        warn!(dir = %dir.display(), "{said}");
                    }
                    return;
                }
            };
            let retry = std::mem::take(&mut state.retry);
            for change in state
                .watch
                .step(&mounted, disk_watch::block_device_present, &retry)
            {
                match change {
                    DiskChange::Attach(path) => {
                        match store.attach(Box::new(RealMount::new(&path))) {
                            Ok(None) => {}
                            Ok(Some(DiskState::Online)) => {
                                state.is_news(&path, "online");
                                info!(path = %path.display(), "data disk taken into service");
                            }
                            Ok(Some(not_serving)) => {
                                let said = not_serving.to_string();
                                if state.is_news(&path, &said) {
                                    warn!(path = %path.display(), "data disk not in service: {said}");
                                }
                                state.retry.push(path);
                            }
                            Err(e) => {
                                warn!(path = %path.display(), "cannot take the data disk into service: {e}");
                                state.retry.push(path);
                            }
                        }
                    }
                    DiskChange::Detach { path, reason } => {
                        state.told.remove(&path);
                        if store.detach(&path, &reason) {
                            warn!(path = %path.display(), "data disk out of service: {reason}");
                        }
                    }
                }
            }
        });
        if step.await.is_err() {
            error!(
                "the data disk watch failed; disks mounted from now on need a restart of cairnd"
            );
            return;
        }
    }
}
