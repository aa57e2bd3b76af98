//! Restoring a large file without flooding the page cache.

use std::io::Write;

/// A file writer that starts writing back to disk while the download goes
/// on (a sync on a second thread every few MiB), so the final fsync has
/// little left to do. What a sync made durable leaves the page cache: a
/// restore of many GiB would otherwise push out everything the machine had
/// cached, and the freed pages serve the rest of the download.
pub struct EarlyWriteback {
    file: std::fs::File,
    since_sync: usize,
    syncs: std::sync::mpsc::SyncSender<()>,
    syncer: std::thread::JoinHandle<std::io::Result<()>>,
}

impl EarlyWriteback {
    const EVERY: usize = 16 << 20;

    pub fn new(file: std::fs::File) -> std::io::Result<Self> {
        let clone = file.try_clone()?;
        // One request may wait; more are dropped while a sync runs.
        let (syncs, requests) = std::sync::mpsc::sync_channel::<()>(1);
        let syncer = std::thread::spawn(move || {
            while requests.recv().is_ok() {
                clone.sync_data()?;
                // Only advice: drops the pages that are clean now.
                let _ = rustix::fs::fadvise(&clone, 0, None, rustix::fs::Advice::DontNeed);
            }
            Ok(())
        });
        Ok(Self {
            file,
            since_sync: 0,
            syncs,
            syncer,
        })
    }

    /// Stops the syncer and makes the whole file durable.
    pub fn finish(self) -> std::io::Result<std::fs::File> {
        drop(self.syncs);
        self.syncer
            .join()
            .map_err(|_| std::io::Error::other("the writeback thread failed"))??;
        self.file.sync_all()?;
        Ok(self.file)
    }
}

impl Write for EarlyWriteback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        self.since_sync += written;
        if self.since_sync >= Self::EVERY {
            self.since_sync = 0;
            let _ = self.syncs.try_send(());
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
