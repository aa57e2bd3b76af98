//! Fetching an update bundle from another member: when the box's owner
//! offers a bundle naming a member that holds it, the box asks that member
//! for it part by part (`UpdateGet`) and puts each part in its inbox as if
//! the owner had sent it, so the same BLAKE3 check decides, and a cut
//! fetch resumes where the box's copy ends. The member is dialled at the
//! address the swarm's verified gossip gives, never one an offer names.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use super::gossip::GossipService;
use crate::updates::{FetchJob, FetchTries, UpdateInbox};
use cairn_net::pool::Pool;

/// Bytes asked for at once: small enough to arrive within a request's
/// time over a slow home uplink.
const FETCH_PART: u64 = 1 << 20;

/// Fetches what offers ask for until `stop`.
pub async fn run(
    inbox: Arc<UpdateInbox>,
    pool: Arc<Pool>,
    gossip: Arc<GossipService>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tries = FetchTries::default();
    loop {
        let job = {
            let inbox = Arc::clone(&inbox);
            tokio::task::spawn_blocking(move || inbox.fetch_job())
                .await
                .ok()
                .flatten()
        };
        let wait = match job {
            None => None,
            Some(job) => {
                let (progressed, fetched) = fetch(&inbox, &pool, &gossip, &job).await;
                if progressed {
                    tries = FetchTries::default();
                }
                let Err(why) = fetched else { continue };
                after_failure(&inbox, &job, &mut tries, why)
            }
        };
        // A new offer wakes the fetcher at once; a failed try waits.
        let woken = inbox.woken().notified();
        tokio::select! {
            _ = stop.changed() => return,
            () = woken => {}
            () = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// Says why a try failed; drops the offer after too many in a row, or
/// says how long to wait before the next.
fn after_failure(
    inbox: &UpdateInbox,
    job: &FetchJob,
    tries: &mut FetchTries,
    why: String,
) -> Option<std::time::Duration> {
    let failed = tries.failed();
    let (version, from) = (&job.bundle.version, job.from.to_human());
    if !failed.give_up {
        warn!(
            "update {version}: fetching it from member {from} failed (try {}, again in {} s): {why}",
            failed.tries,
            failed.wait.as_secs()
        );
        inbox.set_fetch_trouble(Some(why));
        return Some(failed.wait);
    }
    let gave_up = format!(
        "gave up fetching {version} from {from} after {} tries: {why}",
        failed.tries
    );
    warn!("update {version}: {gave_up}");
    inbox.set_fetch_trouble(Some(gave_up));
    if let Err(e) = inbox.give_up(&job.bundle.hash) {
        warn!("update {version}: cannot drop the offer: {e}");
    }
    *tries = FetchTries::default();
    None
}

/// Fetches the rest of `job`'s bundle; says whether any part came, and
/// why it stopped short (`Ok`: whole, or the offer changed).
async fn fetch(
    inbox: &Arc<UpdateInbox>,
    pool: &Pool,
    gossip: &GossipService,
    job: &FetchJob,
) -> (bool, Result<(), String>) {
    let Some(addr) = gossip
        .members()
        .into_iter()
        .find(|m| m.member.node == job.from)
        .map(|m| m.member.addr)
        .filter(|addr| !addr.is_empty())
    else {
        return (
            false,
            Err(format!(
                "member {} is not in this box's swarm (its gossip has not heard of it)",
                job.from.to_human()
            )),
        );
    };
    let peer = match pool.peer(job.from, &addr).await {
        Ok(peer) => peer,
        Err(e) => return (false, Err(format!("cannot reach it: {e}"))),
    };
    let part = FETCH_PART.min(peer.hello.max_shard.max(64 << 10));
    let mut have = job.have;
    let mut progressed = false;
    if have == 0 {
        info!(
            "update {}: fetching {} MiB from member {}",
            job.bundle.version,
            job.bundle.size >> 20,
            job.from.to_human()
        );
    }
    while have < job.bundle.size {
        let len = part.min(job.bundle.size - have);
        let bytes = match peer.update_get(job.bundle.hash, have, len).await {
            Ok(bytes) => bytes,
            Err(e) => return (progressed, Err(format!("it did not send the bundle: {e}"))),
        };
        let hash = job.bundle.hash;
        let taken = {
            let inbox = Arc::clone(inbox);
            tokio::task::spawn_blocking(move || inbox.take_part(&hash, have, &bytes)).await
        };
        match taken {
            Ok(Ok(_)) => {
                have += len;
                progressed = true;
            }
            // Another offer came meanwhile: the next round takes it.
            Ok(Err(crate::updates::UpdateError::NotOffered)) => return (progressed, Ok(())),
            Ok(Err(e)) => return (progressed, Err(e.to_string())),
            Err(e) => return (progressed, Err(e.to_string())),
        }
    }
    info!(
        "update {}: fetched whole from member {} and verified",
        job.bundle.version,
        job.from.to_human()
    );
    (progressed, Ok(()))
}
